"""How well each shipped phone table predicts published phone measurements it was not fitted on
(``python -m autocomp.bench phones``).

- ``pixel1_tflite``: leave one network out. The table is rebuilt from the MobileNet-V1 profiles
  alone and predicts every ProxylessNAS-Mobile node and the whole network (80.6 ms), then from
  ProxylessNAS alone and predicts the four MobileNet-V1s; the errors of both directions pooled.
- the phone-calibrated tables: the shipped table on nn-Meter's held-out blocks of its phone
  (:func:`~autocomp.devices.calibrate.split_blocks`), next to the uncalibrated analytic table of
  the same core on the same blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autocomp.devices.analytic import fine_kind
from autocomp.devices.calibrate import (
    PHONE_TABLES,
    block_predictions,
    errors,
    pixel1_table,
    split_blocks,
)
from autocomp.devices.costs import price_op
from autocomp.devices.published import Block, network_totals, nnmeter_blocks, pixel1_timings
from autocomp.devices.tables import load_profile, profile_from_data

PROXYLESS = "proxylessnas_mobile"
ANALYTIC_BASE = {"pixel4_a76": "analytic_cortex_a76", "pixel6_tensor": "analytic_cortex_x1"}


def pixel1_leave_one_out(root) -> dict:
    """Per-node predictions of each held-out network by the table built from the others, and
    whole-network totals (one run's nodes summed, averaged over runs)."""
    timings = pixel1_timings(root)
    totals = network_totals(root)
    mobilenets = sorted(n for n in totals if n != PROXYLESS)
    measured, predicted, kinds, networks = [], [], [], []
    for train, test in ((mobilenets, [PROXYLESS]), ([PROXYLESS], mobilenets)):
        profile = profile_from_data(pixel1_table(root, train), "<leave-one-out>")
        for t in timings:
            if t.network in test:
                measured.append(t.latency_ms)
                predicted.append(price_op(profile, t.op, t.shape).latency_ms)
                kinds.append((t.op.kind, fine_kind(t.op, t.shape)))
                networks.append((t.network, t.run))
    whole = []
    for name in (PROXYLESS, *mobilenets):
        runs = {run for net, run in networks if net == name}
        pred = sum(p for p, (n, _) in zip(predicted, networks, strict=True) if n == name)
        whole.append({"network": name, "measured_ms": round(totals[name], 2),
                      "predicted_ms": round(pred / len(runs), 2)})  # fmt: skip
    m, p = np.array(measured), np.array(predicted)
    macs_ops = np.array([k in ("conv", "dwconv", "dense") for k, _ in kinds])
    return {
        "table": "pixel1_tflite",
        "heldout": "leave one network out (MobileNet-V1s <-> ProxylessNAS-Mobile), per node",
        **errors(p, m),
        "mac_ops": errors(p[macs_ops], m[macs_ops]),
        "time_weighted_ape": round(100 * float(np.abs(p - m).sum() / m.sum()), 2),
        "whole": whole,
        "by_kind": _by_kind(p, m, [f for _, f in kinds]),
        "points": (m.tolist(), p.tolist()),
    }


def _by_kind(predicted: np.ndarray, measured: np.ndarray, kinds: Sequence[str]) -> dict:
    """Per fine op kind: its nodes, their MAPE, and its share of the pooled MAPE (points of it)."""
    ape = 100 * np.abs(predicted - measured) / measured
    out = {}
    for kind in dict.fromkeys(kinds):
        mask = np.array([k == kind for k in kinds])
        out[kind] = {"n": int(mask.sum()), "mape": round(float(ape[mask].mean()), 1),
                     "points": round(float(ape[mask].sum() / len(ape)), 2)}  # fmt: skip
    return out


def calibrated_heldout(blocks: Sequence[Block], name: str) -> dict:
    """The shipped calibrated table ``name`` (and its analytic base) on the held-out share of
    nn-Meter's ``blocks``."""
    spec = PHONE_TABLES[name]
    train, held = split_blocks(blocks)
    profile = load_profile(name)
    measured = [b.latency_ms[spec["phone"]] for b in held]
    predicted = block_predictions(profile, held)
    out = {
        "table": name,
        "heldout": f"nn-Meter blocks of the {spec['title']}, every 5th held out",
        **errors(predicted, measured),
        "points": (measured, predicted),
    }
    base = ANALYTIC_BASE.get(name)
    if base:
        uncalibrated = block_predictions(load_profile(base), held)
        out["uncalibrated"] = {"table": base, **errors(uncalibrated, measured)}
    if (profile.calibration or {}).get("train_n") != len(train):
        out["note"] = f"{name} was not fitted on this split (train_n): rebuild it"
    return out


def pixel1_on_blocks(blocks: Sequence[Block]) -> dict:
    """The shipped Pixel 1 table on nn-Meter's Pixel 1 blocks: the same phone, another
    runtime version and profiler (information, not a target)."""
    measured = [b.latency_ms["pixel1"] for b in blocks]
    predicted = block_predictions(load_profile("pixel1_tflite"), blocks)
    return {"table": "pixel1_tflite", "heldout": "nn-Meter's Pixel 1 blocks (all)",
            **errors(predicted, measured)}  # fmt: skip


def bench_phones(root) -> list[dict]:
    """Held-out fidelity of every shipped phone table (the Pixel 1 one with, as ``blocks``,
    its error on nn-Meter's Pixel 1 blocks)."""
    root = Path(root)
    blocks = nnmeter_blocks(root)  # read once for every table
    pixel1 = dict(pixel1_leave_one_out(root), blocks=pixel1_on_blocks(blocks))
    return [pixel1, *(calibrated_heldout(blocks, n) for n in PHONE_TABLES)]


def plot_phones(results: Sequence[dict], path: Path) -> Path:
    """Predicted against measured latency, log-log, one panel per table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 4))
    for ax, r in zip(np.atleast_1d(axes), results, strict=True):
        m, p = (np.asarray(v) for v in r["points"])
        ax.loglog(m, p, ".", alpha=0.5, ms=4)
        lo, hi = min(m.min(), p.min()), max(m.max(), p.max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.plot([lo, hi], [1.1 * lo, 1.1 * hi], "k:", lw=0.6)
        ax.plot([lo, hi], [lo / 1.1, hi / 1.1], "k:", lw=0.6)
        ax.set_title(f"{r['table']}\nMAPE {r['mape']:.1f}%, rho {r['spearman']:.3f}, n={r['n']}",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("measured ms (held out)")
        ax.set_ylabel("predicted ms")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
