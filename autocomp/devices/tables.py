"""Device cost tables: the schema, and loading and validating a table (:func:`load_profile`).

A device profile is one JSON file, made by ``python -m autocomp.profile`` (measured rows) or
written by hand from published figures (analytic tables); :mod:`autocomp.devices.costs` prices
ops from it.

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
     "conversion_gbs": float,            # optional: QUANTIZE/DEQUANTIZE rate (5 bytes/element)
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
``invoke_overhead_ms``, added once per model). Row keys are :func:`autocomp.devices.opkeys.op_key`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from autocomp.devices import host
from autocomp.devices.analytic import int8_view
from autocomp.devices.opkeys import op_counts, op_family, op_size, parse_key

SCHEMA_VERSION = 2
PLATFORMS = ("analytic", "host", "android")
KINDS = ("analytic", "measured", "calibrated")
_ANALYTIC_KEYS = (
    "peak_gmacs",
    "efficiency",
    "bandwidth_gbs",
    "op_overhead_us",
    "pj_per_mac",
    "pj_per_dram_byte",
    "pj_per_sram_byte",
)
FALLBACK_PROFILE = "pixel4_a76"  # calibrated on a phone's published measurements
ENERGY_TABLE = "analytic_cortex_a76"  # whose energy constants price unmeasured energy
PROVENANCE_KEYS = ("phone", "runtime", "runtime_version", "threads", "method", "sources")
SOURCE_KEYS = ("repo", "commit", "files", "license")


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
    conversion_gbs: float | None = None
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
            families.setdefault(op_family(op, shape), []).append(
                (op_size(op, shape), float(row["latency_ms"]))
            )
        return {k: sorted(v) for k, v in families.items()}

    @cached_property
    def int8_table(self) -> DeviceProfile | None:
        """:func:`autocomp.devices.analytic.int8_view` of this table, built once."""
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


def resolve_profile_path(profile: str) -> Path:
    """A path as given; ``host``: the measured table of this machine; ``auto``: that table if
    one exists, else the shipped Pixel 4 table (``FALLBACK_PROFILE``); else a table shipped in
    ``autocomp/devices`` by name."""
    if profile in ("host", "auto"):
        found = host.host_table_path()
        if found is not None:
            return found
        if profile == "host":
            raise CostTableError(
                f"no measured cost table for this machine ({host.host_id()}) in "
                f"{host.user_tables_dir()} or among the shipped ones; make one with `python -m "
                "autocomp.profile device=host experiment=<name>`, or target a phone table "
                "(device=pixel4_a76, the default)"
            )
        logging.getLogger(__name__).info(
            "device=auto: no measured table of this machine (%s); using %s. To target this "
            "machine, profile it: python -m autocomp.profile device=host experiment=<name>",
            host.host_id(),
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
        conversion_gbs=data.get("conversion_gbs"),
        per_op_correction_ms=float(data.get("per_op_correction_ms", 0.0)),
        correction=data.get("correction"),
        sources=tuple(data.get("sources", ())),
        validation=tuple(data.get("validation", ())),
        provenance=data.get("provenance"),
        calibration=data.get("calibration"),
        int8=data.get("int8"),
    )


def energy_constants() -> tuple[dict, dict, str]:
    """The analytic section, the energy section and the source note of the analytic Cortex-A76
    table (``ENERGY_TABLE``): the energy constants (and the roofline of last resort) that the
    tables built here use where they measure no energy."""
    a76 = load_profile(ENERGY_TABLE)
    note = next(s for s in a76.sources if s.startswith("Energy per op"))
    return dict(a76.analytic), dict(a76.energy), note


def validate_table(data: object, path: Path | str) -> None:
    """Raise :class:`CostTableError` naming the first thing wrong with a table."""

    def fail(what: str) -> None:
        raise CostTableError(
            f"device cost table {str(path)!r} is malformed: {what}. See the schema in "
            "autocomp/devices/tables.py"
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
    _validate_device(data, fail)
    _validate_int8(data.get("int8"), fail)
    if not isinstance(data["energy"].get("measured"), bool) or "method" not in data["energy"]:
        fail("energy needs 'measured' (bool) and 'method' (how energy was measured or estimated)")
    _validate_analytic(data["analytic"], fail)
    for key in ("invoke_overhead_ms", "per_op_correction_ms"):
        value = data.get(key, 0.0)
        if not isinstance(value, int | float) or value < 0:
            fail(f"{key} must be a non-negative number")
    rate = data.get("conversion_gbs", 1.0)
    if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
        fail("conversion_gbs must be a positive number (GB/s); delete it to use the bandwidth")
    _validate_rows(data.get("rows", []), fail)


def _validate_device(data: dict, fail) -> None:
    """The device section agrees with the table's kind; a phone table has its provenance."""
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


def _validate_int8(int8: object, fail) -> None:
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


def _validate_analytic(analytic: dict, fail) -> None:
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


def _validate_rows(rows: list, fail) -> None:
    seen = set()
    for i, row in enumerate(rows):
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
