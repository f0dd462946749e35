"""The Pixel 1 table's fit: one efficiency and bandwidth per fine op kind
(:data:`autocomp.devices.analytic.FINE_KINDS`), from single measured ops.

Three parts of the form are about what one training network can and cannot say about another:

- MAC-free elementwise and pooling ops (add, pool, mul, map activations) share one rate in
  *elements*: ``ELEMENT_BYTES[kind]`` bytes of ``op_counts`` per element operation (an add reads
  two operands and writes one: 12 bytes; a pool reads each input once: about 4). Tensors this
  small are cache-resident and these kernels spend a few cycles per element, so an add costs what
  a pool costs per element handled, not per byte; a network without adds (MobileNet-V1) prices
  them from its pools. The vector activation (the softmax: an exp per element) keeps its own.
- Bytes beyond the L2 cache (``L2_BYTES``, the Snapdragon 821's 1 MB per big-core cluster) pay
  a DRAM bandwidth shared by every kind, on top of the kind's own bandwidth.
- A weak ridge (``RIDGE``) pulls each MAC kind's log efficiency and log bandwidth towards the
  fit's start (0.2 of peak, 5 GB/s): where a kind's rows cannot tell compute from traffic (3x3
  depthwise convs all at stride 1 have one bytes-per-MAC ratio) the fit lands between the two
  readings instead of at a bound, and a parameter the rows do determine hardly moves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autocomp.devices.analytic import FINE_KINDS, MAC_KINDS, analytic_latency_ms, fine_kind
from autocomp.devices.opkeys import op_counts
from autocomp.models.ops import Op, Shape

MAX_GBS = 64.0  # about twice these SoCs' DRAM peak (34 GB/s, Snapdragon 855): cache-resident
MIN_OVERHEAD_US = 0.5  # an interpreter's dispatch of one op takes at least this
L2_BYTES = 1 << 20  # Snapdragon 821: 1 MB L2 shared by the two big Kryo cores (spec sheet)
RIDGE = 1e-2  # weight of the pull of a MAC kind's log parameters towards the start values
START_EFFICIENCY, START_GBS, START_OVERHEAD_US = 0.2, 5.0, 5.0
# Bytes that op_counts counts per element operation of a MAC-free kind (add: 2 reads + 1 write;
# pool: each input read once, plus the small output; mul and map activations: 1 read + 1 write).
ELEMENT_BYTES = {"add": 12.0, "pool": 4.0, "act_map": 8.0, "mul": 8.0}
ELEMENT_KINDS = tuple(ELEMENT_BYTES)

# Where a fit per fine kind has no example of a kind, it takes the first of these that it has
# (else the first kind it has at all); element kinds take the shared element rate where any of
# them has rows.
BORROW = {
    "conv_first": ("conv",), "conv": ("conv_first",), "dense": ("conv", "conv_first"),
    "dwconv3": ("dwconv5", "dwconv7"), "dwconv5": ("dwconv3", "dwconv7"),
    "dwconv7": ("dwconv5", "dwconv3"), "add": ("act",), "pool": ("act",), "act": ("add", "pool"),
    "act_map": ("act",), "mul": ("act",),
}  # fmt: skip


def _params(have: list[str]) -> tuple[list[str], list[str], bool]:
    """The fitted parameters: an efficiency per MAC kind present, a bandwidth per non-element
    kind present, and whether one element rate is fitted for the element kinds present."""
    eff_kinds = [k for k in have if k in MAC_KINDS]
    bw_kinds = [k for k in have if k not in ELEMENT_KINDS]
    return eff_kinds, bw_kinds, any(k in ELEMENT_KINDS for k in have)


def _model(analytic: dict, eff_kinds, bw_kinds, element: bool, p: np.ndarray) -> dict:
    v = np.exp(p).tolist()
    n_e, n_b = len(eff_kinds), len(bw_kinds)
    bandwidth = dict(zip(bw_kinds, v[n_e : n_e + n_b], strict=True))
    if element:  # v[n_e + n_b]: giga element operations per second
        bandwidth.update({k: b * v[n_e + n_b] for k, b in ELEMENT_BYTES.items()})
    return dict(
        analytic, combine="sum", fine_kinds=True,
        efficiency=dict(analytic["efficiency"], **dict(zip(eff_kinds, v[:n_e], strict=True))),
        kind_bandwidth_gbs=bandwidth, op_overhead_us=v[-1], l2_bytes=L2_BYTES, dram_gbs=v[-2],
    )  # fmt: skip


def fit_fine_kinds(
    analytic: dict, ops: Sequence[tuple[Op, Shape]], latency_ms, ridge: float = RIDGE
) -> dict:
    """``analytic`` refitted on single measured ops per :data:`FINE_KINDS` kind: an
    efficiency per MAC kind and a bandwidth per other kind present, one element rate for the
    element kinds, one DRAM bandwidth for bytes beyond L2, one per-op overhead; compute and
    memory time added, by least squares on log latency (plus ``ridge``) within bounds; a
    kind without examples takes the numbers of the first kind of ``BORROW`` that has them
    (recorded in ``borrowed``). Chosen on the Pixel 1 profiles (docs/phones.md)."""
    from scipy.optimize import least_squares

    kinds = np.array([fine_kind(op, shape) for op, shape in ops])
    counts = [op_counts(op, shape) for op, shape in ops]
    macs = np.array([c[0] for c in counts], float)
    moved = np.array([c[3] + c[4] for c in counts], float)
    log_measured = np.log(np.asarray(latency_ms, np.float64))
    have = [k for k in FINE_KINDS if (kinds == k).any()]
    eff_kinds, bw_kinds, element = _params(have)
    n_e, n_b = len(eff_kinds), len(bw_kinds)
    lower = np.log([1e-3] * n_e + [0.1] * n_b + [1e-3] * element + [0.1, MIN_OVERHEAD_US])
    upper = np.log([1.5] * n_e + [MAX_GBS] * n_b + [MAX_GBS] * element + [1e3, 1e3])
    start = [START_EFFICIENCY] * n_e + [START_GBS] * n_b + [1.0] * element + [MAX_GBS]
    p0 = np.clip(np.log([*start, START_OVERHEAD_US]), lower + 1e-6, upper - 1e-6)
    ridge_idx = np.flatnonzero([k in MAC_KINDS for k in eff_kinds + bw_kinds])

    def residuals(p: np.ndarray) -> np.ndarray:
        a = _model(analytic, eff_kinds, bw_kinds, element, p)
        per_op = np.zeros(len(ops))
        for kind in have:
            mask = kinds == kind
            per_op[mask] = analytic_latency_ms(a, kind, macs[mask], moved[mask])
        pull = np.sqrt(ridge) * (p[ridge_idx] - p0[ridge_idx])
        return np.concatenate([np.log(per_op) - log_measured, pull])

    fit = _model(analytic, eff_kinds, bw_kinds, element, least_squares(residuals, p0,
                 bounds=(lower, upper)).x)  # fmt: skip
    return _borrow_and_round(fit, have, element)


def _borrow_and_round(fit: dict, have: list[str], element: bool) -> dict:
    """Fill the kinds without rows (``borrowed``: from which kind, or ``element rate``) and round
    the fitted numbers as the table stores them."""
    fit["borrowed"] = {}
    for kind in FINE_KINDS:
        if kind in have:
            continue
        if element and kind in ELEMENT_KINDS:
            fit["borrowed"][kind] = "element rate"
            continue
        source = next(k for k in (*BORROW[kind], *have) if k in have)  # else any it has
        scale = 1.0  # between MAC-free kinds: the same rate per element
        if kind in (*ELEMENT_KINDS, "act") and source in (*ELEMENT_KINDS, "act"):
            scale = ELEMENT_BYTES.get(kind, 8.0) / ELEMENT_BYTES.get(source, 8.0)
        fit["kind_bandwidth_gbs"][kind] = fit["kind_bandwidth_gbs"][source] * scale
        if kind in MAC_KINDS:
            fit["efficiency"][kind] = fit["efficiency"][source]
        fit["borrowed"][kind] = source
    fit["efficiency"] = {k: round(v, 4) for k, v in fit["efficiency"].items()}
    fit["kind_bandwidth_gbs"] = {k: round(v, 3) for k, v in fit["kind_bandwidth_gbs"].items()}
    fit["bandwidth_gbs"] = fit["kind_bandwidth_gbs"]["conv"]
    fit["op_overhead_us"] = round(fit["op_overhead_us"], 3)
    fit["dram_gbs"] = round(fit["dram_gbs"], 3)
    return fit
