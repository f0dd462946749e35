"""Measure a device cost table for an experiment's search space.

    python -m autocomp.profile device=host experiment=digits [threads=1|4|1,4] [int8=true] \\
        [out=<table.json>]
    python -m autocomp.profile device=android serial=<adb serial> experiment=digits \\
        [threads=1] [delegate=xnnpack] [benchmark_binary=/data/local/tmp/benchmark_model] \\
        [energy=none|battery] [power_csv=<monitor.csv>]
    python -m autocomp.profile device=published source=../shared/data/phones \\
        [tables=pixel1_tflite,pixel4_a76,...] [out=<folder>]

Any other ``key=value`` is a Hydra override of the experiment (``env.ratios=[...]``). Every layer
configuration the search can deploy becomes a one-op TFLite model, timed on the device; rows
are appended to ``<out>.partial.jsonl`` as they are measured, so a killed profile continues
where it stopped, and the table is written atomically at the end (rows of an existing table
at ``out`` are kept, so profiling a second experiment adds to the same table). The base model
is also measured whole and compared with the table's prediction (``validation``).

``device=published`` builds the phone tables from published phone measurements instead
(:mod:`autocomp.devices.calibrate`): the measured Pixel 1 table and the phone-calibrated Cortex
tables, written into ``out`` (default: the package's ``autocomp/devices``, where the shipped
tables are); it measures nothing and needs no experiment.

Each configuration is also converted as the export converts ``model_int8.tflite`` (full
integer, calibrated) and timed: the row's ``latency_int8_ms`` (``int8=false`` skips it; a table
without those rows gets them on the next run).
``threads=1,4`` profiles with one and with four interpreter threads, one table each (phone apps
often run TFLite with 2 or 4 threads); a table carries its thread count and runs print it.

Defaults: ``out`` is ``~/.cache/autocomp/devices/<host id>.json`` (what ``device=host`` and
``device=auto`` look for; ``<host id>-4t.json`` for 4 threads, which ``device.profile=<path>``
selects) or ``android-<serial>.json``.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

import numpy as np

PROFILE_KEYS = {
    "device",
    "serial",
    "threads",
    "out",
    "rounds",
    "delegate",
    "benchmark_binary",
    "energy",
    "power_csv",
    "adb",
    "limit",
    "source",
    "tables",
    "int8",
    "calibration_plans",
}
USAGE = __doc__.split("\n\n")[1]


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    opts, overrides = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"unexpected argument {arg!r}; usage:\n{USAGE}")
        if key in PROFILE_KEYS:
            opts[key] = value
        else:
            overrides.append(arg)
    if opts.get("device") not in ("host", "android", "published"):
        raise SystemExit(f"device=host, android or published is required; usage:\n{USAGE}")
    if opts["device"] == "published" and not opts.get("source"):
        raise SystemExit("device=published needs source=<folder of the published phone data>, "
                         "e.g. source=../shared/data/phones")  # fmt: skip
    if opts["device"] == "android" and not opts.get("serial"):
        raise SystemExit("device=android needs serial=<adb serial> (see `adb devices`)")
    return opts, overrides


def _analytic_section(platform: str) -> tuple[dict, list[str]]:
    """The energy estimate's constants (and the roofline of last resort) of a measured table."""
    from autocomp.devices.costs import load_profile

    a76 = load_profile("analytic_cortex_a76")
    energy = next(s for s in a76.sources if s.startswith("Energy per op"))
    return dict(a76.analytic), [
        "Where no energy is measured: " + energy,
        f"Latency rows: measured on the {platform} with python -m autocomp.profile",
    ]


