"""Device cost tables: latency and energy of deployed ops, and exact size and MAC counts.

A device profile is one JSON file (schema below), made by ``python -m autocomp.profile`` (measured
rows) or written by hand from published figures (analytic tables). Each op of a deployed model is
priced by, in this order: an exact row of the table (``table``); linear interpolation in MACs
(or bytes moved, for ops without MACs) between the two nearest measured rows of the same op
family, i.e. same kind, spatial input size, kernel, stride, grouping and dtype (``interpolated``);
a roofline ``a + b * MACs + c * bytes`` fitted by non-negative least squares to the table's
measured rows of that op kind (``roofline``); and otherwise the table's analytic model: hand-set
(``analytic``), or fitted to published phone measurements (``calibrated``: a table with a
``calibration`` section, which also answers the op kinds its rows hold too few of). Every answer
says which (:class:`OpCost.source`); ops that TFLite fuses away are ``free``.

Schema (``schema_version`` 2)::

    {"schema_version": 2,
     "kind": "analytic" | "measured" | "calibrated",
     "device": {"name", "platform": "analytic" | "host" | "android", "soc", "runtime",
                "threads", "measured": bool, "method", "date", ...},
     "energy": {"measured": bool, "method"},
     "analytic": {"peak_gmacs", "efficiency": {"conv", "dense", "pool"}, "bandwidth_gbs",
                  "op_overhead_us", "pj_per_mac", "pj_per_dram_byte", "pj_per_sram_byte"},
     "invoke_overhead_ms": float,        # optional: once per model (interpreter call)
     "provenance": {"phone", "runtime", "runtime_version", "threads", "method",
                    "sources": [{"repo", "commit", "files", "license"}, ...]},  # android tables
     "calibration": {"data", "fitted", "train_n", "heldout": {"mape", "spearman", "n"}, ...},
     "int8": {"assumption": bool, "compute_speedup", "bytes_factor", "method"},  # optional
     "sources": [str, ...],
     "validation": [{"model", "measured_ms", "predicted_ms"}, ...],   # optional
     "invoke_overhead_int8_ms": float,   # optional: the same for an int8 model
     "per_op_correction_ms": float,      # optional: taken off every op priced from the rows
     "correction": {"method", "fits": [...]},  # how it was fitted
     "rows": [{"key": str, "latency_ms": float, "latency_spread_ms": float,
               "energy_mj": float | null, "repeats": int,
               "latency_int8_ms": float}, ...]}  # optional: the op in an int8 model

``kind: measured`` needs ``platform`` ``host`` or ``android`` and ``device.measured: true``;
an analytic table can claim neither. A ``calibrated`` table is an analytic model whose
parameters were fitted to a phone's published measurements (platform ``android``, not
``measured``). Every ``android`` table needs ``provenance`` (where each number comes from, under
which license) and a ``calibrated`` table its ``calibration``. Rows of a measured table hold
the op's time with the interpreter's per-call overhead taken out (that is
``invoke_overhead_ms``, added once per model).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from autocomp.models.ops import PARAMETRIC, Op, Shape, out_shape, walk_shapes

SCHEMA_VERSION = 2
BYTES_PER_FLOAT = 4
PLATFORMS = ("analytic", "host", "android")
KINDS = ("analytic", "measured", "calibrated")
SOURCES = (
    "table",
    "interpolated",
    "roofline",
    "calibrated",
    "analytic",
)  # best first; "free": fused ops
FREE_OPS = ("flatten", "relu", "save")
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
    """A loaded, validated cost table, with its lookup structures built once."""

    name: str
    path: str
    kind: str
    device: dict
    energy: dict
    analytic: dict
    rows: dict[str, dict]
    invoke_overhead_ms: float = 0.0
    invoke_overhead_int8_ms: float | None = None
    per_op_correction_ms: float = 0.0
    correction: dict | None = None
    sources: tuple[str, ...] = field(default=())
    validation: tuple[dict, ...] = field(default=())
    provenance: dict | None = None
    calibration: dict | None = None
    int8: dict | None = None

    @property
    def platform(self) -> str:
        return self.device["platform"]

    def describe(self) -> str:
        """One line: what the table is and how it was made."""
        what = {
            "analytic": "analytic model, not a measurement",
            "host": f"measured on the host ({self.device.get('cpu', '?')})",
            "android": f"measured on an Android phone ({self.device.get('soc', '?')})",
        }[self.platform]
        if self.kind == "calibrated":
            what = f"calibrated on published measurements of a {self.device.get('phone', '?')}"
        threads = self.device.get("threads", 1)
        plural = "s" if threads != 1 else ""
        return f"{self.name} [{what}; {threads} thread{plural}; {len(self.rows)} rows; {self.path}]"

    @cached_property
    def _families(self) -> dict[tuple, list[tuple[float, float]]]:
        """Measured rows grouped by op family, as (size, latency) sorted by size."""
        families: dict[tuple, list[tuple[float, float]]] = {}
        for key, row in self.rows.items():
            op, shape = parse_key(key)
            families.setdefault(_family(op, shape), []).append(
                (_size(op, shape), float(row["latency_ms"]))
            )
        return {k: sorted(v) for k, v in families.items()}

    @cached_property
    def int8_table(self) -> DeviceProfile | None:
        """:func:`int8_view` of this table, built once."""
        return int8_view(self)

    @cached_property
    def _int8_ratio(self) -> dict[str, float]:
        """Per op kind (and ``*``), the median of int8 over float latency of the rows that
        measured both: what prices an int8 op that has no row of its own."""
        ratios: dict[str, list[float]] = {}
        for key, row in self.rows.items():
            q, f = row.get("latency_int8_ms"), float(row["latency_ms"])
            if q is not None and f > 0:
                kind = parse_key(key)[0].kind
                ratios.setdefault(kind, []).append(q / f)
                ratios.setdefault("*", []).append(q / f)
        return {k: float(np.median(v)) for k, v in ratios.items()}

    @cached_property
    def _roofline(self) -> dict[str, np.ndarray]:
        """Per op kind (and ``*`` for all), non-negative (a, b, c) of a + b*MACs + c*bytes,
        fitted to the measured rows; kinds with fewer than 3 rows use ``*``."""
        from scipy.optimize import nnls

        by_kind: dict[str, list[tuple[float, float, float]]] = {}
        for key, row in self.rows.items():
            op, shape = parse_key(key)
            macs, _, _, weight_read, act_bytes = op_counts(op, shape)
            point = (macs, weight_read + act_bytes, float(row["latency_ms"]))
            by_kind.setdefault(op.kind, []).append(point)
            by_kind.setdefault("*", []).append(point)
        fits = {}
        for kind, points in by_kind.items():
            if len(points) < 3:
                continue
            data = np.asarray(points, np.float64)
            scale = np.maximum(data[:, :2].max(axis=0), 1.0)  # conditioning
            # Relative error is what matters across sizes: weight each row by 1/latency.
            w = 1.0 / np.maximum(data[:, 2], 1e-6)
            design = np.column_stack([np.ones(len(data)), data[:, :2] / scale]) * w[:, None]
            coef, _ = nnls(design, data[:, 2] * w)
            fits[kind] = np.array([coef[0], coef[1] / scale[0], coef[2] / scale[1]])
        return fits


@dataclass(frozen=True)
class OpCost:
    """Cost of one deployed op; ``source`` says how its latency was found (see the module)."""

    latency_ms: float
    energy_mj: float
    macs: int
    params: int
    bytes: int
    source: str


def cpu_info() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (``model name``, ``cpu family``, ...); empty
    where that file is absent or unreadable."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_model() -> str:
    """This machine's CPU model name (``platform.processor()`` where /proc/cpuinfo lacks it)."""
    import platform

    return cpu_info().get("model name") or platform.processor() or "unknown"


