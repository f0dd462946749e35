"""The wandb sweep files in launch/sweeps/ compose and run, and run offline with no server through
``python -m autocomp.sweep`` (suggestions, trials, metrics read back from wandb, resume)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize
from tiny_runs import TINY

from autocomp.run import register, to_config
from autocomp.sweep import hydra_value, load_spec, main, read_run, run_sweep, trial_argv

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = sorted((ROOT / "launch" / "sweeps").glob("*.yaml"))
BUDGETS = ROOT / "launch" / "sweeps" / "budgets.yaml"
# Three techniques: a trial's set-up (each technique's replacement branches for every layer) then
# takes 2 s instead of 25 s on 2 CPU cores; every technique runs in tests/test_techniques.py.
FEW_TECHNIQUES = "env.techniques=[keep,magnitude,filter]"
# The tiny run of tests/test_config.py with wandb offline (the metric is read from its run file).
OFFLINE_TINY = [*(o for o in TINY if not o.startswith("logger")), FEW_TECHNIQUES]


def _compose(overrides: list[str]):
    register()
    with initialize(version_base="1.3", config_path="../experiments"):
        return compose("config", overrides=overrides, return_hydra_config=False)


def _sweep_overrides(path: Path) -> list[list[str]]:
    """Every grid point of a grid file; for the other methods, every listed value and both ends
    of every range, in all combinations."""
    params = yaml.safe_load(path.read_text())["parameters"]

    def points(p: dict) -> list:
        return (
            p["values"] if "values" in p else [p["value"]] if "value" in p else [p["min"], p["max"]]
        )

    names = list(params)
    return [
        [f"{n}={hydra_value(v)}" for n, v in zip(names, combo, strict=True)]
        for combo in itertools.product(*(points(params[n]) for n in names))
    ]


def _tiny(combo: list[str]) -> list[str]:
    """TINY for the agent a combination names: each agent's own tiny fields (TINY's
    ``updates_per_chunk`` is compressor_critic's; evolution's population must fit 32 episodes)."""
    agent = next((o.split("=")[1] for o in combo if o.startswith("agent=")), "compressor_critic")
    own = {"evolution": ["agent.population=16", "agent.tournament=4"]}.get(agent, [])
    keep = agent == "compressor_critic"
    return [o for o in TINY if keep or not o.startswith("agent.updates_per_chunk")] + own


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_files_compose(path, cache_dir):
    spec = load_spec(path)  # what the offline engine accepts
    header = path.read_text()
    assert f"wandb sweep launch/sweeps/{path.name}" in header
    assert f"python -m autocomp.sweep launch/sweeps/{path.name}" in header
    assert spec["command"][2:5] == ["-m", "autocomp.train", "logger.mode=online"]
    combos = _sweep_overrides(path)
    for combo in combos:  # every grid point (or listed value, or range end) type-checks
        to_config(_compose([*combo, f"base.cache_dir={cache_dir}", *_tiny(combo)]))


# budgets.yaml's trials run for real through the sweep engine (test_sweep_runs_offline_and_resumes,
# about 1 min) and one trial of each other file (about 15 s each on 2 cores), with `make test-slow`
@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in LAUNCH if p != BUDGETS], ids=lambda p: p.name)
def test_launch_files_run_a_trial(path, tmp_path, cache_dir):
    from omegaconf import OmegaConf

    from autocomp.run import run

    spec = load_spec(path)
    combos = _sweep_overrides(path)
    cfg = _compose([*combos[0], f"base.cache_dir={cache_dir}", *_tiny(combos[0]), FEW_TECHNIQUES])
    metrics = run(
        to_config(cfg), tmp_path, OmegaConf.to_container(cfg, resolve=True), show_progress=False
    )
    section, key = spec["metric"]["name"].split("/")  # a top-level key of the wandb summary
    assert isinstance(metrics[section][key], float)


def _records(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "sweep.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sweep_runs_offline_and_resumes(tmp_path, cache_dir):
    # budgets.yaml at seed 0 only: its first two budgets then share the cached base model (the
    # cache key holds the seed; a seed-1 trial would train its own, +20 s here).
    spec = yaml.safe_load(BUDGETS.read_text())
    spec["parameters"]["seed"] = {"values": [0]}
    (spec_file := tmp_path / "budgets.yaml").write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "sweep"
    argv = [sys.executable, "-m", "autocomp.sweep", str(spec_file), "--count", "2",
            "--dir", str(sweep_dir), *OFFLINE_TINY, f"base.cache_dir={cache_dir}"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "online"}  # the engine must force offline all the same
    first = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    records = _records(sweep_dir)
    assert [r["state"] for r in records] == ["finished", "finished"]
    assert [r["overrides"] for r in records] == [  # the grid's first points, in its order
        ["reward.max_latency_frac=0.2", "seed=0"],
        ["reward.max_latency_frac=0.3", "seed=0"],
    ]
    for r in records:  # each trial's metric, logged to its own offline wandb run
        trial = sweep_dir / r["key"]
        (run_file,) = trial.glob("wandb/offline-run-*/run-*.wandb")
        summary, history = read_run(run_file)
        expected = json.loads((trial / "metrics.json").read_text())["compressed"]["test_accuracy"]
        assert summary["compressed/test_accuracy"] == expected
        assert r["summary_metrics"] == {"compressed/test_accuracy": expected}
        assert r["run_file"] == str(run_file) and history and "_step" in history[-1]
        config = json.loads((trial / "run.json").read_text())["config"]
        assert config["logger"]["mode"] == "offline" and config["seed"] == r["config"]["seed"]
        assert config["reward"]["max_latency_frac"] == r["config"]["reward.max_latency_frac"]
    table = (sweep_dir / "sweep.md").read_text()
    best = max(records, key=lambda r: r["summary_metrics"]["compressed/test_accuracy"])
    rows = [line for line in table.splitlines() if line.startswith("| trial-")]
    assert len(rows) == 2 and rows[0].startswith(f"| {best['key']} |")

    again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_records(sweep_dir)) == 2 and not (sweep_dir / "trial-002").exists()


FAKE = """
method: grid
command:
  - ${env}
  - ${interpreter}
  - -c
  - import sys; sys.exit(FAIL)
  - logger.mode=online
  - ${args_no_hyphens}
