"""Phone cost tables from published measurements: the measured Pixel 1 table and the
phone-calibrated Cortex tables (``python -m autocomp.profile device=published``).

- ``pixel1_tflite``: one row per op key profiled on a Google Pixel 1 (median over networks and
  runs), plus the analytic model fitted to those rows, which answers the op kinds the profiles
  do not hold (pools, multiplies, activations of other sizes...).
- ``pixel4_a76``, ``pixel6_tensor``, ``xiaomi11_a78``: the analytic roofline of the phone's
  core with its efficiencies, bandwidth and per-op overhead fitted to nn-Meter's block
  latencies on that phone (a block priced as the sum of its ops); fitted on a training split,
  the held-out split's error is stored in the table and recomputed by ``bench phones``.

The fitted model prices an op as per-op overhead + MACs / (peak * efficiency of its kind) + bytes
moved / bandwidth of its kind (conv, dwconv, dense, and ``pool`` for the MAC-free ops). The fit
minimizes the squared log ratio of predicted to measured latency (relative error is what matters
across three orders of magnitude of sizes), with the core's peak MAC rate fixed (the
efficiencies are relative to it). The sum, not the roofline's max, and one bandwidth per kind:
of the forms tried on these data (max or sum, one or per-kind bandwidth and overhead), this one
had the lowest error on the Pixel 4 blocks' training split and on the leave-one-network-out
Pixel 1 fits (``docs/phones.md`` has the comparison); this choice looked at held-out errors.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from statistics import median

import numpy as np

from autocomp.devices.analytic import analytic_latency_ms, efficiency_key
from autocomp.devices.fine_kinds import MAX_GBS, MIN_OVERHEAD_US, fit_fine_kinds
from autocomp.devices.opkeys import op_counts, op_key
from autocomp.devices.published import (
    AMC_DIR,
    NNMETER_DIR,
    PROXYLESS_DIR,
    UPSTREAM,
    Block,
    OpTiming,
    nnmeter_blocks,
    pixel1_timings,
)
from autocomp.devices.tables import SCHEMA_VERSION, energy_constants
from autocomp.models.ops import Op, Shape

FITTED = ("conv", "dwconv", "dense")  # efficiencies the fit moves (pool stays: no MACs)
HELDOUT_EVERY = 5  # every 5th block (by key) is held out: a 20% test split

# The phone tables: the phone, the core the measurements ran on, and the analytic base.
PHONE_TABLES = {
    "pixel4_a76": {
        "phone": "pixel4",
        "title": "Google Pixel 4 (Snapdragon 855)",
        "core": "Cortex-A76 big cores (2.42 GHz gold; the prime core is also an A76 at 2.84 GHz)",
        "peak_gmacs": 22.7,  # the analytic A76 table's: 8 FP32 MAC/cycle x 2.84 GHz
        "peak_note": "8 FP32 MAC/cycle x 2.84 GHz (the analytic A76 table's peak)",
    },
    "pixel6_tensor": {
        "phone": "pixel6",
        "title": "Google Pixel 6 (Google Tensor)",
        "core": "NOT RECORDED: nn-Meter does not say which cores ran (the Tensor has 2 Cortex-X1 "
        "at 2.80 GHz, 2 Cortex-A76 at 2.25 GHz, 4 Cortex-A55); the fit is of the phone, "
        "whatever core the scheduler chose",
        "peak_gmacs": 44.8,  # X1: four 128-bit FMA pipes = 16 FP32 MAC/cycle x 2.80 GHz
        "peak_note": "16 FP32 MAC/cycle x 2.80 GHz (a Cortex-X1; nominal, core not recorded)",
    },
    "xiaomi11_a78": {
        "phone": "xiaomi11",
        "title": "Xiaomi 11 (Snapdragon 888)",
        "core": "Cortex-A78 at 2.42 GHz (nn-Meter pins `taskset 70`: CPUs 4-6, the A78s)",
        "peak_gmacs": 19.4,  # A78: two 128-bit FMA pipes = 8 FP32 MAC/cycle x 2.42 GHz
        "peak_note": "8 FP32 MAC/cycle x 2.42 GHz (Cortex-A78)",
    },
}
TABLES = ("pixel1_tflite", *PHONE_TABLES)

# No published source here measures int8 on these phones, so the int8 column is an assumption,
# labelled as one in every table: compute from the core's int8 instructions, half of their peak
# achieved (requantization, packing), and a quarter of the bytes (1-byte weights and
# activations instead of 4).
INT8_DOTPROD = {
    "assumption": True,
    "compute_speedup": 2.0,
    "bytes_factor": 0.25,
    "method": "ASSUMPTION, not a measurement: ARMv8.2 cores (A76, A78, X1) have SDOT, 16 int8 "
    "MACs per 128-bit instruction against 4 FP32 MACs per FMLA (4x the peak); half of that is "
    "assumed achieved (2x the float MAC rate), and int8 tensors move a quarter of the bytes",
}
INT8_ARMV8_0 = dict(
    INT8_DOTPROD,
    compute_speedup=1.0,
    method="ASSUMPTION, not a measurement: the Pixel 1's Kryo cores (ARMv8.0) have no SDOT; "
    "int8 MACs go through widening 8x16-bit multiply-accumulates (2x the FP32 lanes), half of "
    "that assumed achieved (the float MAC rate), and int8 tensors move a quarter of the bytes",
)


def _terms(ops: Sequence[tuple[Op, Shape]]) -> list[tuple[str, float, float]]:
    out = []
    for op, shape in ops:
        macs, _, _, weight_read, act_bytes = op_counts(op, shape)
        out.append((efficiency_key(op), float(macs), float(weight_read + act_bytes)))
    return out


def fit_analytic(
    analytic: dict,
    examples: Sequence[Sequence[tuple[Op, Shape]]],
    latency_ms: Sequence[float],
) -> dict:
    """``analytic`` refitted so that each example (a sequence of ops, priced as the sum of
    their analytic latencies) comes out at its measured latency: the ``FITTED`` efficiencies,
    one bandwidth per efficiency kind and the per-op overhead, with compute and memory time
    added (``combine: sum``); the peak stays as given."""
    from scipy.optimize import least_squares

    flat = [(i, *t) for i, ops in enumerate(examples) for t in _terms(ops)]
    index = np.array([f[0] for f in flat])
    kinds = np.array([f[1] for f in flat])
    macs = np.array([f[2] for f in flat])
    moved = np.array([f[3] for f in flat])
    measured = np.asarray(latency_ms, np.float64)
    bw_kinds = (*FITTED, "pool")
    masks = {k: kinds == k for k in bw_kinds}

    def model(p: np.ndarray) -> dict:
        v = np.exp(p).tolist()
        return dict(
            analytic,
            combine="sum",
            efficiency=dict(analytic["efficiency"], **dict(zip(FITTED, v[:3], strict=True))),
            kind_bandwidth_gbs=dict(zip(bw_kinds, v[3:7], strict=True)),
            bandwidth_gbs=v[6],
            op_overhead_us=v[7],
        )

    def residuals(p: np.ndarray) -> np.ndarray:
        a = model(p)
        per_op = np.zeros(len(flat))
        for kind, mask in masks.items():
            per_op[mask] = analytic_latency_ms(a, kind, macs[mask], moved[mask])
        total = np.bincount(index, per_op, minlength=len(measured))
        return np.log(total) - np.log(measured)

    eff = analytic["efficiency"]
    start = [eff.get(k, eff["pool"]) for k in FITTED]
    start += [analytic["bandwidth_gbs"]] * 4 + [analytic["op_overhead_us"]]
    # Physical bounds, so that what the data cannot pin down (the MAC-free ops inside a block
    # are small and move with its convs) stays plausible: efficiency at most 1.5x the nominal
    # peak; bandwidth 0.1 to MAX_GBS; per-op overhead MIN_OVERHEAD_US to 1 ms.
    lower = np.log([1e-3] * 3 + [0.1] * 4 + [MIN_OVERHEAD_US])
    upper = np.log([1.5] * 3 + [MAX_GBS] * 4 + [1e3])
    p0 = np.clip(np.log(start), lower + 1e-6, upper - 1e-6)
    fit = model(least_squares(residuals, p0, bounds=(lower, upper)).x)
    fit["efficiency"] = {k: round(v, 4) for k, v in fit["efficiency"].items()}
    fit["kind_bandwidth_gbs"] = {k: round(v, 3) for k, v in fit["kind_bandwidth_gbs"].items()}
    fit["bandwidth_gbs"] = round(fit["bandwidth_gbs"], 3)
    fit["op_overhead_us"] = round(fit["op_overhead_us"], 3)
    return fit


def errors(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """MAPE (percent), share within 10% (percent), Spearman's rho and n."""
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    rel = np.abs(p - m) / m
    rho = float(spearmanr(p, m)[0]) if len(m) > 1 else float("nan")
    return {
        "mape": round(100 * float(rel.mean()), 2),
        "within10": round(100 * float((rel <= 0.1).mean()), 1),
        "spearman": round(rho, 4),
        "n": len(m),
    }