def host_id() -> str:
    """This machine's CPU as a table name, e.g. ``host-amd-epyc-f25m1`` (vendor model name,
    family and model from /proc/cpuinfo; ``platform.machine()`` where that file is absent)."""
    import platform
    import re

    info = cpu_info()
    name = info.get("model name") or info.get("Hardware") or platform.processor()
    name = name or platform.machine() or "unknown"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if "cpu family" in info and "model" in info:
        slug += f"-f{info['cpu family']}m{info['model']}"
    return f"host-{slug}"


def user_tables_dir() -> Path:
    """Where ``python -m autocomp.profile`` writes tables by default."""
    return Path("~/.cache/autocomp/devices").expanduser()


def host_table_path() -> Path | None:
    """A measured table of this machine's CPU: the user's own first, then a shipped one."""
    stem = host_id()
    for path in (
        user_tables_dir() / f"{stem}.json",
        Path(str(resources.files("autocomp.devices").joinpath(f"{stem.replace('-', '_')}.json"))),
    ):
        if path.is_file():
            return path
    return None


FALLBACK_PROFILE = "pixel4_a76"  # calibrated on a phone's published measurements


def resolve_profile_path(profile: str) -> Path:
    """A path as given; ``host``: the measured table of this machine; ``auto``: that table if
    one exists, else the shipped Pixel 4 table (``FALLBACK_PROFILE``); else a table shipped in
    ``autocomp/devices`` by name."""
    if profile in ("host", "auto"):
        found = host_table_path()
        if found is not None:
            return found
        if profile == "host":
            raise CostTableError(
                f"no measured cost table for this machine ({host_id()}) in {user_tables_dir()} "
                "or among the shipped ones; make one with `python -m autocomp.profile "
                "device=host experiment=<name>`, or target a phone table (device=pixel4_a76, "
                "the default)"
            )
        import logging

        logging.getLogger(__name__).info(
            "device=auto: no measured table of this machine (%s); using %s. To target this "
            "machine, profile it: python -m autocomp.profile device=host experiment=<name>",
            host_id(),
            FALLBACK_PROFILE,
        )
        profile = FALLBACK_PROFILE
    path = Path(profile).expanduser()
    if path.suffix != ".json":
        path = Path(str(resources.files("autocomp.devices").joinpath(f"{profile}.json")))
    return path


