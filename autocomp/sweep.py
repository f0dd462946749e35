"""``python -m autocomp.sweep launch/sweeps/budgets.yaml [--count N] [--dir DIR] [overrides...]``:
a wandb sweep file run offline, with no wandb server.

The suggestions come from ``sweeps`` (the engine of wandb's own sweep controller), so grid, random
and bayes sweep as ``wandb agent`` would. Each trial is the file's ``command`` run as a subprocess
with the suggested Hydra overrides, then the extra ``overrides``, then
``hydra.run.dir=<dir>/trial-NNN``, and always with wandb offline. The metric is read back from the
trial's offline wandb run (``<trial>/wandb/offline-run-*/run-*.wandb``).

One JSON line per trial goes to ``<dir>/sweep.jsonl``. A re-run with the same ``--dir`` resumes:
finished trials are not run again and are handed back to the engine, so a grid continues with
its next point and bayes fits on them; failed ones are tried again. ``<dir>/sweep.md`` is the
table of trials, best first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from autocomp.io import atomic_write_text, read_jsonl

log = logging.getLogger("autocomp.sweep")

METHODS = ("grid", "random", "bayes")
# The run-file format (as wandb's old ``sdk/internal/datastore.py`` wrote it): a 7-byte header,
# then 32 KiB blocks of records, each a 7-byte header (crc32c, length, type) and its data.
_HEADER, _BLOCK = 7, 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class SweepError(ValueError):
    """Bad input: the message names the problem and the fix."""


def load_spec(path: str | os.PathLike) -> dict:
    """The sweep file, checked for what the offline engine needs."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} not found: pass a file such as launch/sweeps/*.yaml")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(spec, dict):
        raise SweepError(f"{path} is not a wandb sweep file (a YAML mapping with `parameters`)")
    command = spec.get("command")
    if not isinstance(command, list) or "${args_no_hyphens}" not in command:
        raise SweepError(
            f"{path} has no `command` list with ${{args_no_hyphens}}: add `command: [${{env}}, "
            "${interpreter}, -m, autocomp.train, logger.mode=online, ${args_no_hyphens}]`"
        )
    if spec.get("method") not in METHODS:
        raise SweepError(
            f"{path}: method={spec.get('method')!r}: set `method:` to one of {METHODS}"
        )
    if spec["method"] == "bayes" and not _metric(spec)[0]:
        raise SweepError(f"{path}: method=bayes needs `metric: {{name: ..., goal: maximize}}`")
    if problems := _sweeps().schema_violations_from_proposed_config(spec):
        raise SweepError(f"{path} is not a valid wandb sweep file: {'; '.join(problems)}")
    return spec


def _metric(spec: dict) -> tuple[str | None, str]:
    """The file's metric name (or None) and goal (wandb's default: minimize)."""
    metric = spec.get("metric") or {}
    return metric.get("name"), metric.get("goal", "minimize")


def hydra_value(value: Any) -> str:
    """A suggested value as a Hydra override writes it (``sweeps`` gives numpy scalars)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def trial_argv(
    spec: dict, values: dict[str, Any], extra: Sequence[str], run_dir: Path
) -> list[str]:
    """The trial's command line: the file's ``command`` with its macros filled in, wandb forced
    offline, then ``extra`` and the trial's run directory."""
    args = [f"{name}={hydra_value(v)}" for name, v in values.items()]
    expand = {
        "${env}": [],  # the environment is passed to the subprocess as it is
        "${interpreter}": [sys.executable],
        "${program}": [str(spec["program"])] if spec.get("program") else None,
        "${args_no_hyphens}": args,
        "${args}": [f"--{a}" for a in args],
    }
    argv = []
    for item in map(str, spec["command"]):
        if item.startswith("${") and expand.get(item) is None:
            raise SweepError(
                f"command item {item} is not supported offline (or `program` is unset)"
            )
        argv += (
            ["logger.mode=offline"] if item.startswith("logger.mode=") else expand.get(item, [item])
        )
    return [*argv, *extra, f"hydra.run.dir={run_dir}"]


def read_records(path: str | os.PathLike) -> Iterator[Any]:
    """The protobuf records (``wandb_internal_pb2.Record``) of a wandb run file, in order; a
    torn tail (the run was killed mid-write) ends the scan."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb run file")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if len(chunk) < length or kind not in (_FULL, _FIRST, _MIDDLE, _LAST):
            return
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = Record()
            record.ParseFromString(pending)
            yield record


def read_run(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run file's final summary and its history rows; nested keys are joined with ``.``."""
    summary, history = {}, []

    def items(updates):
        return {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in updates}

    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary |= items(record.summary.update)
        elif kind == "history":
            history.append(items(record.history.item))
    return summary, history


def run_metric(run_dir: Path, name: str) -> tuple[Any, Path | None]:
    """The last value of ``name`` in the run's offline wandb run (summary, else history), and
    the run file it came from; ``(None, None)`` without a run file."""
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    if not files:
        return None, None
    summary, history = read_run(files[-1])
    rows = [row[name] for row in history if name in row]
    return summary.get(name, rows[-1] if rows else None), files[-1]