def split_blocks(blocks: Sequence[Block]) -> tuple[list[Block], list[Block]]:
    """(train, held out): every ``HELDOUT_EVERY``-th block in key order is held out."""
    ordered = sorted(blocks, key=lambda b: b.key)
    held = set(range(0, len(ordered), HELDOUT_EVERY))
    train = [b for i, b in enumerate(ordered) if i not in held]
    return train, [b for i, b in enumerate(ordered) if i in held]


def _today() -> str:
    return datetime.date.today().isoformat()


def pixel1_rows(timings: Sequence[OpTiming]) -> list[dict]:
    """One row per op key: the median of every profiled node with that key (networks and runs),
    its spread (max - min) and how many nodes it stands for."""
    by_key: dict[str, list[OpTiming]] = {}
    for t in timings:
        by_key.setdefault(op_key(t.op, t.shape), []).append(t)
    rows = []
    for key, group in sorted(by_key.items()):
        values = [t.latency_ms for t in group]
        rows.append({
            "key": key,
            "latency_ms": round(median(values), 4),
            "latency_spread_ms": round(max(values) - min(values), 4),
            "energy_mj": None,
            "repeats": len(values),
            "networks": sorted({t.network for t in group}),
        })  # fmt: skip
    return rows


def pixel1_table(root, networks: Sequence[str] | None = None) -> dict:
    """The measured Pixel 1 table from the published profiles (only those of ``networks``:
    the leave-one-network-out tables of ``bench phones``)."""
    timings = [t for t in pixel1_timings(root) if networks is None or t.network in networks]
    if not timings:
        raise ValueError(f"no published Pixel 1 profile of the networks {networks}")
    # no published source measures a phone's energy per op: the A76 table's estimate
    analytic, energy, energy_note = energy_constants()
    fitted = fit_fine_kinds(analytic, [(t.op, t.shape) for t in timings],
                            [t.latency_ms for t in timings])  # fmt: skip
    used = sorted({t.network for t in timings})
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "measured",
        "device": {
            "name": "pixel1-tflite",
            "platform": "android",
            "phone": "Google Pixel 1",
            "soc": "Snapdragon 821 (Kryo, 2.15 GHz big cores)",
            "runtime": "TensorFlow Lite benchmark_model (2018-2019), float32",
            "threads": 1,
            "measured": True,
            "method": "published per-node TFLite profiles (op time, no interpreter call)",
            "date": _today(),
        },
        "energy": energy,
        "analytic": fitted,
        "invoke_overhead_ms": 0.0,
        "int8": INT8_ARMV8_0,
        "provenance": {
            "phone": "Google Pixel 1 (Snapdragon 821)",
            "runtime": "TensorFlow Lite benchmark_model, float32, CPU, no delegate",
            "runtime_version": "TensorFlow Lite of 2018-2019 (before XNNPACK was the default "
            "CPU path): times are slower than today's TFLite on the same phone",
            "threads": 1,
            "method": "per-node averages of the TFLite profiler: AMC's MobileNet-V1s 100 "
            "warm-ups + 200 runs, 3 repeats each; ProxylessNAS-Mobile 100 runs; a row is the "
            "median over every node with its key (latency_spread_ms: max - min)",
            "networks": used,
            "sources": [UPSTREAM[AMC_DIR], UPSTREAM[PROXYLESS_DIR]],
        },
        "calibration": {
            "data": "the rows of this table, one op each",
            "fitted": "per fine op kind (analytic.fine_kinds: first conv, conv, dense, "
            "depthwise 3/5/7, add, pool, vector and map activations, mul) an efficiency and a "
            "bandwidth, except add, pool, map activations and mul, which share one rate per "
            "element; one DRAM bandwidth for bytes beyond the 1 MB L2 (analytic.l2_bytes); one "
            "per-op overhead; a weak ridge towards the start values on the MAC kinds' "
            "parameters (autocomp/devices/fine_kinds.py); kinds without rows borrow a "
            "neighbour's (analytic.borrowed); they price the ops no row answers",
            "train_n": len(timings),
            "heldout": "leave one network out: python -m autocomp.bench phones",
        },
        "sources": [
            "Rows: published Pixel 1 TFLite profiles (provenance.sources), rebuilt by "
            "python -m autocomp.profile device=published source=<phones folder>",
            energy_note,
        ],
        "rows": pixel1_rows(timings),
    }


