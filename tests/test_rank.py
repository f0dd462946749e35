"""The score-against-fine-tuned-accuracy benchmark: its choice of plans, and a whole run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autocomp.run.rank import spread
from autocomp.workflow.pipeline import Selection


def _selection(acc, lat, violation) -> Selection:
    n = len(acc)
    costs = np.zeros((n, 5))
    costs[:, 0] = lat
    plans = np.arange(n)[:, None, None] * np.ones((1, 2, 2), int)
    reward = np.asarray(acc, float)
    return Selection(plans, reward, np.asarray(acc, float), costs, np.asarray(violation), None, 0)


def test_spread_takes_half_along_the_front_and_half_over_in_budget_ranks():
    # front (accuracy rises with latency): 0, 2, 4, 6, 8; in budget: latency < 5
    acc = np.array([0.1, 0.05, 0.3, 0.2, 0.5, 0.4, 0.7, 0.6, 0.9, 0.8])
    lat = np.arange(10.0)
    sel = _selection(acc, lat, lat >= 5)
    picked = spread(sel, 6)
    assert picked[:3] == [0, 4, 8]  # front ends and middle, by latency
    assert picked[3:] == [2, 3, 1]  # the rest in budget, best, middle and worst score
    many = spread(sel, 40)  # the whole front and every in-budget plan, none twice
    assert sorted(many) == [0, 1, 2, 3, 4, 6, 8]


@pytest.mark.slow  # about a minute on 2 cores: `make test-slow`
def test_bench_rank_fine_tunes_plans_and_a_rerun_continues(tmp_path, cache_dir, monkeypatch):
    import autocomp.run.rank as rank

    monkeypatch.setenv("AUTOCOMP_CACHE", cache_dir)
    overrides = ["base.epochs=3", "finetune.epochs=1", "env.distill.steps=0", "logger=none",
                 "agent.episodes=64", "agent.batch_episodes=16"]  # fmt: skip
    out = tmp_path / "rank"
    result = rank.rank_plans(overrides, out, plans=4, short=256, show_progress=False)
    records = [json.loads(line) for line in (out / "plans.jsonl").read_text().splitlines()]
    assert result["plans"] == len(records) == 4
    assert all(0.0 <= r[k] <= 1.0 for r in records for k in ("score", "short", "finetuned"))
    assert -1.0 <= result["spearman_score"] <= 1.0
    assert all(f"spearman_{k}" in result for k in ("corrected", "adaptive", "short"))
    assert "| `score` |" in (out / "rank.md").read_text()
    assert (out / "rank.png").read_bytes()[:4] == b"\x89PNG"

    def no_rerun(*args, **kwargs):
        raise AssertionError("a finished plan was fine-tuned again")

    monkeypatch.setattr(rank.pipeline, "finetune_compressed", no_rerun)
    assert rank.rank_plans(overrides, out, plans=4, short=256, show_progress=False) == result
