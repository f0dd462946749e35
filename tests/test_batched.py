"""Many rewards in one compiled search (``autocomp.search.batched``) against separate searches."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from agents import AGENTS
from autocomp.search.batched import run_searches, vmap_params
from autocomp.search.loop import run_search
from autocomp.workflow.tracking import NullTracker
from envs.toy import ToyEnv

SMALL = {"batch_episodes": 16, "episodes": 64}  # every agent's config has these two fields


def _small(name: str):
    config = AGENTS[name].config()
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {k: v for k, v in SMALL.items() if k in fields}
    if "updates_per_chunk" in fields:
        changes["updates_per_chunk"] = 2
    if "steps_per_chunk" in fields:
        changes["steps_per_chunk"] = 2
    return dataclasses.replace(config, **changes)


def _separate(trainer, params, key):
    out = [run_search(trainer, p, key, NullTracker(), show_progress=False) for p in params]
    return [s for s, _, _ in out], [h for _, h, _ in out]


def test_vmap_params_stacks_only_what_differs():
    env = ToyEnv(num_layers=3)
    a, b = env.make_params(0), env.make_params(0)._replace(payoff=env.make_params(1).payoff)
    stacked, axes = vmap_params([a, b])
    assert axes.allowed is None and axes.payoff == 0
    assert stacked.payoff.shape == (2, *a.payoff.shape) and stacked.allowed.shape == a.allowed.shape


# every agent on the toy env in the default run (14 s); the real search below with `make test-slow`
@pytest.mark.parametrize("name", sorted(AGENTS))
def test_one_vmapped_search_equals_separate_searches_on_the_toy_env(name):
    """Each agent, three payoff tables, the same seed: the vmapped search evaluates the same plans
    with the same rewards as three separate searches and delivers the same plans."""
    env = ToyEnv(num_layers=4)
    base = env.make_params(0)
    params = [base._replace(payoff=env.make_params(s).payoff) for s in range(3)]
    trainer = AGENTS[name].make_trainer(_small(name), env)
    key = jax.random.key(3)
    states, histories, _ = run_searches(
        trainer, params, key, NullTracker(), ["a", "b", "c"], show_progress=False
    )
    alone_states, alone = _separate(trainer, params, key)
    for k in range(3):
        np.testing.assert_array_equal(histories[k]["plan"], alone[k]["plan"])
        np.testing.assert_allclose(histories[k]["reward"], alone[k]["reward"], rtol=1e-5)
        np.testing.assert_array_equal(
            trainer.policy(states[k], params[k]), trainer.policy(alone_states[k], params[k])
        )
    assert not np.array_equal(histories[0]["reward"], histories[1]["reward"])


@pytest.mark.slow  # 42 s on 2 cores; every agent's equivalence runs on the toy env above
def test_budget_sweep_on_a_real_search_chooses_what_separate_searches_choose(prepared):
    """Three latency budgets of the tiny real LeNet search, one program against three: the same
    plans are evaluated (or, where float rounding breaks a tie of the sampled actions, the
    delivered plans' rewards agree within rounding)."""
    from autocomp.run import build_env
    from autocomp.search.reward import make_reward_params

    env, base = build_env(prepared)
    params = [
        base._replace(
            reward=make_reward_params(
                dataclasses.replace(prepared.config.reward, max_latency_frac=frac),
                tuple(prepared.space.base[:3]),
                prepared.base_val_accuracy,
            )
        )
        for frac in (0.5, 0.7, 0.9)
    ]
    config = dataclasses.replace(prepared.config.agent, episodes=64)
    trainer = AGENTS["compressor_critic"].make_trainer(config, env)
    key = jax.random.key(0)
    states, histories, _ = run_searches(
        trainer, params, key, NullTracker(), ["0.5", "0.7", "0.9"], show_progress=False
    )
    alone_states, alone = _separate(trainer, params, key)
    for k in range(3):
        ours = trainer.policy(states[k], params[k])
        theirs = trainer.policy(alone_states[k], params[k])
        scored = env.evaluate_plans(np.stack([ours, theirs]), params[k])
        if not np.array_equal(ours, theirs):
            np.testing.assert_allclose(scored["reward"][0], scored["reward"][1], atol=1e-5)
        same = np.mean(np.all(histories[k]["plan"] == alone[k]["plan"], axis=(1, 2)))
        assert same > 0.9, f"budget {k}: only {same:.0%} of the evaluated plans agree"
    violations = [h["violation"].mean() for h in histories]
    assert violations[0] >= violations[2]  # a tighter budget is violated at least as often


def test_a_killed_vmapped_search_resumes_where_it_stopped(tmp_path):
    env = ToyEnv(num_layers=4)
    params = [env.make_params(s) for s in range(2)]
    trainer = AGENTS["compressor_critic"].make_trainer(_small("compressor_critic"), env)
    key, ckpt = jax.random.key(1), tmp_path / "search.msgpack"
    whole = run_searches(trainer, params, key, NullTracker(), ["a", "b"], show_progress=False)

    one = trainer._replace(num_chunks=1)  # stops after its first chunk, as a killed run would
    run_searches(one, params, key, NullTracker(), ["a", "b"], ckpt, "f", show_progress=False)
    resumed = run_searches(trainer, params, key, NullTracker(), ["a", "b"], ckpt, "f", False)
    for k in range(2):
        np.testing.assert_array_equal(resumed[1][k]["plan"], whole[1][k]["plan"])
        np.testing.assert_array_equal(resumed[1][k]["reward"], whole[1][k]["reward"])


@pytest.mark.slow  # a model per budget, about 40 s on 2 cores: `make test-slow`
def test_a_budget_sweep_run_writes_a_model_per_budget_and_the_front(tiny_config, tmp_path):
    """`sweep.max_latency_frac=[...]`: one search, then a finished run directory per budget (as a
    single run writes it) and the front over them; a second run redoes nothing."""
    from autocomp.config import SweepConfig
    from autocomp.run import run

    config = tiny_config(
        sweep=SweepConfig(max_latency_frac=[0.85, 0.95]),
        agent=dataclasses.replace(tiny_config().agent, episodes=32),
        finetune=dataclasses.replace(tiny_config().finetune, epochs=0),
    )
    metrics = run(config, tmp_path, {"reward": {}}, show_progress=False)
    labels = [r["label"] for r in metrics["sweep"]]
    assert labels == ["max_latency_frac=0.85", "max_latency_frac=0.95"]
    for row in metrics["sweep"]:
        one = tmp_path / "sweep" / row["label"]
        assert (one / "plan.json").is_file() and (one / "compressed_params.msgpack").is_file()
        single = json.loads((one / "metrics.json").read_text())
        assert single["compressed"]["latency_ms"] == row["latency_ms"]
        assert row["latency_ms"] <= row["budget_ms"] + 1e-6
        budget = row["max_latency_frac"] * single["base"]["latency_ms"]
        assert row["budget_ms"] == pytest.approx(budget, rel=1e-5)
    assert metrics["front"] and set(metrics["front"]) <= set(labels)
    assert (tmp_path / "sweep.png").stat().st_size > 0 and (tmp_path / "sweep.md").is_file()
    stamp = (tmp_path / "sweep" / labels[0] / "metrics.json").stat().st_mtime_ns
    again = run(config, tmp_path, {"reward": {}}, show_progress=False)
    assert again["sweep"] == metrics["sweep"]
    assert (tmp_path / "sweep" / labels[0] / "metrics.json").stat().st_mtime_ns == stamp


def test_front_of_keeps_the_rows_nothing_beats():
    from autocomp.run.sweep import front_of

    rows = [
        {"test_accuracy": 0.9, "latency_ms": 2.0},
        {"test_accuracy": 0.8, "latency_ms": 1.0},
        {"test_accuracy": 0.7, "latency_ms": 1.5},  # beaten by the second
        {"test_accuracy": 0.95, "latency_ms": 3.0},
    ]
    assert front_of(rows) == [1, 0, 3]


def test_sweep_repeating_a_value_is_refused():
    from autocomp.config import ConfigError, SweepConfig

    with pytest.raises(ConfigError, match="repeats a value"):
        SweepConfig(max_latency_frac=[0.3, 0.3])
