"""The analytic model of a cost table's ``analytic`` section (:func:`analytic_latency_ms`), and
a table as an int8 model runs (:func:`int8_view`)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from autocomp.devices.opkeys import op_counts, parse_key
from autocomp.models.ops import Op

if TYPE_CHECKING:
    from autocomp.devices.tables import DeviceProfile


def efficiency_key(op: Op) -> str:
    """Which ``analytic.efficiency`` entry prices ``op`` (``pool`` for the MAC-free ones)."""
    return {"conv": "conv", "expand": "conv", "dense": "dense", "dwconv": "dwconv"}.get(
        op.kind, "pool"
    )


# The finer op kinds of a table fitted per kind (``analytic.fine_kinds``, the Pixel 1 table):
# its per-op profiles separate these, where a block-level fit could not.
FINE_KINDS = ("conv_first", "conv", "dense", "dwconv3", "dwconv5", "dwconv7", "add", "pool",
              "act", "act_map", "mul")  # fmt: skip
MAC_KINDS = FINE_KINDS[:6]


def fine_kind(op: Op, in_shape) -> str:
    """``op``'s kind among :data:`FINE_KINDS`: a conv on at most 4 input channels (an image)
    apart from the others, depthwise convs by their nearest kernel size, every other MAC-free
    op that is no add, multiply or pool an ``act`` on a vector (the Pixel 1 profiles' softmax)
    or an ``act_map`` on a feature map (elementwise: priced like an add where unmeasured)."""
    if op.kind in ("conv", "expand"):
        return "conv_first" if in_shape[-1] <= 4 else "conv"
    if op.kind == "dwconv":
        return f"dwconv{min((3, 5, 7), key=lambda k: abs(k - max(op.kernel_hw)))}"
    if op.kind in ("gap", "avgpool", "maxpool"):
        return "pool"
    if op.kind in ("dense", "add", "mul"):
        return op.kind
    return "act" if len(in_shape) == 1 else "act_map"


def analytic_kind(analytic: dict, op: Op, in_shape) -> str:
    """The ``efficiency``/``kind_bandwidth_gbs`` entry that prices ``op`` in this table."""
    return fine_kind(op, in_shape) if analytic.get("fine_kinds") else efficiency_key(op)


def analytic_latency_ms(analytic: dict, kind: str, macs, moved):
    """The analytic model: per-op overhead + max(MACs / (peak * efficiency), bytes / bandwidth),
    or their sum where ``analytic.combine`` is ``sum`` (the calibrated tables: compute and
    memory traffic of these runtimes overlap little); ``analytic.kind_bandwidth_gbs`` may give
    each kind its own bandwidth, and ``analytic.l2_bytes`` (with ``dram_gbs``) charges the bytes
    beyond that cache size the DRAM bandwidth on top (the Pixel 1 table). Numbers or numpy
    arrays; ``kind`` an ``efficiency`` key."""
    efficiency = analytic["efficiency"].get(kind, analytic["efficiency"].get("pool", 1.0))
    bandwidth = analytic.get("kind_bandwidth_gbs", {}).get(kind, analytic["bandwidth_gbs"])
    compute_s = macs / (analytic["peak_gmacs"] * 1e9 * efficiency)
    memory_s = moved / (bandwidth * 1e9)
    if "l2_bytes" in analytic:  # bytes beyond the L2 cache also pay the DRAM bandwidth
        memory_s = memory_s + np.maximum(moved - analytic["l2_bytes"], 0) / (
            analytic["dram_gbs"] * 1e9
        )
    if analytic.get("combine", "max") == "sum":
        return (analytic["op_overhead_us"] * 1e-6 + compute_s + memory_s) * 1e3
    return (analytic["op_overhead_us"] * 1e-6 + np.maximum(compute_s, memory_s)) * 1e3


def _int8_analytic(profile: DeviceProfile) -> dict:
    """The analytic section at the int8 MAC rate and bytes (the ``int8`` column), or as is."""
    a = profile.analytic
    if profile.int8 is None:
        return a
    speedup, factor = profile.int8["compute_speedup"], profile.int8["bytes_factor"]
    a8 = dict(a, peak_gmacs=a["peak_gmacs"] * speedup, bandwidth_gbs=a["bandwidth_gbs"] / factor)
    if "kind_bandwidth_gbs" in a:
        a8["kind_bandwidth_gbs"] = {k: v / factor for k, v in a["kind_bandwidth_gbs"].items()}
    if "l2_bytes" in a:  # int8 tensors: 1/factor as many bytes fit the same cache
        a8.update(l2_bytes=a["l2_bytes"] / factor, dram_gbs=a["dram_gbs"] / factor)
    return a8


def int8_view(profile: DeviceProfile) -> DeviceProfile | None:
    """The table as ``model_int8.tflite`` runs: each row's measured ``latency_int8_ms``; a row
    without one, its float latency times the median int8/float ratio of the rows of its kind
    that have one, or (a table with an ``int8`` column and no int8 rows) times the ratio of the
    analytic model at the int8 MAC rate and bytes to the float one; the analytic model itself
    at the int8 rates; the int8 call overhead. Every lookup tier then answers for int8 as it
    does for float, and a ``+q8`` layer is priced as its float op of the view (no second int8
    factor, no QUANTIZE/DEQUANTIZE). ``None``: the table has neither int8 rows nor an int8
    column."""
    ratios = profile._int8_ratio
    if not ratios and profile.int8 is None:
        return None
    a, a8 = profile.analytic, _int8_analytic(profile)
    rows = {}
    for key, row in profile.rows.items():
        latency = row.get("latency_int8_ms")
        if latency is None:
            op, shape = parse_key(key)
            if ratios:
                latency = row["latency_ms"] * ratios.get(op.kind, ratios["*"])
            else:
                macs, _, _, weight_read, act_bytes = op_counts(op, shape)
                kind, moved = analytic_kind(a, op, shape), weight_read + act_bytes
                as_float = analytic_latency_ms(a, kind, macs, moved)
                latency = row["latency_ms"] * analytic_latency_ms(a8, kind, macs, moved) / as_float
        rows[key] = {k: v for k, v in row.items() if k != "latency_int8_ms"}
        rows[key]["latency_ms"] = float(latency)
    overhead = profile.invoke_overhead_int8_ms
    # The view has no int8 data of its own: in model_int8.tflite a layer with 8-bit weights
    # runs as every other layer does, so it must not be made int8 (and converted) twice.
    return replace(
        profile,
        name=f"{profile.name} (int8)",
        rows=rows,
        analytic=a8,
        int8=None,
        invoke_overhead_ms=profile.invoke_overhead_ms if overhead is None else overhead,
    )
