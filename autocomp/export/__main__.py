"""``python -m autocomp.export run=<run dir>``: TFLite files, verification and model card of a
finished run (see :mod:`autocomp.export`)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from autocomp.data import DataError
from autocomp.export import FILE_NAMES, ExportError, export_custom_run, export_run
from autocomp.models.discovery import ModelError
from autocomp.search.plan import PlanError
from autocomp.workflow.pipeline import run_paths

log = logging.getLogger("autocomp.export")

USAGE = """usage: python -m autocomp.export run=<run dir> [threads=1] [calibration=200]
                                 [test_examples=N]

Writes <run dir>/export/{model.tflite, model_int8.tflite, verify.json, MODEL_CARD.md}."""


def parse_args(argv: list[str]) -> dict:
    """``key=value`` arguments, like Hydra overrides; unknown keys are errors."""
    known = {"run": str, "threads": int, "calibration": int, "test_examples": int}
    args: dict = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in known:
            raise ExportError(f"unknown argument {arg!r}\n{USAGE}")
        try:
            args[key] = known[key](value)
        except ValueError as err:
            raise ExportError(f"{key}={value!r} must be a {known[key].__name__}") from err
    if "run" not in args:
        raise ExportError(f"run=<run dir> is required\n{USAGE}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        run_json = run_paths(Path(args["run"]))["run"]
        custom = run_json.is_file() and json.loads(run_json.read_text())["config"]["model"].get(
            "_target_"
        )
        report = (export_custom_run if custom else export_run)(
            Path(args["run"]),
            num_threads=args.get("threads", 1),
            calibration_examples=args.get("calibration", 200),
            max_test_examples=args.get("test_examples"),
            progress=log.info,
        )
    except (ExportError, DataError, PlanError, ModelError) as err:
        print(f"autocomp.export: {err}", file=sys.stderr)  # noqa: T201 (CLI output)
        return 2
    out = Path(args["run"]) / "export"
    f = report["float32"]
    lines = [
        f"float32: {f['bytes']:,} bytes, test accuracy {100 * f['test_accuracy']:.2f}%, "
        f"top-1 agreement with JAX {100 * f['top1_agreement']:.2f}%, "
        f"max |dlogit| {f['max_abs_logit_diff']:.2e}, {f['latency_ms']['median']:.4f} ms"
    ]
    for kind in ("int8", "mixed"):
        q = report.get(kind, {})
        if "bytes" in q:
            lines.append(
                f"{kind + ':':8} {q['bytes']:,} bytes, test accuracy "
                f"{100 * q['test_accuracy']:.2f}%, top-1 agreement with JAX "
                f"{100 * q['top1_agreement']:.2f}%, {q['latency_ms']['median']:.4f} ms"
            )
        table = q.get("table_latency_ms") or {}  # the device table's price beside the host's
        if kind == "mixed" and "error" in q:
            lines.append(f"mixed:   not written: {q['error']}")
        elif "bytes" in q and table.get("predicted_ms") is not None:
            what = "on {} (its int8 column)" if kind == "int8" else "the plan as priced on {}"
            lines.append(f"         {what.format(table['table'])}: "
                         f"{table['predicted_ms']:.4f} ms")  # fmt: skip
    files = [name for name in FILE_NAMES.values() if (out / name).is_file()]
    print(  # noqa: T201 (CLI output)
        "\n".join(lines) + f"\nchecks: {report['checks']} -> "
        f"{'PASSED' if report['passed'] else 'FAILED'}\n"
        f"wrote {out}/{{{', '.join([*files, 'verify.json', 'MODEL_CARD.md'])}}}"
    )  # fmt: skip
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