parameters:
  a: {values: [1, 2, 3]}
  b: {values: [x, y]}
"""


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec_file = tmp_path / "fake.yaml"  # trials are `python -c`: exit 3 where b=y, else 0
    spec_file.write_text(FAKE.replace("FAIL", "3 if 'b=y' in sys.argv else 0"))
    status = main([str(spec_file), "--count", "3", "--dir", str(tmp_path / "s"), "c=1"])
    records = _records(tmp_path / "s")
    assert status == 1 and [r["state"] for r in records] == ["finished", "failed", "finished"]
    failed = records[1]
    assert failed["exit_status"] == 3 and failed["overrides"] == ["a=1", "b=y"]
    assert Path(failed["log"]).is_file() and "exit status 3" in failed["error"]
    assert "failed" in (tmp_path / "s" / "sweep.md").read_text()


def test_resume_continues_the_grid_and_retries_failed_points(tmp_path):
    spec = yaml.safe_load(FAKE)
    seen = []

    def runner(argv, log_path):  # the first try of a=1 b=y fails
        seen.append(argv[argv.index("-c") + 3 : -1])
        return int(seen[-1] == ["a=1", "b=y"] and len(seen) == 2)

    run_sweep(spec, tmp_path, 3, runner=runner)
    assert [r["state"] for r in _records(tmp_path)] == ["finished", "failed", "finished"]
    run_sweep(spec, tmp_path, 3, runner=runner)  # two finished: one more, the failed point
    assert seen[-1] == ["a=1", "b=y"] and len(seen) == 4
    run_sweep(spec, tmp_path, 3, runner=runner)  # three finished: nothing to do
    assert len(seen) == 4
    records = run_sweep(spec, tmp_path, runner=runner)  # no count: the rest of the grid
    finished = [r["overrides"] for r in records if r["state"] == "finished"]
    grid = [[f"a={a}", f"b={b}"] for a in (1, 2, 3) for b in "xy"]
    assert len(seen) == 7 and sorted(finished) == grid
    assert len({r["key"] for r in records}) == len(records) == 7


def test_trial_command_line_is_the_files_command_forced_offline(tmp_path):
    spec = load_spec(BUDGETS)
    values = {"reward.max_latency_frac": np.float64(0.3), "seed": 1}
    argv = trial_argv(spec, values, ["base.epochs=1"], tmp_path / "t")
    assert argv == [sys.executable, "-m", "autocomp.train", "logger.mode=offline",
                    "reward.max_latency_frac=0.3", "seed=1", "base.epochs=1",
                    f"hydra.run.dir={tmp_path / 't'}"]  # fmt: skip
    assert [hydra_value(v) for v in (np.float64(1e-3), True, None, [1, "a"])] == [
        "0.001",
        "true",
        "null",
        "[1,a]",
    ]


@pytest.mark.parametrize(
    "change,args,expected",
    [
        (None, ["missing.yaml"], "not found"),
        ("command", ["SPEC"], "no `command` list"),
        ("method", ["SPEC"], "set `method:` to one of"),
        ("metric", ["SPEC"], "method=bayes needs `metric"),
        (None, ["SPEC", "seed=3"], "override seed=3 clashes"),
        (None, ["SPEC", "--", "--count", "1"], "--count is not a Hydra override"),
        ("random", ["SPEC"], "pass --count N"),
    ],
)
def test_bad_input_is_one_clear_line_and_status_2(tmp_path, caplog, change, args, expected):
    spec = yaml.safe_load(BUDGETS.read_text())
    if change == "command":
        del spec["command"]
    elif change == "metric":
        spec["method"] = "bayes"
        del spec["metric"]
    elif change:
        spec["method"] = {"method": "gird", "random": "random"}[change]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    argv = [str(path) if a == "SPEC" else a for a in args]
    with caplog.at_level("ERROR"):
        status = main([*argv[:1], "--dir", str(tmp_path / "s"), *argv[1:]])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert status == 2 and len(errors) == 1 and expected in errors[0]
    assert not (tmp_path / "s" / "sweep.jsonl").exists()
