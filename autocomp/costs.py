"""Device cost tables: latency and energy of deployed ops, and exact size and MAC counts.

A device profile is one JSON file (schema below). Each op of a deployed model is priced by an
exact row of the table when one matches its key, else by the profile's analytic roofline model;
every answer says where it came from (:class:`OpCost.source`).

Schema (``schema_version`` 1)::

    {"schema_version": 1,
     "kind": "analytic" | "measured",
     "device": {"name", "soc", "runtime", "threads", "measured": bool, "method", "date"},
     "energy": {"measured": bool, "method"},
     "analytic": {"peak_gmacs", "efficiency": {"conv", "dense", "pool"}, "bandwidth_gbs",
                  "op_overhead_us", "pj_per_mac", "pj_per_dram_byte", "pj_per_sram_byte"},
     "sources": [str, ...],
     "rows": [{"key": str, "latency_ms": float, "latency_spread_ms": float,
               "energy_mj": float | null}, ...]}
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from autocomp.models import PARAMETRIC, Op, Shape, out_shape, walk_shapes

SCHEMA_VERSION = 1
BYTES_PER_FLOAT = 4
_ANALYTIC_KEYS = (
    "peak_gmacs",
    "efficiency",
    "bandwidth_gbs",
    "op_overhead_us",
    "pj_per_mac",
    "pj_per_dram_byte",
    "pj_per_sram_byte",
)


class CostTableError(ValueError):
    """A missing, corrupt or mismatched device cost table; the message says how to fix it."""


@dataclass(frozen=True)
class DeviceProfile:
    """A loaded, validated cost table."""

    name: str
    path: str
    kind: str
    device: dict
    energy: dict
    analytic: dict
    rows: dict[str, dict]


@dataclass(frozen=True)
class OpCost:
    """Cost of one deployed op. ``source`` is ``table`` (exact row) or ``analytic``."""

    latency_ms: float
    energy_mj: float
    macs: int
    params: int
    bytes: int
    source: str


def resolve_profile_path(profile: str) -> Path:
    """A path as given, or the name of a profile shipped in ``autocomp/devices``."""
    path = Path(profile).expanduser()
    if path.suffix != ".json":
        path = Path(str(resources.files("autocomp.devices").joinpath(f"{profile}.json")))
    return path


def load_profile(profile: str) -> DeviceProfile:
    """Load and validate a device profile.

    Raises:
        CostTableError: if the file is missing, not JSON, or does not follow the schema.
    """
    path = resolve_profile_path(profile)
    shipped = sorted(
        p.stem for p in resources.files("autocomp.devices").iterdir() if p.name.endswith(".json")
    )
    if not path.is_file():
        raise CostTableError(
            f"device cost table {str(path)!r} not found. Use device.profile=<path.json> or one "
            f"of the shipped profiles: {shipped}"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CostTableError(
            f"device cost table {str(path)!r} is not valid JSON ({err}); point "
            "device.profile at a valid file or one of the shipped profiles"
        ) from err
    _validate(data, path)
    rows = {row["key"]: row for row in data.get("rows", [])}
    return DeviceProfile(
        name=data["device"]["name"],
        path=str(path),
        kind=data["kind"],
        device=data["device"],
        energy=data["energy"],
        analytic=data["analytic"],
        rows=rows,
    )


def _validate(data: object, path: Path) -> None:
    def fail(what: str) -> None:
        raise CostTableError(
            f"device cost table {str(path)!r} is malformed: {what}. See the schema in "
            "autocomp/costs.py"
        )

    if not isinstance(data, dict):
        fail("the top level must be an object")
    if data.get("schema_version") != SCHEMA_VERSION:
        fail(f"schema_version is {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    if data.get("kind") not in ("analytic", "measured"):
        fail("kind must be 'analytic' or 'measured'")
    for section in ("device", "energy", "analytic"):
        if not isinstance(data.get(section), dict):
            fail(f"missing object {section!r}")
    if "name" not in data["device"] or "measured" not in data["device"]:
        fail("device needs 'name' and 'measured'")
    if data["kind"] == "analytic" and data["device"]["measured"]:
        fail("an analytic table cannot claim device.measured=true")
    analytic = data["analytic"]
    for key in _ANALYTIC_KEYS:
        if key not in analytic:
            fail(f"analytic.{key} is missing")
    for key in _ANALYTIC_KEYS:
        values = analytic[key].values() if key == "efficiency" else [analytic[key]]
        if not all(isinstance(v, int | float) and v > 0 for v in values):
            fail(f"analytic.{key} must be positive numbers")
    for i, row in enumerate(data.get("rows", [])):
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            fail(f"rows[{i}] needs a string 'key'")
        if not isinstance(row.get("latency_ms"), int | float) or row["latency_ms"] < 0:
            fail(f"rows[{i}].latency_ms must be a non-negative number")


def _dims(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}x{b}"


def op_out_channels(op: Op, in_shape: Shape) -> int:
    if op.kind in ("conv", "dense", "expand") or (op.kind == "dwconv" and op.features):
        return op.features
    return in_shape[-1]


def op_key(op: Op, in_shape: Shape) -> str:
    """The table key of a deployed op: kind, input shape, outputs, kernel, stride, groups,
    weight dtype (``k``/``s`` read ``3x1`` for a non-square kernel or stride)."""
    shape = "x".join(str(d) for d in in_shape)
    groups = in_shape[-1] if op.kind == "dwconv" else op.groups
    dtype = "float32" if op.bits >= 32 else f"int{op.bits}"
    return (
        f"{op.kind}|in={shape}|out={op_out_channels(op, in_shape)}|k={_dims(*op.kernel_hw)}"
        f"|s={_dims(*op.strides)}|g={groups}|{dtype}"
    )


def op_counts(op: Op, in_shape: Shape) -> tuple[int, int, int, int, int]:
    """(MACs, params, storage bytes, weight bytes read, activation bytes) of one op, exactly.

    Storage of a sparse op (``density`` < 1) is a bitmask plus the non-zero values; weights of
    ``bits`` < 32 take ``bits`` each plus one float32 scale per output channel.
    """
    out = out_shape(op, in_shape)
    act_bytes = BYTES_PER_FLOAT * (math.prod(in_shape) + math.prod(out))
    if op.kind == "add":  # reads both operands
        act_bytes += BYTES_PER_FLOAT * math.prod(in_shape)
    if op.kind not in PARAMETRIC:
        return 0, 0, 0, 0, act_bytes
    kh, kw = op.kernel_hw
    features = op_out_channels(op, in_shape)
    if op.kind == "dwconv":  # m k x k filters per input channel
        weights = kh * kw * features
    elif op.kind == "expand":  # 1x1 to features // 2, 3x3 to the rest
        half = features // 2
        weights = in_shape[-1] * (half + 9 * (features - half))
    elif op.kind == "conv":
        weights = kh * kw * (in_shape[-1] // op.groups) * features
    else:
        weights = in_shape[0] * features
    positions = math.prod(out[:-1]) if op.kind != "dense" else 1
    macs = positions * weights
    bias = features if op.use_bias else 0
    nnz = weights if op.density >= 1.0 else int(round(op.density * weights))
    storage = math.ceil(nnz * op.bits / 8) + BYTES_PER_FLOAT * bias
    if op.bits < 32:
        storage += BYTES_PER_FLOAT * features  # per-channel scales
    if op.density < 1.0:
        storage += math.ceil(weights / 8)
    weight_read = math.ceil(weights * op.bits / 8) + BYTES_PER_FLOAT * bias
    return macs, nnz + bias, storage, weight_read, act_bytes


def price_op(profile: DeviceProfile, op: Op, in_shape: Shape) -> OpCost:
    """Latency and energy of one op: the table's exact row if any, else the analytic model."""
    macs, params, storage, weight_read, act_bytes = op_counts(op, in_shape)
    if op.kind in ("flatten", "relu", "save"):
        # Fused or free in TFLite (RESHAPE is a no-op view; ReLU fuses into CONV/FC/ADD; a
        # saved tensor is only kept alive).
        return OpCost(0.0, 0.0, 0, 0, 0, "analytic")
    a = profile.analytic
    energy_pj = macs * a["pj_per_mac"] + weight_read * a["pj_per_dram_byte"]
    energy_pj += act_bytes * a["pj_per_sram_byte"]
    row = profile.rows.get(op_key(op, in_shape))
    if row is not None:
        energy = row.get("energy_mj")
        return OpCost(
            float(row["latency_ms"]),
            float(energy) if energy is not None else energy_pj * 1e-9,
            macs,
            params,
            storage,
            "table",
        )
    kind = "conv" if op.kind == "expand" else op.kind  # two convs and a concatenation
    efficiency = a["efficiency"].get(kind, a["efficiency"].get("pool", 1.0))
    compute_s = macs / (a["peak_gmacs"] * 1e9 * efficiency)
    memory_s = (weight_read + act_bytes) / (a["bandwidth_gbs"] * 1e9)
    latency_ms = (a["op_overhead_us"] * 1e-6 + max(compute_s, memory_s)) * 1e3
    return OpCost(latency_ms, energy_pj * 1e-9, macs, params, storage, "analytic")


@dataclass(frozen=True)
class ModelCost:
    """Totals of a deployed model and the share of table vs analytic answers."""

    latency_ms: float
    energy_mj: float
    macs: int
    params: int
    bytes: int
    sources: dict[str, int]


def sum_costs(costs: Sequence[OpCost]) -> ModelCost:
    return ModelCost(
        latency_ms=sum(c.latency_ms for c in costs),
        energy_mj=sum(c.energy_mj for c in costs),
        macs=sum(c.macs for c in costs),
        params=sum(c.params for c in costs),
        bytes=sum(c.bytes for c in costs),
        sources=dict(Counter(c.source for c in costs)),
    )


def price_ops(
    profile: DeviceProfile, ops: Sequence[Op], input_shape: Sequence[int], strict: bool = True
) -> ModelCost:
    """Cost of a whole sequential model (or, ``strict=False``, a run of its ops)."""
    shapes = walk_shapes(ops, input_shape, strict)
    return sum_costs([price_op(profile, op, shape) for op, shape in zip(ops, shapes, strict=False)])