def run_profile(opts: dict[str, str], overrides: list[str], console=None) -> Path:
    import jax
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

    from autocomp.devices.costs import (
        SCHEMA_VERSION,
        CostTableError,
        host_id,
        load_profile,
        price_ops,
        profile_from_data,
        user_tables_dir,
    )
    from autocomp.devices.profiling import (
        AndroidRunner,
        append_partial,
        host_energy_counters,
        load_partial,
        micro_model,
        overhead_model,
        partial_path,
        power_from_csv,
        rapl_energy_mj,
        search_configs,
        time_tflite,
    )
    from autocomp.export import to_tflite
    from autocomp.io import atomic_write_json
    from autocomp.models.layers import compressible_layers
    from autocomp.models.ops import base_ops, init_params
    from autocomp.run import compose
    from autocomp.techniques import make_techniques

    console = console or Console(stderr=True)
    config = compose(overrides)
    device = opts["device"]
    threads = int(opts.get("threads", 1))
    rounds = int(opts.get("rounds", 21))
    name = host_id() if device == "host" else f"android-{opts['serial']}"
    suffix = "" if threads == 1 else f"-{threads}t"  # one table per thread count
    out = Path(opts.get("out") or user_tables_dir() / f"{name}{suffix}.json").expanduser()

    techniques = make_techniques(config.env.techniques)
    if config.model._target_:  # a user's model: its layers and every op between them
        from autocomp.export import function_to_tflite
        from autocomp.search.space import build_search_space
        from autocomp.workflow.custom import random_network

        net, data = random_network(config)
        input_shape = tuple(data.x_train.shape[1:])
        graph = net.graph_priced()
        configs = search_configs((), net.layers, techniques, config.env.ratios, input_shape,
                                 graph)  # fmt: skip

        def whole_model() -> bytes:
            return function_to_tflite(lambda x: net.forward(net.base_params(), x), input_shape)

        def predict(table) -> float:
            return build_search_space((), net.layers, techniques, config.env.ratios, table,
                                      input_shape, graph, net.num_groups).base[0]  # fmt: skip
    else:
        ops = base_ops(config.model)
        input_shape = tuple(config.model.input_shape)
        layers = compressible_layers(ops, input_shape)
        configs = search_configs(ops, layers, techniques, config.env.ratios, input_shape)

        def whole_model() -> bytes:
            return to_tflite(ops, init_params(ops, input_shape, jax.random.key(0)), input_shape)

        def predict(table) -> float:
            return price_ops(table, ops, input_shape).latency_ms

    rows: dict[str, dict] = {}
    validation: list[dict] = []
    kept8 = None  # an existing table's int8 call overhead
    existing_fits: list[dict] = []  # per-op corrections fitted for other experiments
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
        rows.update(existing.rows)
        validation = list(existing.validation)
        kept8 = existing.invoke_overhead_int8_ms
        existing_fits = list(existing.correction.get("fits", [])) if existing.correction else []
    resumed = load_partial(out)
    rows.update(resumed)
    int8 = opts.get("int8", "true").lower() != "false"  # int8 rows, as model_int8.tflite runs

    def missing(key: str) -> bool:
        return key not in rows or (int8 and rows[key].get("latency_int8_ms") is None)

    todo = [k for k in configs if missing(k)]
    if "limit" in opts:
        todo = todo[: int(opts["limit"])]
    console.print(
        f"[bold]profile[/] {device} ({name}), experiment {config.name}: {len(configs)} "
        f"configurations, {len(configs) - len(todo)} already measured"
        + (f" ({len(resumed)} resumed from {partial_path(out)})" if resumed else "")
    )

    if device == "host":
        counters = host_energy_counters()

        def measure(content: bytes):
            return time_tflite(content, threads, rounds=rounds)

        def energy(content: bytes) -> float | None:
            if not counters["rapl"]:
                return None
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_content=content, num_threads=threads)
            interpreter.allocate_tensors()
            return rapl_energy_mj(interpreter.invoke, counters["rapl"])

        energy_info = {
            "measured": bool(counters["rapl"]),
            "method": (
                "RAPL package energy over a 1 s loop of calls per row"
                if counters["rapl"]
                else "estimated: MACs, weight and activation bytes times the energy constants "
                "of the analytic section (Horowitz 2014); this machine offers "
                + counters["summary"]
            ),
        }
        runtime = "LiteRT interpreter (ai-edge-litert), XNNPACK"
    else:
        import tempfile

        runner = AndroidRunner(
            opts["serial"],
            benchmark_binary=opts.get("benchmark_binary", AndroidRunner.benchmark_binary),
            threads=threads,
            delegate=opts.get("delegate", "xnnpack"),
            adb=opts.get("adb", "adb"),
        )
        runner.run(runner.adb_command("shell", f"mkdir -p {runner.remote_dir}"))
        workdir = Path(tempfile.mkdtemp(prefix="autocomp-profile-"))

        last: dict = {}

        def measure(content: bytes):
            path = workdir / "model.tflite"
            path.write_bytes(content)
            last["timing"] = runner.time_model(path)
            return last["timing"]

        source = opts.get("energy", "none")
        monitor_w = power_from_csv(Path(opts["power_csv"])) if opts.get("power_csv") else None

        def energy(content: bytes) -> float | None:
            latency = last["timing"].median_ms
            if source == "battery":
                return runner.energy_mj("model.tflite", latency)
            if monitor_w is not None:
                return monitor_w * latency
            return None

        methods = {
            "battery": "battery current x voltage sampled over adb during a 5 s loop per row, "
            "minus idle power, times the latency",
            "none": "estimated: analytic energy constants (no phone energy source given)",
        }
        if source not in methods:
            raise SystemExit(f"energy={source!r}: use energy=battery or energy=none")
        energy_info = {"measured": source == "battery" or monitor_w is not None,
                       "method": methods[source]}  # fmt: skip
        if monitor_w is not None and source != "battery":
            energy_info["method"] = (
                f"power monitor CSV {opts['power_csv']}: mean {monitor_w:.3f} W under load "
                "times each row's latency (includes the phone's idle power)"
            )
        runtime = f"TensorFlow Lite benchmark_model ({runner.delegate}) over adb"

    overhead = measure(overhead_model()).median_ms
    overhead8 = measure(overhead_model(int8=True)).median_ms if int8 else None
    start = time.perf_counter()
    columns = (*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("profiling ops", total=len(todo))
        for key in todo:
            op, shape = configs[key]
            row = rows.get(key)
            if row is None:
                content = micro_model(op, shape)
                timing = measure(content)
                row = {
                    "key": key,
                    "latency_ms": max(0.0, timing.median_ms - overhead),
                    "latency_spread_ms": timing.spread_ms,
                    "energy_mj": energy(content),
                    "repeats": timing.repeats,
                }
            if int8 and row.get("latency_int8_ms") is None:
                timing = measure(micro_model(op, shape, int8=True))
                row = dict(row, latency_int8_ms=max(0.0, timing.median_ms - overhead8))
            append_partial(out, row)
            rows[key] = row
            bar.advance(task)
    measured_s = time.perf_counter() - start

    analytic, sources = _analytic_section(device)
    table = {
        "schema_version": SCHEMA_VERSION,
        "kind": "measured",
        "device": {
            "name": name,
            "platform": device,
            "cpu": _cpu_description() if device == "host" else f"adb serial {opts['serial']}",
            "soc": "host CPU" if device == "host" else "see the phone's getprop",
            "runtime": runtime,
            "threads": threads,
            "measured": True,
            "method": (
                "one-op TFLite model per configuration (the export's converter), median of "
                f"{rounds} rounds of back-to-back calls after warm-up; the per-call overhead "
                "of a trivial model is subtracted from each row and added once per model"
            ),
            "date": datetime.date.today().isoformat(),
        },
        "energy": energy_info,
        "analytic": analytic,
        "invoke_overhead_ms": overhead,
        "sources": sources,
        **({"invoke_overhead_int8_ms": overhead8 or kept8} if int8 or kept8 else {}),
        "validation": validation,
        "rows": sorted(rows.values(), key=lambda r: r["key"]),
    }
    if device == "android":  # a phone table says where its numbers come from
        table["provenance"] = _own_provenance(opts, runtime, threads, out)
    plans = int(opts.get("calibration_plans", 20 if device == "host" else 0))
    if plans and not config.model._target_:
        _fit_correction(table, existing_fits, config, plans, threads, out, console)
    predicted = float(predict(profile_from_data(table, out)))
    whole = measure(whole_model())
    record = {
        "model": config.model.name,
        "measured_ms": whole.median_ms,
        "predicted_ms": predicted,
        "error_pct": 100 * (predicted - whole.median_ms) / whole.median_ms,
        "date": table["device"]["date"],
    }
    table["validation"] = [v for v in validation if v.get("model") != record["model"]] + [record]
    atomic_write_json(out, table)
    partial_path(out).unlink(missing_ok=True)
    console.print(
        f"measured {len(todo)} configurations in {measured_s:.0f} s; call overhead "
        f"{overhead * 1e3:.1f} us; whole {config.model.name}: measured "
        f"{whole.median_ms:.4f} ms, table predicts {predicted:.4f} ms "
        f"({record['error_pct']:+.1f}%)\nenergy: {energy_info['method']}\nwrote {out} "
        f"({len(rows)} rows)"
    )
    return out


def _fit_correction(table, fits, config, plans, threads, out, console) -> None:
    """Time ``plans`` whole random plans (seed 1; ``bench costs`` checks on seed 0) and fit the
    per-op correction (:mod:`autocomp.devices.plan_timing`); the table keeps one fit per
    experiment and uses their mean."""
    from autocomp.devices.costs import profile_from_data
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

    from autocomp.devices.costs import cpu_model

    return f"{cpu_model()} ({platform.machine()}), {os.cpu_count() or 1} logical CPUs"


def build_published(opts: dict[str, str], console=None) -> list[Path]:
    """Write the phone tables built from the published measurements under ``source``."""
    from importlib import resources

    from rich.console import Console

    from autocomp.devices.calibrate import TABLES, build_tables
    from autocomp.devices.costs import profile_from_data
    from autocomp.io import atomic_write_json

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


def main(argv: list[str] | None = None) -> int:
    opts, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if opts["device"] == "published":
        from autocomp.devices.published import PublishedDataError

        if overrides:
            raise SystemExit(f"device=published takes no overrides, got {overrides}")
        try:
            build_published(opts)
        except PublishedDataError as err:
            print(f"{type(err).__name__}: {err}", file=sys.stderr)  # noqa: T201 (CLI output)
            return 2
        return 0
    from autocomp.config import ConfigError
    from autocomp.data import DataError
    from autocomp.devices.costs import CostTableError
    from autocomp.devices.profiling import ProfileError
    from autocomp.models.linen import ModelError
    from autocomp.techniques import TechniqueError

    errors = (ConfigError, CostTableError, DataError, ModelError, ProfileError, TechniqueError)
    counts = opts.get("threads", "1").split(",")
    if len(counts) > 1 and "out" in opts:
        raise SystemExit("threads=1,4 writes one table per thread count: drop out=, or profile "
                         "one thread count per out= file")  # fmt: skip
    try:
        for count in counts:  # threads=1,4: the 1-thread table, then the 4-thread one
            run_profile(dict(opts, threads=count), overrides)
    except errors as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)  # noqa: T201 (CLI output)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
