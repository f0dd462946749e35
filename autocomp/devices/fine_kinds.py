"""The Pixel 1 table's fit: one efficiency and bandwidth per fine op kind
(:data:`autocomp.devices.analytic.FINE_KINDS`), from single measured ops."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autocomp.devices.analytic import FINE_KINDS, MAC_KINDS, analytic_latency_ms, fine_kind
from autocomp.devices.opkeys import op_counts
from autocomp.models.ops import Op, Shape

MAX_GBS = 64.0  # about twice these SoCs' DRAM peak (34 GB/s, Snapdragon 855): cache-resident
MIN_OVERHEAD_US = 0.5  # an interpreter's dispatch of one op takes at least this

# Where a fit per fine kind has no example of a kind, it takes the first of these that it has
# (else the first kind it has at all).
BORROW = {
    "conv_first": ("conv",), "conv": ("conv_first",), "dense": ("conv", "conv_first"),
    "dwconv3": ("dwconv5", "dwconv7"), "dwconv5": ("dwconv3", "dwconv7"),
    "dwconv7": ("dwconv5", "dwconv3"), "add": ("pool", "act", "mul"),
    "pool": ("add", "act_map", "mul"), "act": ("act_map", "add", "pool"),
    "act_map": ("add", "mul", "pool"), "mul": ("add", "act_map", "pool"),
}  # fmt: skip


def fit_fine_kinds(analytic: dict, ops: Sequence[tuple[Op, Shape]], latency_ms) -> dict:
    """``analytic`` refitted on single measured ops per :data:`FINE_KINDS` kind: an
    efficiency per MAC kind and a bandwidth per kind present, one per-op overhead, compute and
    memory time added, by least squares on log latency within :func:`fit_analytic`'s bounds; a
    kind without examples takes the numbers of the first kind of ``BORROW`` that has them
    (recorded in ``borrowed``). Chosen over :func:`fit_analytic`'s four kinds on the Pixel 1
    profiles (docs/phones.md)."""
    from scipy.optimize import least_squares

    kinds = np.array([fine_kind(op, shape) for op, shape in ops])
    counts = [op_counts(op, shape) for op, shape in ops]
    macs = np.array([c[0] for c in counts], float)
    moved = np.array([c[3] + c[4] for c in counts], float)
    have = [k for k in FINE_KINDS if (kinds == k).any()]
    eff_kinds = [k for k in have if k in MAC_KINDS]
    n_e, n_b = len(eff_kinds), len(have)

    def model(p: np.ndarray) -> dict:
        v = np.exp(p).tolist()
        return dict(
            analytic, combine="sum", fine_kinds=True,
            efficiency=dict(analytic["efficiency"], **dict(zip(eff_kinds, v[:n_e], strict=True))),
            kind_bandwidth_gbs=dict(zip(have, v[n_e:n_e + n_b], strict=True)),
            op_overhead_us=v[-1],
        )  # fmt: skip

    def residuals(p: np.ndarray) -> np.ndarray:
        a = model(p)
        per_op = np.zeros(len(ops))
        for kind in have:
            mask = kinds == kind
            per_op[mask] = analytic_latency_ms(a, kind, macs[mask], moved[mask])
        return np.log(per_op) - np.log(np.asarray(latency_ms, np.float64))

    lower = np.log([1e-3] * n_e + [0.1] * n_b + [MIN_OVERHEAD_US])
    upper = np.log([1.5] * n_e + [MAX_GBS] * n_b + [1e3])
    p0 = np.clip(np.log([0.2] * n_e + [5.0] * n_b + [5.0]), lower + 1e-6, upper - 1e-6)
    fit = model(least_squares(residuals, p0, bounds=(lower, upper)).x)
    fit["borrowed"] = {}
    for kind in FINE_KINDS:
        if kind not in fit["kind_bandwidth_gbs"]:
            source = next(k for k in (*BORROW[kind], *have) if k in have)  # else any it has
            fit["kind_bandwidth_gbs"][kind] = fit["kind_bandwidth_gbs"][source]
            if kind in MAC_KINDS:
                fit["efficiency"][kind] = fit["efficiency"][source]
            fit["borrowed"][kind] = source
    fit["efficiency"] = {k: round(v, 4) for k, v in fit["efficiency"].items()}
    fit["kind_bandwidth_gbs"] = {k: round(v, 3) for k, v in fit["kind_bandwidth_gbs"].items()}
    fit["bandwidth_gbs"] = fit["kind_bandwidth_gbs"]["conv"]
    fit["op_overhead_us"] = round(fit["op_overhead_us"], 3)
    return fit
