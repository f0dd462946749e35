"""The profiler behind ``python -m autocomp.profile``: a device cost table measured for an
experiment's search space (:func:`measure_table`), and the phone tables built from published
measurements (:func:`build_published`).

:func:`measure_table` runs in phases: the configurations to time and the whole model to check
against (:func:`experiment_target`); what an existing table and an interrupted profile already
hold (:func:`kept_state`, the ``.partial.jsonl`` beside the table); the device's timer and
energy source (:mod:`autocomp.devices.runtimes`); the rows, float and int8
(:func:`time_rows`); the table, its per-op correction and its validation on the whole model,
written atomically (:func:`table_data`, :func:`write_table`).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autocomp.devices import host, mixed
from autocomp.devices.costs import price_ops
from autocomp.devices.profiling import micro_model, overhead_model, search_configs
from autocomp.devices.runtimes import Runtime, android_runtime, host_runtime
from autocomp.devices.tables import (
    SCHEMA_VERSION,
    CostTableError,
    energy_constants,
    load_profile,
    profile_from_data,
)
from autocomp.io import append_jsonl, atomic_write_json, read_jsonl


# ------------------------------------------------------------------ resumable table files
def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def load_partial(out: Path) -> dict[str, dict]:
    """Rows already measured by an interrupted profile (a torn last line is dropped)."""
    return {row["key"]: row for row in read_jsonl(partial_path(out))}


def append_partial(out: Path, row: dict) -> None:
    append_jsonl(partial_path(out), row)


# ------------------------------------------------------------------ what to measure
@dataclass(frozen=True)
class Target:
    """What a profile measures: every configuration by table key, the whole base model as a
    TFLite file, and a table's prediction of that model's latency."""

    configs: dict
    whole_model: Callable[[], bytes]
    predict: Callable[[object], float]


def experiment_target(config) -> Target:
    """The :class:`Target` of an experiment (a built-in model, or a user's with every op
    between its layers)."""
    import jax

    from autocomp.export import function_to_tflite, to_tflite
    from autocomp.models.layers import compressible_layers
    from autocomp.models.ops import base_ops, init_params
    from autocomp.techniques import make_techniques

    techniques, ratios = make_techniques(config.env.techniques), config.env.ratios
    if config.model._target_:  # a user's model: its layers and every op between them
        from autocomp.search.space import build_search_space
        from autocomp.workflow.custom import random_network

        net, data = random_network(config)
        shape = tuple(data.x_train.shape[1:])
        graph = net.graph_priced()
        return Target(
            search_configs((), net.layers, techniques, ratios, shape, graph),
            lambda: function_to_tflite(lambda x: net.forward(net.base_params(), x), shape),
            lambda table: build_search_space((), net.layers, techniques, ratios, table, shape,
                                             graph, net.num_groups).base[0],
        )  # fmt: skip
    ops = base_ops(config.model)
    shape = tuple(config.model.input_shape)
    return Target(
        search_configs(ops, compressible_layers(ops, shape), techniques, ratios, shape),
        lambda: to_tflite(ops, init_params(ops, shape, jax.random.key(0)), shape),
        lambda table: price_ops(table, ops, shape).latency_ms,
    )


@dataclass
class Kept:
    """What is already measured: rows (of the table at ``out`` and of its partial file), the
    table's validation records, int8 call overhead and per-experiment correction fits."""

    rows: dict[str, dict] = field(default_factory=dict)
    validation: list[dict] = field(default_factory=list)
    overhead8: float | None = None
    conversion_gbs: float | None = None
    fits: list[dict] = field(default_factory=list)
    resumed: int = 0


def kept_state(out: Path, name: str) -> Kept:
    """The :class:`Kept` state at ``out`` (a table there must be this device's)."""
    kept = Kept()
    if out.is_file():
        try:
            existing = load_profile(str(out))
        except CostTableError as err:
            raise SystemExit(f"{err}\nmove it away or pass out=<another file>") from err
        if existing.name != name:
            raise SystemExit(
                f"{out} is the table of {existing.name!r}, not of this device ({name!r}); pass "
                "out=<another file>"
            )
        kept.rows.update(existing.rows)
        kept.validation = list(existing.validation)
        kept.overhead8 = existing.invoke_overhead_int8_ms
        kept.conversion_gbs = existing.conversion_gbs
        kept.fits = list(existing.correction.get("fits", [])) if existing.correction else []
    resumed = load_partial(out)
    kept.rows.update(resumed)
    kept.resumed = len(resumed)
    return kept


