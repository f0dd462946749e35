"""Greedy (equal-slope) agent: the selection rule by hand, the toy optimum and the real
environment's tables (resuming: tests/test_agents.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.greedy import GreedyConfig, make_trainer
from agents.greedy.selection import lambda_grid, select, select_many, van_der_corput_order
from autocomp.search.agent import EPISODE_KEYS
from envs.toy import ToyEnv

# The default ToyEnv (4 layers, 3 techniques, 4 ratios): its cost table is zero, so every
# multiplier gives the same plan and the test shows the plumbing (tables, sweep, evaluation,
# Best), not a search; 64 plans in 2 chunks of 4 steps of 8 are enough for the resume test.
CONFIG = GreedyConfig(episodes=64, batch_episodes=8, steps_per_chunk=4)


def test_selection_by_hand():
    # Layer 0: all allowed; layer 1: (1, 1) masked (its -1 would win if it were not).
    s = np.array([[[0.0, 0.5], [0.125, 0.75]], [[0.0, 0.0], [0.5, -1.0]]], np.float32)
    c = np.array([[[1.0, 0.5], [0.5, 0.125]], [[1.0, 0.25], [0.5, 0.0]]], np.float32)
    allowed = np.array([[[1, 1], [1, 1]], [[1, 1], [1, 0]]], bool)
    # Layer 0's scores s + lam c at (0,0) (0,1) (1,0) (1,1):
    #   lam 0:     0      .5     .125   .75     -> (0, 0)
    #   lam 1/8:   .125   .5625  .1875  .765625 -> (0, 0)
    #   lam 1/4:   .25    .625   .25    .78125  -> tie (0,0)/(1,0): the cheaper (1, 0)
    #   lam 1/2:   .5     .75    .375   .8125   -> (1, 0)
    #   lam 8:     8      4.5    4.125  1.75    -> (1, 1)
    # Layer 1: (0,0) and (0,1) tie at lam 0 (the cheaper (0, 1) wins), and (0, 1) wins after.
    expected0 = {0.0: (0, 0), 0.125: (0, 0), 0.25: (1, 0), 0.5: (1, 0), 8.0: (1, 1)}
    for lam, action in expected0.items():
        plan = np.asarray(select(s, c, allowed, np.float32(lam)))
        np.testing.assert_array_equal(plan, [action, (0, 1)], err_msg=f"lambda={lam}")
        assert plan.dtype == np.int32


def test_lambda_sweep_is_coarse_to_fine():
    np.testing.assert_array_equal(van_der_corput_order(8), [0, 4, 2, 6, 1, 5, 3, 7])
    np.testing.assert_array_equal(van_der_corput_order(5), [0, 4, 2, 1, 3])
    np.testing.assert_array_equal(np.sort(van_der_corput_order(37)), np.arange(37))
    grid = lambda_grid(6, 1e-2, 1e2)
    np.testing.assert_allclose(grid, [0.0, 1e-2, 1e-1, 1.0, 1e1, 1e2], rtol=1e-6)
    assert grid.dtype == np.float32


def _search(trainer, params, state=None, chunks=None):
    state = trainer.init(jax.random.key(0)) if state is None else state
    out = []
    for _ in range(trainer.num_chunks if chunks is None else chunks):
        state, metrics = trainer.run_chunk(state, params)
        out.append(jax.device_get(metrics))
    return state, out


def test_finds_toy_optimum_and_chunk_metrics_have_the_contract_shapes():
    env = ToyEnv()
    params = env.make_params(seed=0)
    trainer = make_trainer(CONFIG, env)
    assert (trainer.num_chunks, trainer.episodes_per_chunk) == (2, 32)
    state, chunks = _search(trainer, params)
    optimum = env.optimum(params)
    np.testing.assert_array_equal(trainer.policy(state, params), optimum)
    n_l = env.spec.num_steps
    for metrics in chunks:
        assert set(EPISODE_KEYS) <= set(metrics)
        assert metrics["plan"].shape == (4, 8, n_l, 2)
        for k in (*EPISODE_KEYS[1:], "lambda", "projected_layers"):
            assert metrics[k].shape == (4, 8), k
    # lambda = 0 comes first (the least-error plan: the toy optimum), then the grid's middle.
    first = chunks[0]
    assert first["lambda"][0, 0] == 0.0
    np.testing.assert_array_equal(first["plan"][0, 0], optimum)
    lams = np.concatenate([m["lambda"].ravel() for m in chunks])
    np.testing.assert_allclose(np.sort(lams), lambda_grid(64, 1e-3, 1e3))
    np.testing.assert_allclose(lams[1], 1.0, rtol=0.2)  # the log grid's middle


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="agent.episodes"):
        GreedyConfig(episodes=4, batch_episodes=8)
    with pytest.raises(ValueError, match="agent.lambda_min"):
        GreedyConfig(lambda_min=10.0, lambda_max=1.0)
    with pytest.raises(ValueError, match="agent.steps_per_chunk"):
        GreedyConfig(steps_per_chunk=0)


def test_compression_env_tables_and_one_chunk(prepared):
    """The real environment of the tiny test config: the tables' shapes, finite values, the
    keep action's costs summing to the weighted share of the base model outside ``fixed``, and
    one chunk of the sweep (compiles, projects onto the latency budget, keeps an allowed plan)."""
    from autocomp.run import build_env
    from autocomp.techniques import identity_index

    env, params = build_env(prepared)
    s, c = jax.jit(env.greedy_tables)(params)
    spec = env.spec
    assert s.shape == c.shape == (spec.num_steps, spec.num_techniques, spec.num_ratios)
    s, c, allowed = np.asarray(s), np.asarray(c), np.asarray(params.allowed)
    assert np.isfinite(s).all() and np.isfinite(c).all()
    assert (s[allowed] >= 0).all() and (c[allowed] > 0).all()
    keep = identity_index(env.techniques)
    np.testing.assert_allclose(s[:, keep, 0], 0.0, atol=1e-6)
    base, fixed = np.asarray(params.reward.base), np.asarray(params.fixed[:3])
    weights = np.asarray(params.reward.weights)
    np.testing.assert_allclose(
        c[:, keep, 0].sum(), np.sum(weights * (base - fixed) / base), rtol=1e-4
    )
    trainer = make_trainer(GreedyConfig(episodes=16, batch_episodes=8, steps_per_chunk=2), env)
    state, metrics = trainer.run_chunk(trainer.init(jax.random.key(0)), params)
    assert metrics["plan"].shape == (2, 8, spec.num_steps, 2)
    assert not np.asarray(metrics["violation"]).any()  # the budget masks project every plan
    plan = trainer.policy(state, params)
    assert allowed[np.arange(spec.num_steps), plan[:, 0], plan[:, 1]].all()
    assert np.isfinite(float(state.best.reward))


def test_plans_the_greedy_fit_accepts_run_in_budget(prepared):
    """``greedy_fits`` is an upper-bound estimate: every equal-slope plan it accepts runs
    unprojected and in budget; the sweep crosses its line; and the compressor-critic's greedy
    start aims its first multipliers at that line (the first plan it accepts is among them)."""
    from agents.compressor_critic.train import _start_plans
    from autocomp.run import build_env

    env, params = build_env(prepared)
    s, c = env.greedy_tables(params)
    lams = jnp.asarray(lambda_grid(1024, 1e-3, 1e3))  # the grid the greedy start uses
    plans = select_many(s, c, params.allowed, lams)
    fits = np.asarray(env.greedy_fits(params, plans))
    assert fits.any() and not fits.all()
    metrics = jax.device_get(env.evaluate_plans(plans[fits], params))
    assert not metrics["violation"].any()
    np.testing.assert_array_equal(metrics["plan"], np.asarray(plans)[fits])

    near_plans = np.asarray(_start_plans(env, params, 4, np.zeros(0, np.float32)))
    assert len({p.tobytes() for p in near_plans}) == 4  # distinct plans
    line = np.asarray(plans)[np.argmax(fits)]
    assert any(np.array_equal(p, line) for p in near_plans)
