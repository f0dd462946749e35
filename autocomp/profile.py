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

import sys
from pathlib import Path

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


def run_profile(opts: dict[str, str], overrides: list[str], console=None) -> Path:
    """Measure the table of ``opts`` (one thread count) for the experiment of ``overrides``
    (:func:`autocomp.devices.profiler.measure_table`); returns its path."""
    from autocomp.devices.profiler import measure_table
    from autocomp.run.compose import compose

    return measure_table(opts, compose(overrides), console)


def main(argv: list[str] | None = None) -> int:
    opts, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if opts["device"] == "published":
        from autocomp.devices.profiler import build_published
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
    from autocomp.devices.profiling import ProfileError
    from autocomp.devices.tables import CostTableError
    from autocomp.models.discovery import ModelError
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