# ------------------------------------------------------------------ the rows
def time_rows(todo, configs, rows, runtime: Runtime, overheads, int8: bool, out, console) -> None:
    """Time each configuration of ``todo`` without its row (and, with ``int8``, its int8 file
    without ``latency_int8_ms``) into ``rows``, each row appended to the partial file as it is
    measured; ``overheads``: the float and int8 call overheads taken out of each row."""
    from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

    overhead, overhead8 = overheads
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("profiling ops", total=len(todo))
        for key in todo:
            op, shape = configs[key]
            row = rows.get(key)
            if row is None:
                content = micro_model(op, shape)
                timing = runtime.measure(content)
                row = {
                    "key": key,
                    "latency_ms": max(0.0, timing.median_ms - overhead),
                    "latency_spread_ms": timing.spread_ms,
                    "energy_mj": runtime.energy(content),
                    "repeats": timing.repeats,
                }
            if int8 and row.get("latency_int8_ms") is None:
                timing = runtime.measure(micro_model(op, shape, int8=True))
                row = dict(row, latency_int8_ms=max(0.0, timing.median_ms - overhead8))
            append_partial(out, row)
            rows[key] = row
            bar.advance(task)


# ------------------------------------------------------------------ the table
def analytic_section(platform: str) -> tuple[dict, list[str]]:
    """The energy estimate's constants (and the roofline of last resort) of a measured table,
    and its sources."""
    analytic, _, energy_note = energy_constants()
    return analytic, [
        "Where no energy is measured: " + energy_note,
        f"Latency rows: measured on the {platform} with python -m autocomp.profile",
    ]


def table_data(opts, name, runtime: Runtime, kept: Kept, overheads, int8: bool, out) -> dict:
    """The measured table (schema :mod:`autocomp.devices.tables`) of ``kept.rows``."""
    device, threads = opts["device"], int(opts.get("threads", 1))
    overhead, overhead8 = overheads
    analytic, sources = analytic_section(device)
    table = {
        "schema_version": SCHEMA_VERSION,
        "kind": "measured",
        "device": {
            "name": name,
            "platform": device,
            "cpu": _cpu_description() if device == "host" else f"adb serial {opts['serial']}",
            "soc": "host CPU" if device == "host" else "see the phone's getprop",
            "runtime": runtime.name,
            "threads": threads,
            "measured": True,
            "method": (
                "one-op TFLite model per configuration (the export's converter), median of "
                f"{int(opts.get('rounds', 21))} rounds of back-to-back calls after warm-up; the "
                "per-call overhead of a trivial model is subtracted from each row and added "
                "once per model"
            ),
            "date": datetime.date.today().isoformat(),
        },
        "energy": runtime.energy_info,
        "analytic": analytic,
        "invoke_overhead_ms": overhead,
        "sources": sources,
        **(
            {"invoke_overhead_int8_ms": overhead8 or kept.overhead8}
            if int8 or kept.overhead8
            else {}
        ),  # fmt: skip
        **({"conversion_gbs": kept.conversion_gbs} if kept.conversion_gbs else {}),
        "validation": kept.validation,
        "rows": sorted(kept.rows.values(), key=lambda r: r["key"]),
    }
    if device == "android":  # a phone table says where its numbers come from
        table["provenance"] = _own_provenance(opts, runtime.name, threads, out)
    return table


def write_table(table: dict, config, target: Target, runtime: Runtime, out: Path) -> dict:
    """Validate the table on the whole base model (its ``validation`` record, returned), then
    write it atomically and drop the partial file."""
    predicted = float(target.predict(profile_from_data(table, out)))
    whole = runtime.measure(target.whole_model())
    record = {
        "model": config.model.name,
        "measured_ms": whole.median_ms,
        "predicted_ms": predicted,
        "error_pct": 100 * (predicted - whole.median_ms) / whole.median_ms,
        "date": table["device"]["date"],
    }
    kept = [v for v in table["validation"] if v.get("model") != record["model"]]
    table["validation"] = [*kept, record]
    atomic_write_json(out, table)
    partial_path(out).unlink(missing_ok=True)
    return record