def run_trial(argv: list[str], log_path: Path) -> int:
    """Run one trial, its output to ``log_path``; returns its exit status."""
    env = {**os.environ, "WANDB_MODE": "offline"}  # the tracker prefers WANDB_MODE to the config
    with open(log_path, "w") as out:
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _sweeps():
    """The ``sweeps`` package, imported without its warnings about pydantic v1-style models."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def _suggest(spec: dict, runs: list) -> Any:
    try:
        return _sweeps().next_run(spec, runs)
    except ValueError as err:
        raise SweepError(f"the sweep engine cannot use this file: {err}") from err


def _check_extra(spec: dict, extra: Sequence[str]) -> None:
    for override in extra:
        if "=" not in override and not override.startswith("~"):
            raise SweepError(f"{override} is not a Hydra override (key=value): options go first")
        key = override.lstrip("+~").split("=", 1)[0]
        if key in spec["parameters"] or key == "hydra.run.dir":
            raise SweepError(f"override {override} clashes with the sweep: the sweep sets {key}")


def run_sweep(
    spec: dict,
    sweep_dir: Path,
    count: int | None = None,
    extra: Sequence[str] = (),
    runner: Callable[[list[str], Path], int] = run_trial,
) -> list[dict]:
    """Run trials until the sweep holds ``count`` of them (earlier finished ones included) or
    the grid is exhausted; returns the records of every trial in ``sweep_dir/sweep.jsonl``."""
    RunState, SweepRun = _sweeps().RunState, _sweeps().SweepRun
    if count is None and spec["method"] != "grid":
        raise SweepError(f"method={spec['method']} never runs out of suggestions: pass --count N")
    _check_extra(spec, extra)
    metric = _metric(spec)[0]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    records = read_jsonl(sweep_dir / "sweep.jsonl")
    runs = [
        SweepRun(name=r["key"], state=RunState.finished, summary_metrics=r["summary_metrics"],
                 config={k: {"value": v} for k, v in r["config"].items()})
        for r in records if r["state"] == "finished"
    ]  # fmt: skip
    while count is None or len(runs) < count:
        if (run := _suggest(spec, runs)) is None:
            break
        name = f"trial-{len(records):03d}"
        values = {k: v["value"] for k, v in run.config.items()}
        record = _trial(spec, sweep_dir / name, values, extra, metric, runner)
        run.name, run.state = name, RunState[record["state"]]
        run.summary_metrics = record["summary_metrics"]
        runs.append(run)
        records.append(record)
        _append(sweep_dir / "sweep.jsonl", record)
        log.info("%s (%d/%s) %s", name, len(runs), count or "grid", _progress(record, metric))
    return records


def _trial(spec, run_dir, values, extra, metric, runner) -> dict:
    """Run one trial and say how it went (the record written to ``sweep.jsonl``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    started, log_path = time.perf_counter(), run_dir / "trial.log"
    status = runner(trial_argv(spec, values, extra, run_dir), log_path)
    value, run_file = run_metric(run_dir, metric) if metric else (None, None)
    error = f"exit status {status}" if status else None
    if not error and metric and value is None:
        error = f"no {metric} in the run's wandb summary or history ({run_file or 'no run file'})"
    return {
        "key": run_dir.name,
        "state": "failed" if error else "finished",
        "config": {k: v.item() if hasattr(v, "item") else v for k, v in values.items()},
        "overrides": [f"{k}={hydra_value(v)}" for k, v in values.items()],
        "summary_metrics": {metric: value} if metric and value is not None else {},
        "exit_status": status,
        "error": error,
        "log": str(log_path),
        "run_file": str(run_file) if run_file else None,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _progress(record: dict, metric: str | None) -> str:
    said = " ".join(record["overrides"])
    if record["state"] == "failed":
        return f"failed ({record['error']}; log {record['log']}): {said}"
    value = record["summary_metrics"].get(metric) if metric else None
    return f"finished in {record['wall_s']} s, {metric}={_shown(value)}: {said}"


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def ranked(records: list[dict], spec: dict) -> list[dict]:
    """Finished trials best first by the file's metric and goal, then the failed ones."""
    metric, goal = _metric(spec)
    sign = -1 if goal == "maximize" else 1

    def key(r):
        value = r["summary_metrics"].get(metric) if metric else None
        return (r["state"] != "finished", value is None, sign * (value or 0.0))

    return sorted(records, key=key)


def table_markdown(records: list[dict], spec: dict, source: str) -> str:
    """``sweep.md``: the trials, best first."""
    metric, goal = _metric(spec)
    lines = [
        f"# Sweep {source}",
        "",
        f"method {spec['method']}, {len(records)} trials, metric {metric or '-'} ({goal})",
        "",
        f"| trial | state | overrides | {metric or 'metric'} | wall s |",
        "|---|---|---|---|---|",
    ]
    for r in ranked(records, spec):
        value = r["summary_metrics"].get(metric) if metric else None
        shown = r["error"] if r["error"] else _shown(value) if value is not None else "-"
        said = " ".join(r["overrides"])
        lines.append(f"| {r['key']} | {r['state']} | {said} | {shown} | {r['wall_s']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns 0 when every trial run now finished, 1 if one failed, 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m autocomp.sweep", description="Run a wandb sweep file offline."
    )
    parser.add_argument("file", help="a wandb sweep file, e.g. launch/sweeps/budgets.yaml")
    parser.add_argument("--count", type=int, help="trials in all (default: the whole grid)")
    parser.add_argument("--dir", help="sweep directory (default: outputs/sweeps/<file name>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every trial")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    sweep_dir = Path(args.dir or Path("outputs", "sweeps", Path(args.file).stem))
    try:
        spec = load_spec(args.file)
        done = len(read_jsonl(sweep_dir / "sweep.jsonl"))
        records = run_sweep(spec, sweep_dir, args.count, args.overrides)
    except SweepError as err:
        log.error("SweepError: %s", err)
        return 2
    text = table_markdown(records, spec, args.file)
    atomic_write_text(sweep_dir / "sweep.md", text)
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(text))
    log.info("sweep directory: %s", sweep_dir)
    return int(any(r["state"] == "failed" for r in records[done:]))


if __name__ == "__main__":
    raise SystemExit(main())
