"""Pricing deployed ops from a device cost table (:mod:`autocomp.devices.tables`).

Each op of a deployed model is priced by, in this order: an exact row of the table (``table``);
linear interpolation in MACs (or bytes moved, for ops without MACs) between the two nearest
measured rows of the same op family, i.e. same kind, spatial input size, kernel, stride,
grouping and dtype (``interpolated``); a roofline ``a + b * MACs + c * bytes`` fitted by
non-negative least squares to the table's measured rows of that op kind (``roofline``); and
otherwise the table's analytic model (:mod:`autocomp.devices.analytic`): hand-set
(``analytic``), or fitted to published phone measurements (``calibrated``: a table with a
``calibration`` section, which also answers the op kinds its rows hold too few of). Every answer
says which (:class:`OpCost.source`); ops that TFLite fuses away are ``free``. Op keys and exact
counts are :mod:`autocomp.devices.opkeys`.

A conv or dense layer with 8-bit weights (``<technique>+q8``) is deployed as the
mixed-precision export runs it (``model_mixed.tflite``,
:func:`autocomp.export.tflite.mixed_tflite`): its op with int8 kernels (the table's int8 view,
:func:`int8_latency_ms`), a QUANTIZE of its input and a DEQUANTIZE of its output
(:func:`conversion_ms`). Between two such layers with nothing in between the export keeps int8
and has neither, so the price is an upper bound there. A table with no int8 data prices it as
the float export runs it (its quantized values as float).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from autocomp.devices.analytic import analytic_kind, analytic_latency_ms
from autocomp.devices.opkeys import FREE_OPS, op_counts, op_family, op_key, op_size
from autocomp.devices.tables import DeviceProfile
from autocomp.models.ops import WEIGHTED, Op, Shape, out_shape, walk_shapes

SOURCES = (
    "table",
    "interpolated",
    "roofline",
    "calibrated",
    "analytic",
)  # best first; "free": fused ops


@dataclass(frozen=True)
class OpCost:
    """Cost of one deployed op; ``source`` says how its latency was found (see the module)."""

    latency_ms: float
    energy_mj: float
    macs: int
    params: int
    bytes: int
    source: str


def _interpolate(profile: DeviceProfile, op: Op, in_shape: Shape) -> float | None:
    points = profile._families.get(op_family(op, in_shape))
    if not points:
        return None
    x = op_size(op, in_shape)
    below = [p for p in points if p[0] <= x]
    above = [p for p in points if p[0] >= x]
    if not below or not above:
        return None  # no extrapolation: the roofline answers outside the measured range
    (x0, y0), (x1, y1) = below[-1], above[0]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def price_op(profile: DeviceProfile, op: Op, in_shape: Shape) -> OpCost:
    """Latency and energy of one op, from the best source the table has (see the module).

    Latency is looked up under the op's float32 key; a conv or dense op with 8-bit weights is
    priced with int8 kernels and its two conversions where the table has int8 data (see the
    module), else (and at other bit widths) as the float op its quantized values run as. Its
    storage and its weights' DRAM traffic (energy) count ``bits`` per weight.
    """
    macs, params, storage, weight_read, act_bytes = op_counts(op, in_shape)
    if op.kind in FREE_OPS:
        # Fused or free in TFLite (RESHAPE is a no-op view; ReLU fuses into CONV/FC/ADD; a
        # saved tensor is only kept alive).
        return OpCost(0.0, 0.0, 0, 0, 0, "free")
    a = profile.analytic
    energy_pj = macs * a["pj_per_mac"] + weight_read * a["pj_per_dram_byte"]
    energy_mj = (energy_pj + act_bytes * a["pj_per_sram_byte"]) * 1e-9
    float_op = replace(op, bits=32)
    row = profile.rows.get(op_key(float_op, in_shape))
    if op.bits == 8 and op.kind in WEIGHTED and profile.int8_table is not None:
        int8 = price_op(profile.int8_table, float_op, in_shape)
        convert = conversion_ms(profile, in_shape) + conversion_ms(profile, out_shape(op, in_shape))
        if row is not None and row.get("energy_mj") is not None:
            energy_mj = float(row["energy_mj"])
        return OpCost(int8.latency_ms + convert, energy_mj, macs, params, storage, int8.source)
    correction = profile.per_op_correction_ms  # see autocomp.devices.plan_timing
    if row is not None:
        energy = row.get("energy_mj")
        energy_mj = float(energy) if energy is not None else energy_mj
        latency = max(0.0, float(row["latency_ms"]) - correction)
        return OpCost(latency, energy_mj, macs, params, storage, "table")
    # Bytes the float op moves: only the weights' share depends on ``bits``.
    moved = act_bytes + (weight_read if op.bits >= 32 else op_counts(float_op, in_shape)[3])
    latency = _interpolate(profile, float_op, in_shape)
    source = "interpolated"
    if latency is None and profile.rows and profile.calibration is None:
        fit = profile._roofline.get(op.kind, profile._roofline.get("*"))
        if fit is not None:
            latency, source = float(fit @ np.array([1.0, macs, moved])), "roofline"
    if latency is not None:  # from the rows: the same correction as an exact row
        latency = max(0.0, latency - correction)
    if latency is None:
        latency = analytic_latency_ms(a, analytic_kind(a, op, in_shape), macs, moved)
        source = "calibrated" if profile.calibration is not None else "analytic"
    return OpCost(latency, energy_mj, macs, params, storage, source)


def conversion_ms(profile: DeviceProfile, shape: Shape) -> float:
    """A QUANTIZE or DEQUANTIZE op on a tensor of ``shape`` (float32 to int8 or back: 5 bytes
    moved per element, no MACs), without a per-op overhead (XNNPACK, TFLite's default CPU
    delegate, runs it as a node of its delegated graph): at the table's measured
    ``conversion_gbs`` (tables the profiler made with int8 rows,
    :func:`autocomp.devices.mixed.conversion_gbs`), else at its bandwidth for elementwise ops
    (an assumption: the published phone sources measure no conversion)."""
    a = profile.analytic
    bandwidth = profile.conversion_gbs
    if bandwidth is None:
        kind = analytic_kind(a, Op("quantize"), shape)
        bandwidth = a.get("kind_bandwidth_gbs", {}).get(kind, a["bandwidth_gbs"])
    return 5 * math.prod(shape) / (bandwidth * 1e9) * 1e3


def int8_latency_ms(profile: DeviceProfile, op: Op, in_shape: Shape) -> float | None:
    """Latency of ``op`` run with int8 kernels (:func:`int8_view`); ``None`` without int8 data."""
    view = profile.int8_table
    return None if view is None else price_op(view, replace(op, bits=32), in_shape).latency_ms


def price_ops_int8(
    profile: DeviceProfile, ops: Sequence[Op], input_shape: Sequence[int]
) -> float | None:
    """Latency of a whole sequential model run as ``model_int8.tflite`` (``None``: the table
    has no int8 data)."""
    view = profile.int8_table
    if view is None:
        return None
    return price_ops(view, [replace(op, bits=32) for op in ops], input_shape).latency_ms


@dataclass(frozen=True)
class ModelCost:
    """Totals of a deployed model and how many ops each lookup source priced."""

    latency_ms: float
    energy_mj: float
    macs: int
    params: int
    bytes: int
    sources: dict[str, int]


def sum_costs(costs: Sequence[OpCost], overhead_ms: float = 0.0) -> ModelCost:
    return ModelCost(
        latency_ms=overhead_ms + sum(c.latency_ms for c in costs),
        energy_mj=sum(c.energy_mj for c in costs),
        macs=sum(c.macs for c in costs),
        params=sum(c.params for c in costs),
        bytes=sum(c.bytes for c in costs),
        sources=dict(Counter(c.source for c in costs)),
    )


def price_ops(
    profile: DeviceProfile, ops: Sequence[Op], input_shape: Sequence[int], strict: bool = True
) -> ModelCost:
    """Cost of a whole sequential model, with the table's per-call overhead (or, with
    ``strict=False``, of a run of its ops, without it)."""
    shapes = walk_shapes(ops, input_shape, strict)
    costs = [price_op(profile, op, shape) for op, shape in zip(ops, shapes, strict=False)]
    return sum_costs(costs, profile.invoke_overhead_ms if strict else 0.0)


def source_shares(sources: dict[str, int]) -> dict[str, float]:
    """Share of priced ops (fused ones left out) answered by each lookup source."""
    total = sum(n for k, n in sources.items() if k != "free")
    return {k: sources.get(k, 0) / total for k in SOURCES} if total else {}


def format_shares(sources: dict[str, int]) -> str:
    """``table 97.0%, interpolated 2.0%, roofline 1.0%, analytic 0.0%``."""
    shares = source_shares(sources)
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items()) or "nothing priced"
