"""The agent comparison's measures by hand, and its report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autocomp.search.compare import (
    best_curve,
    evals_to_reach,
    hypervolume,
    summarize,
    target,
    write_report,
)


def test_best_curve_skips_over_budget_plans_and_holds_after_an_early_stop():
    reward = np.array([0.5, 0.9, 0.7, 1.2])
    violation = np.array([True, False, False, True])
    np.testing.assert_allclose(
        best_curve(reward, violation, 6), [math.nan, 0.9, 0.9, 0.9, 0.9, 0.9]
    )
    np.testing.assert_allclose(best_curve(reward, violation, 2), [math.nan, 0.9])


def test_hypervolume_by_hand():
    # (acc, lat): (0.9, 0.5) dominates [0.5, 1] x [0, 0.9] = 0.45; (0.6, 0.2) adds
    # [0.2, 0.5] x [0, 0.6] = 0.18; (0.5, 0.4) is dominated; a plan at the base latency adds 0.
    acc = np.array([0.9, 0.6, 0.5, 0.99])
    lat = np.array([0.5, 0.2, 0.4, 1.0])
    assert hypervolume(acc, lat) == pytest.approx(0.45 + 0.18)
    assert hypervolume(acc[:1], lat[:1]) == pytest.approx(0.45)
    assert hypervolume(np.zeros(0), np.zeros(0)) == 0.0


def test_evaluations_to_reach_and_the_target():
    curve = np.array([math.nan, 0.2, 0.5, 0.96, 1.0])
    assert target(1.0) == pytest.approx(0.95) and target(-2.0) == pytest.approx(-2.1)
    assert evals_to_reach(curve, 0.95) == 4.0
    assert math.isnan(evals_to_reach(curve, 1.5))


def _run(agent, seed, curve, hv):
    return {
        "agent": agent, "seed": seed, "evaluations": len(curve), "curve": curve,
        "best_reward": curve[-1], "hypervolume": hv, "test_accuracy": 0.9, "wall_s": 1.0,
    }  # fmt: skip


def test_summary_table_csv_and_plot(tmp_path):
    runs = [
        _run("a", 0, [0.1, 0.5, 1.0], 0.6),
        _run("a", 1, [0.2, 0.9, 0.9], 0.5),
        _run("b", 0, [math.nan, 0.3, 0.4], 0.2),
    ]
    rows = {r["agent"]: r for r in summarize(runs)}
    assert rows["a"]["best_reward_mean"] == pytest.approx(0.95)
    assert rows["a"]["best_reward_std"] == pytest.approx(np.std([1.0, 0.9], ddof=1))
    # target = 1.0 - 0.05 = 0.95: seed 0 reaches it at evaluation 3, seed 1 never
    assert rows["a"]["evals_to_95_mean"] == 3.0 and rows["a"]["reached_95"] == "1/2"
    assert rows["b"]["reached_95"] == "0/1" and rows["b"]["hypervolume_mean"] == 0.2
    paths = write_report(tmp_path, runs, "toy")
    md = paths["md"].read_text()
    assert "| a | 2 | 3 | 0.9500 ± 0.0707 |" in md
    assert paths["csv"].read_text().splitlines()[0].startswith("agent,seeds,evaluations")
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # about 70 s on 2 cores: `make test-slow`
def test_bench_agents_runs_every_agent_and_a_rerun_continues(tmp_path, cache_dir, monkeypatch):
    """Two agents on the default experiment (tiny settings); the second call finds both runs
    in runs.jsonl and runs nothing again, and a lost run (a killed benchmark) is redone."""
    import json

    import autocomp.run.compare as compare

    monkeypatch.setenv("AUTOCOMP_CACHE", cache_dir)
    overrides = ["base.epochs=3", "finetune.epochs=1", "env.distill.steps=0", "logger=none"]
    out = tmp_path / "bench"
    paths = compare.compare_agents(overrides, out, 64, 1, ["random", "uniform"], True, False)
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["agent"] for r in runs] == ["random", "uniform"]
    for r in runs:
        assert len(r["curve"]) == 64 and 0.0 < r["hypervolume"] < 1.0
        assert 0.0 < r["test_accuracy"] <= 1.0 and r["evaluated"] <= 64
    assert "| random | 1 | 64 |" in paths["md"].read_text()

    def no_rerun(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(compare, "run_one", no_rerun)
    compare.compare_agents(overrides, out, 64, 1, ["random", "uniform"], True, False)
    (out / "runs.jsonl").write_text(json.dumps(runs[0]) + "\n")  # uniform's record lost
    monkeypatch.undo()
    monkeypatch.setenv("AUTOCOMP_CACHE", cache_dir)
    compare.compare_agents(overrides, out, 64, 1, ["random", "uniform"], True, False)
    again = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["agent"] for r in again] == ["random", "uniform"]
    assert again[1]["curve"] == runs[1]["curve"]  # the same search again


def test_atomic_outputs_are_readable_like_any_written_file(tmp_path):
    import os
    import stat

    from autocomp.io import atomic_write_text

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