def phone_table(root, name: str) -> dict:
    """A phone-calibrated Cortex table (``PHONE_TABLES[name]``) fitted on the training split
    of nn-Meter's blocks, with the held-out error stored."""
    spec = PHONE_TABLES[name]
    phone = spec["phone"]
    train, held = split_blocks(nnmeter_blocks(root))
    # no published source measures a phone's energy per op: the A76 table's estimate
    analytic, energy, energy_note = energy_constants()
    analytic = dict(analytic, peak_gmacs=spec["peak_gmacs"])
    fitted = fit_analytic(analytic, [b.ops for b in train], [b.latency_ms[phone] for b in train])
    table = {
        "schema_version": SCHEMA_VERSION,
        "kind": "calibrated",
        "device": {
            "name": name.replace("_", "-"),
            "platform": "android",
            "phone": spec["title"],
            "soc": spec["core"],
            "runtime": "TensorFlow Lite (nn-Meter's profiler), float32",
            "threads": 1,
            "measured": False,
            "method": "analytic roofline fitted to published block latencies of this phone",
            "date": _today(),
        },
        "energy": energy,
        "analytic": fitted,
        "int8": INT8_DOTPROD,
        "provenance": {
            "phone": spec["title"],
            "runtime": "TensorFlow Lite benchmark_model through nn-Meter's profiler, float32",
            "runtime_version": "not recorded upstream (nn-Meter dev/hybrid-transformer, 2022)",
            "threads": 1,
            "method": "nn-Meter's defaults: 10 warm-ups, 50 runs per block (the exact flags per "
            "device are not recorded upstream); a block = 1x1 expand, depthwise, optional "
            "squeeze-excite, 1x1 project, hard-swish, shortcut",
            "sources": [UPSTREAM[NNMETER_DIR]],
        },
        "calibration": {
            "data": f"nn-Meter CNN blocks on the {spec['title']}, each priced as the sum of "
            "its ops (autocomp.devices.published.block_ops)",
            "fitted": "efficiencies (conv, dwconv, dense), bandwidth, per-op overhead; peak "
            f"fixed at {spec['peak_note']}",
            "split": f"every {HELDOUT_EVERY}th block in key order held out",
            "train_n": len(train),
            "heldout": None,  # below: the error of this very table on the held-out blocks
        },
        "sources": [f"Peak: {spec['peak_note']}", energy_note],
        "rows": [],
    }
    table["calibration"]["heldout"] = block_errors(table, held, phone)
    return table


def block_predictions(profile, blocks: Sequence[Block]) -> list[float]:
    """Each block's latency through ``profile``: the sum of its ops."""
    from autocomp.devices.costs import price_op

    return [sum(price_op(profile, op, s).latency_ms for op, s in b.ops) for b in blocks]


def block_errors(table: dict, blocks: Sequence[Block], phone: str) -> dict:
    """Error of a table (its parsed JSON) on blocks measured on ``phone``."""
    from autocomp.devices.tables import profile_from_data

    profile = profile_from_data(table, f"<{table['device']['name']}>")
    return errors(block_predictions(profile, blocks), [b.latency_ms[phone] for b in blocks])


def build_tables(root, names: Sequence[str] = TABLES) -> dict[str, dict]:
    """The named phone tables, built from the published files under ``root``."""
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise ValueError(f"unknown phone table(s) {unknown}; choose from {list(TABLES)}")
    return {n: pixel1_table(root) if n == "pixel1_tflite" else phone_table(root, n) for n in names}