def measure_table(opts: dict[str, str], config, console=None) -> Path:
    """Profile the device of ``opts`` (``device=host`` or ``android``, see
    :mod:`autocomp.profile`) for the search space of ``config``; returns the table's path."""
    from rich.console import Console

    console = console or Console(stderr=True)
    device, threads = opts["device"], int(opts.get("threads", 1))
    name = host.host_id() if device == "host" else f"android-{opts['serial']}"
    suffix = "" if threads == 1 else f"-{threads}t"  # one table per thread count
    out = Path(opts.get("out") or host.user_tables_dir() / f"{name}{suffix}.json").expanduser()
    target = experiment_target(config)
    kept = kept_state(out, name)
    int8 = opts.get("int8", "true").lower() != "false"  # int8 rows, as model_int8.tflite runs
    rows = kept.rows
    todo = [k for k in target.configs
            if k not in rows or (int8 and rows[k].get("latency_int8_ms") is None)]  # fmt: skip
    if "limit" in opts:
        todo = todo[: int(opts["limit"])]
    console.print(
        f"[bold]profile[/] {device} ({name}), experiment {config.name}: {len(target.configs)} "
        f"configurations, {len(target.configs) - len(todo)} already measured"
        + (f" ({kept.resumed} resumed from {partial_path(out)})" if kept.resumed else "")
    )
    if device == "host":
        runtime = host_runtime(threads, int(opts.get("rounds", 21)))
    else:
        runtime = android_runtime(opts, threads)
    overhead = runtime.measure(overhead_model()).median_ms
    overhead8 = runtime.measure(overhead_model(int8=True)).median_ms if int8 else None
    if int8 and kept.conversion_gbs is None:  # what the +q8 layers' QUANTIZE/DEQUANTIZE cost
        kept.conversion_gbs = mixed.conversion_gbs(lambda c: runtime.measure(c).median_ms)
    start = time.perf_counter()
    time_rows(todo, target.configs, rows, runtime, (overhead, overhead8), int8, out, console)
    measured_s = time.perf_counter() - start
    table = table_data(opts, name, runtime, kept, (overhead, overhead8), int8, out)
    plans = int(opts.get("calibration_plans", 20 if device == "host" else 0))
    if plans and not config.model._target_:
        _fit_correction(table, kept.fits, config, plans, threads, out, console)
    record = write_table(table, config, target, runtime, out)
    console.print(
        f"measured {len(todo)} configurations in {measured_s:.0f} s; call overhead "
        f"{overhead * 1e3:.1f} us; whole {config.model.name}: measured "
        f"{record['measured_ms']:.4f} ms, table predicts {record['predicted_ms']:.4f} ms "
        f"({record['error_pct']:+.1f}%)\nenergy: {runtime.energy_info['method']}\nwrote {out} "
        f"({len(rows)} rows)"
    )
    return out


def _fit_correction(table, fits, config, plans, threads, out, console) -> None:
    """Time ``plans`` whole random plans (seed 1; ``bench costs`` checks on seed 0) and fit the
    per-op correction (:mod:`autocomp.devices.plan_timing`); the table keeps one fit per
    experiment and uses their mean."""
    from autocomp.devices.plan_timing import fit_per_op_correction, time_plans

    start = time.perf_counter()
    timed, _ = time_plans(config, profile_from_data(table, out), plans, seed=1, threads=threads)
    value = fit_per_op_correction(timed)
    fits = [f for f in fits if f["experiment"] != config.name]
    fits.append({"experiment": config.name, "plans": len(timed), "seed": 1,
                 "per_op_correction_ms": value})  # fmt: skip
    table["per_op_correction_ms"] = float(np.mean([f["per_op_correction_ms"] for f in fits]))
    table["correction"] = {
        "method": "an op inside a whole model costs less than its one-op model minus the call "
        "overhead: the mean of per-experiment fits of one per-op amount, least squares on the "
        "relative error of whole random plans timed here, subtracted from every op priced "
        "from the rows",
        "fits": fits,
    }
    console.print(f"per-op correction: {value * 1e3:.2f} us, fitted on {len(timed)} whole plans "
                  f"({time.perf_counter() - start:.0f} s)")  # fmt: skip


def _own_provenance(opts: dict[str, str], runtime: str, threads: int, out: Path) -> dict:
    from autocomp.io import git_sha

    return {
        "phone": f"adb serial {opts['serial']}",
        "runtime": runtime,
        "runtime_version": "the benchmark binary on the phone "
        f"({opts.get('benchmark_binary', 'default')})",
        "threads": threads,
        "method": "measured here with python -m autocomp.profile device=android",
        "sources": [{"repo": "this autocomp checkout", "commit": git_sha(), "files": out.name,
                     "license": "your own measurement"}],
    }  # fmt: skip


def _cpu_description() -> str:
    import os
    import platform

    return f"{host.cpu_model()} ({platform.machine()}), {os.cpu_count() or 1} logical CPUs"


# ------------------------------------------------------------------ published phone tables
def build_published(opts: dict[str, str], console=None) -> list[Path]:
    """Write the phone tables built from the published measurements under ``source``."""
    from importlib import resources

    from rich.console import Console

    from autocomp.devices.calibrate import TABLES, build_tables

    console = console or Console(stderr=True)
    names = [n for n in opts.get("tables", ",".join(TABLES)).split(",") if n]
    out_dir = Path(opts.get("out") or str(resources.files("autocomp.devices"))).expanduser()
    written = []
    for name, table in build_tables(Path(opts["source"]).expanduser(), names).items():
        path = out_dir / f"{name}.json"
        profile_from_data(table, path)  # validated before anything is written
        atomic_write_json(path, table)
        held = table["calibration"]["heldout"]
        if isinstance(held, dict):
            fit = (
                f"held-out MAPE {held['mape']:.1f}%, spearman {held['spearman']:.3f}, n={held['n']}"
            )
        else:
            fit = held
        console.print(f"wrote {path}: {len(table['rows'])} rows; {fit}")
        written.append(path)
    return written