def load_profile(profile: str) -> DeviceProfile:
    """Load and validate a device profile (a path, a shipped name, ``host`` or ``auto``).

    Raises:
        CostTableError: if the file is missing, not JSON, or does not follow the schema.
    """
    path = resolve_profile_path(profile)
    shipped = sorted(
        p.stem for p in resources.files("autocomp.devices").iterdir() if p.name.endswith(".json")
    )
    if not path.is_file():
        raise CostTableError(
            f"device cost table {str(path)!r} not found. Use device.profile=<path.json>, "
            f"host, auto, or one of the shipped profiles: {shipped}"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CostTableError(
            f"device cost table {str(path)!r} is not valid JSON ({err}); point "
            "device.profile at a valid file or one of the shipped profiles (a half-written "
            "profile resumes from its .partial.jsonl: re-run python -m autocomp.profile)"
        ) from err
    return profile_from_data(data, path)


def profile_from_data(data: object, path: Path | str) -> DeviceProfile:
    """A validated :class:`DeviceProfile` of a table's parsed JSON (``path``: where it is or
    will be written, for messages)."""
    validate_table(data, path)
    return DeviceProfile(
        name=data["device"]["name"],
        path=str(path),
        kind=data["kind"],
        device=data["device"],
        energy=data["energy"],
        analytic=data["analytic"],
        rows={row["key"]: row for row in data.get("rows", [])},
        invoke_overhead_ms=float(data.get("invoke_overhead_ms", 0.0)),
        invoke_overhead_int8_ms=data.get("invoke_overhead_int8_ms"),
        per_op_correction_ms=float(data.get("per_op_correction_ms", 0.0)),
        correction=data.get("correction"),
        sources=tuple(data.get("sources", ())),
        validation=tuple(data.get("validation", ())),
        provenance=data.get("provenance"),
        calibration=data.get("calibration"),
        int8=data.get("int8"),
    )


def validate_table(data: object, path: Path | str) -> None:
    """Raise :class:`CostTableError` naming the first thing wrong with a table."""

    def fail(what: str) -> None:
        raise CostTableError(
            f"device cost table {str(path)!r} is malformed: {what}. See the schema in "
            "autocomp/devices/costs.py"
        )

    if not isinstance(data, dict):
        fail("the top level must be an object")
    if data.get("schema_version") != SCHEMA_VERSION:
        fail(
            f"schema_version is {data.get('schema_version')!r}, expected {SCHEMA_VERSION} "
            "(re-run python -m autocomp.profile to rebuild a measured table)"
        )
    if data.get("kind") not in KINDS:
        fail(f"kind must be one of {list(KINDS)}")
    for section in ("device", "energy", "analytic"):
        if not isinstance(data.get(section), dict):
            fail(f"missing object {section!r}")
    device = data["device"]
    if not all(k in device for k in ("name", "measured", "platform")):
        fail("device needs 'name', 'platform' and 'measured'")
    if device["platform"] not in PLATFORMS:
        fail(f"device.platform must be one of {list(PLATFORMS)}")
    if data["kind"] == "analytic" and (device["measured"] or device["platform"] != "analytic"):
        fail("an analytic table cannot claim device.measured=true or a measured platform")
    if data["kind"] == "measured":
        if not device["measured"] or device["platform"] == "analytic":
            fail("a measured table needs device.measured=true and platform host or android")
        if not data.get("rows"):
            fail("a measured table needs rows")
    if data["kind"] == "calibrated":
        if device["measured"] or device["platform"] != "android":
            fail("a calibrated table needs platform android and device.measured=false")
        calibration = data.get("calibration")
        if not isinstance(calibration, dict) or not all(
            k in calibration for k in ("data", "fitted", "train_n", "heldout")
        ):
            fail("a calibrated table needs calibration with data, fitted, train_n and heldout")
    if device["platform"] == "android":
        _validate_provenance(data.get("provenance"), fail)
    int8 = data.get("int8")
    if int8 is not None and not (
        isinstance(int8, dict)
        and isinstance(int8.get("assumption"), bool)
        and int8.get("method")
        and all(
            isinstance(int8.get(k), int | float) and int8[k] > 0
            for k in ("compute_speedup", "bytes_factor")
        )  # fmt: skip
    ):
        fail("int8 needs assumption (bool), method, and positive compute_speedup, bytes_factor")
    if not isinstance(data["energy"].get("measured"), bool) or "method" not in data["energy"]:
        fail("energy needs 'measured' (bool) and 'method' (how energy was measured or estimated)")
    analytic = data["analytic"]
    for key in _ANALYTIC_KEYS:
        if key not in analytic:
            fail(f"analytic.{key} is missing")
    for key in _ANALYTIC_KEYS:
        values = analytic[key].values() if key == "efficiency" else [analytic[key]]
        if not all(isinstance(v, int | float) and v > 0 for v in values):
            fail(f"analytic.{key} must be positive numbers")
    if analytic.get("combine", "max") not in ("max", "sum"):
        fail("analytic.combine must be 'max' or 'sum'")
    kind_bandwidth = analytic.get("kind_bandwidth_gbs", {})
    if not isinstance(kind_bandwidth, dict) or not all(
        isinstance(v, int | float) and v > 0 for v in kind_bandwidth.values()
    ):
        fail("analytic.kind_bandwidth_gbs must map op kinds to positive numbers")
    for key in ("invoke_overhead_ms", "per_op_correction_ms"):
        value = data.get(key, 0.0)
        if not isinstance(value, int | float) or value < 0:
            fail(f"{key} must be a non-negative number")
    seen = set()
    for i, row in enumerate(data.get("rows", [])):
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            fail(f"rows[{i}] needs a string 'key'")
        try:
            parse_key(row["key"])
        except ValueError as err:
            fail(f"rows[{i}].key {row['key']!r} is not an op key ({err})")
        if row["key"] in seen:
            fail(f"rows[{i}].key {row['key']!r} appears twice")
        seen.add(row["key"])
        if not isinstance(row.get("latency_ms"), int | float) or not row["latency_ms"] >= 0:
            fail(f"rows[{i}].latency_ms must be a non-negative number")
        for key in ("energy_mj", "latency_int8_ms"):
            value = row.get(key)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                fail(f"rows[{i}].{key} must be a non-negative number or null")


PROVENANCE_KEYS = ("phone", "runtime", "runtime_version", "threads", "method", "sources")
SOURCE_KEYS = ("repo", "commit", "files", "license")


def _validate_provenance(provenance: object, fail) -> None:
    """A phone table says where every number comes from and under which license."""
    if not isinstance(provenance, dict):
        fail("a phone (platform android) table needs provenance: phone, runtime, threads, "
             "method and its sources (repo, commit, files, license)")  # fmt: skip
    for key in PROVENANCE_KEYS:
        if provenance.get(key) in (None, "", []):
            fail(f"provenance.{key} is missing")
    for i, source in enumerate(provenance["sources"]):
        for key in SOURCE_KEYS:
            if not isinstance(source, dict) or not source.get(key):
                fail(f"provenance.sources[{i}].{key} is missing")


def _parse_dims(text: str) -> tuple[int, int]:
    a, _, b = text.partition("x")
    return int(a), int(b or a)


def parse_key(key: str) -> tuple[Op, Shape]:
    """The op and input shape a table key describes (the inverse of :func:`op_key`).

    Raises:
        ValueError: for a string that is not an op key.
    """
    parts = key.split("|")
    if len(parts) != 7:
        raise ValueError("expected kind|in=..|out=..|k=..|s=..|g=..|dtype")
    kind, *fields, dtype = parts
    values = dict(f.split("=", 1) for f in fields)
    if set(values) != {"in", "out", "k", "s", "g"}:
        raise ValueError("expected the fields in, out, k, s, g")
    shape = tuple(int(d) for d in values["in"].split("x"))
    (kh, kw), (sh, sw) = _parse_dims(values["k"]), _parse_dims(values["s"])
    if dtype == "float32":
        bits = 32
    elif dtype.startswith("int") and dtype[3:].isdigit():
        bits = int(dtype[3:])
    else:
        raise ValueError(f"unknown dtype {dtype!r}")
    groups = int(values["g"])
    op = Op(
        kind,
        "op" if kind in PARAMETRIC else None,
        int(values["out"]) if kind in (*PARAMETRIC,) else 0,
        kh,
        sh,
        kernel_w=kw if kw != kh else 0,
        stride_w=sw if sw != sh else 0,
        groups=1 if kind == "dwconv" else groups,
        bits=bits,
    )
    return op, shape


def _family(op: Op, in_shape: Shape) -> tuple:
    """Ops whose latency is interpolated along their size: same kind, spatial input, kernel,
    stride, grouping and dtype."""
    grouping = "depthwise" if op.kind == "dwconv" else op.groups
    return (op.kind, tuple(in_shape[:-1]), op.kernel_hw, op.strides, grouping, op.bits)


def _size(op: Op, in_shape: Shape) -> float:
    macs, _, _, weight_read, act_bytes = op_counts(op, in_shape)
    return float(macs) if macs else float(weight_read + act_bytes)


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


def _interpolate(profile: DeviceProfile, op: Op, in_shape: Shape) -> float | None:
    points = profile._families.get(_family(op, in_shape))
    if not points:
        return None
    x = _size(op, in_shape)
    below = [p for p in points if p[0] <= x]
    above = [p for p in points if p[0] >= x]
    if not below or not above:
        return None  # no extrapolation: the roofline answers outside the measured range
    (x0, y0), (x1, y1) = below[-1], above[0]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def price_op(profile: DeviceProfile, op: Op, in_shape: Shape) -> OpCost:
    """Latency and energy of one op, from the best source the table has (see the module).

    Latency is looked up under the op's float32 key: layers with k-bit weights are deployed
    with their quantized values in the float model, so they run as float ops; their storage and
    their weights' DRAM traffic (energy) count ``bits`` per weight.
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
        latency = analytic_latency_ms(a, efficiency_key(op), macs, moved)
        source = "calibrated" if profile.calibration is not None else "analytic"
    return OpCost(latency, energy_mj, macs, params, storage, source)


def efficiency_key(op: Op) -> str:
    """Which ``analytic.efficiency`` entry prices ``op`` (``pool`` for the MAC-free ones)."""
    return {"conv": "conv", "expand": "conv", "dense": "dense", "dwconv": "dwconv"}.get(
        op.kind, "pool"
    )


def analytic_latency_ms(analytic: dict, kind: str, macs, moved):
    """The analytic model: per-op overhead + max(MACs / (peak * efficiency), bytes / bandwidth),
    or their sum where ``analytic.combine`` is ``sum`` (the calibrated tables: compute and
    memory traffic of these runtimes overlap little); ``analytic.kind_bandwidth_gbs`` may give
    each kind its own bandwidth. Numbers or numpy arrays; ``kind`` an ``efficiency`` key."""
    efficiency = analytic["efficiency"].get(kind, analytic["efficiency"].get("pool", 1.0))
    bandwidth = analytic.get("kind_bandwidth_gbs", {}).get(kind, analytic["bandwidth_gbs"])
    compute_s = macs / (analytic["peak_gmacs"] * 1e9 * efficiency)
    memory_s = moved / (bandwidth * 1e9)
    if analytic.get("combine", "max") == "sum":
        return (analytic["op_overhead_us"] * 1e-6 + compute_s + memory_s) * 1e3
    return (analytic["op_overhead_us"] * 1e-6 + np.maximum(compute_s, memory_s)) * 1e3


def int8_view(profile: DeviceProfile) -> DeviceProfile | None:
    """The table as ``model_int8.tflite`` runs: each row's measured ``latency_int8_ms``; a row
    without one, its float latency times the median int8/float ratio of the rows of its kind
    that have one, or (a table with an ``int8`` column and no int8 rows) times the ratio of the
    analytic model at the int8 MAC rate and bytes to the float one; the analytic model itself
    at the int8 rates; the int8 call overhead. Every lookup tier then answers for int8 as it
    does for float. ``None``: the table has neither int8 rows nor an int8 column."""
    ratios = profile._int8_ratio
    if not ratios and profile.int8 is None:
        return None
    a = a8 = profile.analytic
    if profile.int8 is not None:
        speedup, factor = profile.int8["compute_speedup"], profile.int8["bytes_factor"]
        a8 = dict(
            a, peak_gmacs=a["peak_gmacs"] * speedup, bandwidth_gbs=a["bandwidth_gbs"] / factor
        )
        if "kind_bandwidth_gbs" in a:
            a8["kind_bandwidth_gbs"] = {k: v / factor for k, v in a["kind_bandwidth_gbs"].items()}
    rows = {}
    for key, row in profile.rows.items():
        latency = row.get("latency_int8_ms")
        if latency is None:
            op, shape = parse_key(key)
            if ratios:
                latency = row["latency_ms"] * ratios.get(op.kind, ratios["*"])
            else:
                macs, _, _, weight_read, act_bytes = op_counts(op, shape)
                kind, moved = efficiency_key(op), weight_read + act_bytes
                as_float = analytic_latency_ms(a, kind, macs, moved)
                latency = row["latency_ms"] * analytic_latency_ms(a8, kind, macs, moved) / as_float
        rows[key] = dict(row, latency_ms=float(latency))
    overhead = profile.invoke_overhead_int8_ms
    return replace(
        profile,
        name=f"{profile.name} (int8)",
        rows=rows,
        analytic=a8,
        invoke_overhead_ms=profile.invoke_overhead_ms if overhead is None else overhead,
    )


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
