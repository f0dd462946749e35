"""Environment tests: traces once, pytree state, hand-computed reward, masks are never broken."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autocomp.config import LayerConfig, ModelConfig, RewardConfig
from autocomp.devices.tables import load_profile
from autocomp.models.layers import compressible_layers
from autocomp.models.ops import base_ops, init_params
from autocomp.search.plan import prepare_aux
from autocomp.search.reward import make_reward_params
from autocomp.search.space import CHANNELS, build_search_space, plan_cost
from autocomp.techniques import make_techniques
from envs.compression import CompressionEnv, EnvState


def _random_actions(key, mask_shape, n):
    t = jax.random.randint(key, (n,), 0, mask_shape[0])
    r = jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, mask_shape[1])
    return jnp.stack([t, r], -1).astype(jnp.int32)


@pytest.fixture(scope="module")
def env_and_params(prepared):
    from autocomp.run import build_env

    return build_env(prepared)


def test_step_traces_once_and_state_is_pytree_of_arrays(env_and_params):
    env, params = env_and_params

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state, action):
        return env.step(key, state, action, params)

    obs, state = env.reset(jax.random.key(0), params)
    for i in range(3 * env.spec.num_steps):
        if int(state.layer) >= env.spec.num_steps:
            obs, state = env.reset(jax.random.key(i), params)
        action = jnp.array([i % env.spec.num_techniques, (i * 3) % env.spec.num_ratios], jnp.int32)
        obs, state, reward, done, info = step(jax.random.key(i), state, action)
        leaves = jax.tree.leaves(state)
        assert all(isinstance(x, jax.Array) for x in leaves)
    assert isinstance(state, EnvState)


def test_masked_actions_are_never_applied(env_and_params):
    env, params = env_and_params
    n = 64
    keys = jax.random.split(jax.random.key(1), n)
    obs, state = env.batch_reset(keys, params)
    step = jax.jit(env.batch_step)
    for layer in range(env.spec.num_steps):
        actions = _random_actions(jax.random.key(layer), obs.action_mask.shape[1:], n)
        mask = np.asarray(obs.action_mask)
        obs, state, reward, done, info = step(keys, state, actions, params)
        applied = np.asarray(info.applied_action)
        assert mask[np.arange(n), applied[:, 0], applied[:, 1]].all()
        np.testing.assert_array_equal(np.asarray(state.plan[:, layer]), applied)
        legal = mask[np.arange(n), actions[:, 0], actions[:, 1]]
        np.testing.assert_array_equal(applied[legal], np.asarray(actions)[legal])
    # The latency budget is a hard constraint: every finished plan meets it.
    budget = float(params.reward.budgets[0])
    assert np.all(np.asarray(info.latency_ms) <= budget * (1 + 1e-5))
    assert not np.asarray(info.violation).any()


def test_batch_step_equals_vmapped_step(env_and_params):
    env, params = env_and_params
    n = 8
    keys = jax.random.split(jax.random.key(2), n)
    obs_b, state_b = env.batch_reset(keys, params)
    obs_v, state_v = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    bstep = jax.jit(env.batch_step)
    for layer in range(env.spec.num_steps):
        actions = _random_actions(jax.random.key(10 + layer), obs_b.action_mask.shape[1:], n)
        obs_b, state_b, r_b, d_b, i_b = bstep(keys, state_b, actions, params)
        obs_v, state_v, r_v, d_v, i_v = vstep(keys, state_v, actions, params)
        chex.assert_trees_all_close(
            (obs_b, state_b, r_b, d_b, i_b), (obs_v, state_v, r_v, d_v, i_v), atol=1e-5
        )


def _two_layer_env():
    """A 2-layer MLP on 2 examples with a hand-written cost table."""
    cfg = ModelConfig(
        "mlp",
        [1, 1, 4],
        2,
        [
            LayerConfig("flatten"),
            LayerConfig("dense", "h", 3),
            LayerConfig("dense", "out", 2, activation="none"),
        ],
    )
    ops = base_ops(cfg)
    layers = compressible_layers(ops, (1, 1, 4))
    techs = make_techniques(["keep", "filter"])
    ratios = [0.0, 0.5]
    space = build_search_space(
        ops, layers, techs, ratios, load_profile("analytic_cortex_a76"), (1, 1, 4)
    )
    # Overwrite with a hand table: channels (latency, energy, bytes, params, macs).
    costs = np.full_like(space.costs, np.inf)
    costs[0, 0, 0, 0] = [2.0, 4.0, 100, 25, 12]  # h keep
    costs[0, 1, 1, 0] = [1.0, 1.0, 60, 15, 8]  # h filter 0.5
    costs[1, 0, 0, 0] = [1.0, 2.0, 40, 10, 6]  # out keep, full inputs
    costs[1, 0, 0, 1] = [0.5, 1.0, 20, 5, 4]  # out keep, half inputs
    space = dataclasses.replace(
        space, costs=costs, fixed=np.zeros(5), base=np.array([3.0, 6.0, 140, 35, 18])
    )
    params = init_params(ops, (1, 1, 4), jax.random.key(0))
    return ops, layers, techs, space, params


def test_reward_equals_hand_computation():
    ops, layers, techs, space, params = _two_layer_env()
    env = CompressionEnv(ops, space)
    x = np.random.default_rng(0).random((2, 1, 1, 4), dtype=np.float32)
    y = np.array([0, 1], np.int32)
    rcfg = RewardConfig(
        accuracy_weight=2.0,
        latency_weight=0.5,
        energy_weight=0.25,
        size_weight=0.125,
        violation_penalty=10.0,
        max_energy_mj=2.5,
    )
    base_acc = 0.5
    rp = make_reward_params(rcfg, (3.0, 6.0, 140.0), base_acc)
    ep = env.make_params(params, prepare_aux(layers, params, techs), x, y, rp)
    plan = jnp.array([[1, 1], [0, 0]], jnp.int32)  # filter h at 0.5, keep out
    obs, state = env.reset(jax.random.key(0), ep)
    assert bool(obs.action_mask[1, 1]) and not bool(obs.action_mask[0, 0])  # keep breaks energy
    for layer in range(2):
        obs, state, reward, done, info = env.step(jax.random.key(0), state, plan[layer], ep)
    acc = float(env.accuracy(plan, ep))
    latency, energy, size = 1.0 + 0.5, 1.0 + 1.0, 60 + 20
    expected = (
        2.0 * (acc - base_acc)
        + 0.5 * (1 - latency / 3.0)
        + 0.25 * (1 - energy / 6.0)
        + 0.125 * (1 - size / 140)
    )
    assert bool(done)
    np.testing.assert_allclose(float(reward), expected, rtol=1e-5)
    np.testing.assert_allclose(
        [info.latency_ms, info.energy_mj, info.bytes], [latency, energy, size]
    )
    np.testing.assert_allclose(plan_cost(space, np.asarray(plan))[:3], [latency, energy, size])
    # The keep/keep plan breaks the energy budget (6 > 2.5): a masked action is projected.
    obs, state = env.reset(jax.random.key(0), ep)
    obs, state, reward, done, info = env.step(jax.random.key(0), state, jnp.array([0, 0]), ep)
    np.testing.assert_array_equal(info.applied_action, [1, 1])


def test_costs_of_plan_match_materialized_model(prepared, env_and_params):
    """The table's cost of a plan equals the priced ops of its materialized model."""
    from autocomp.workflow.pipeline import compress

    env, params = env_and_params
    names = [t.name for t in prepared.techniques]
    plan = np.array(
        [
            [names.index("filter"), 2],
            [names.index("svd"), 3],
            [names.index("filter"), 4],
            [names.index("svd"), 1],
        ],
        np.int32,
    )
    comp = compress(prepared, plan, lambda x: env.logits(jnp.asarray(plan), params, x))
    from autocomp.workflow.pipeline import model_metrics

    metrics = model_metrics(prepared, comp.ops, comp.params, 0.0)
    table = dict(zip(CHANNELS, plan_cost(prepared.space, plan), strict=False))
    for key in ("latency_ms", "energy_mj"):
        np.testing.assert_allclose(metrics[key], table[key], rtol=1e-9)
    for key in ("params", "bytes", "macs"):
        assert metrics[key] == table[key]
    assert comp.check["prediction_agreement"] == 1.0


def test_obs_dim_matches_spec(env_and_params):
    env, params = env_and_params
    obs, _ = env.reset(jax.random.key(0), params)
    assert obs.features.shape == (env.spec.obs_dim,)
    assert obs.action_mask.shape == (env.spec.num_techniques, env.spec.num_ratios)
    assert np.isfinite(np.asarray(obs.features)).all()


def test_infeasible_budget_allows_the_cheapest_and_flags_violation(env_and_params):
    env, params = env_and_params
    tight = params._replace(
        reward=params.reward._replace(budgets=params.reward.budgets.at[0].set(1e-6))
    )
    keys = jax.random.split(jax.random.key(3), 4)
    obs, state = env.batch_reset(keys, tight)
    step = jax.jit(env.batch_step)
    for layer in range(env.spec.num_steps):
        assert np.asarray(obs.action_mask).any(axis=(1, 2)).all()
        actions = _random_actions(jax.random.key(layer), obs.action_mask.shape[1:], 4)
        obs, state, reward, done, info = step(keys, state, actions, tight)
    assert np.asarray(info.violation).all()
    assert np.all(np.asarray(reward) < 0)


@pytest.fixture(scope="module")
def raced(prepared, env_and_params):
    """The tiny LeNet's environment racing on 64 validation images (keep 4 of 16), 16 plans
    of random actions, and their scores on the 64 images alone and on the whole split."""
    env, params = env_and_params
    race = CompressionEnv(prepared.ops, prepared.space, race=(64, 0.25))
    actions = [
        _random_actions(
            jax.random.key(20 + layer), (env.spec.num_techniques, len(params.ratios)), 16
        )
        for layer in range(env.spec.num_steps)
    ]
    plans = env.evaluate_plans(jnp.stack(actions, 1), params)["plan"]
    head = params._replace(x_val=params.x_val[:64], y_val=params.y_val[:64])
    scores = {
        "raced": race.evaluate_plans(plans, params),
        "whole": env.evaluate_plans(plans, params),
        "head": env.evaluate_plans(plans, head),
        "forced": race.evaluate_plans(plans, params, True),
    }
    return race, params, plans, jax.device_get(scores)


def test_racing_finishes_the_best_quarter_of_a_batch_on_the_whole_split(raced):
    _, params, _, s = raced
    assert params.x_val.shape[0] > 64
    kept = np.argsort(-s["head"]["reward"], kind="stable")[:4]
    expected = s["head"]["accuracy"].copy()
    expected[kept] = s["whole"]["accuracy"][kept]
    np.testing.assert_allclose(s["raced"]["accuracy"], expected, atol=1e-6)
    assert not np.allclose(s["raced"]["accuracy"], s["whole"]["accuracy"])  # it did race
    # rewards follow from the raced accuracy; full=True scores everything on the whole split
    chex.assert_trees_all_close(s["forced"], s["whole"], atol=1e-6)
    np.testing.assert_allclose(
        s["raced"]["reward"] - s["whole"]["reward"],
        (s["raced"]["accuracy"] - s["whole"]["accuracy"]) * float(params.reward.accuracy_weight),
        atol=1e-5,
    )
    # bench search's ceiling figure: the same plans on either half of the split
    from autocomp.search.benchmarks import split_half_accuracy

    race, _, plans, _ = raced
    first, second = split_half_accuracy(race, params, np.asarray(plans))
    n, half = params.x_val.shape[0], params.x_val.shape[0] // 2
    np.testing.assert_allclose((half * first + (n - half) * second) / n, s["whole"]["accuracy"],
                               atol=1e-5)  # fmt: skip
    assert not np.allclose(first, second)  # two different halves
    # the same figures on an agent's chunk ([U, B] steps of plans), against the whole split
    from scipy.stats import spearmanr

    from autocomp.search.benchmarks import agent_race_figures

    chunk = {k: np.reshape(v, (2, 8, *np.shape(v)[1:])) for k, v in s["raced"].items()}
    figures = agent_race_figures(race, params, [chunk])
    assert figures["agent_plans"] == 16
    rho = spearmanr(s["raced"]["accuracy"], s["whole"]["accuracy"]).statistic
    np.testing.assert_allclose(figures["agent_race_spearman_accuracy"], rho, atol=1e-9)


def test_selection_after_racing_rescores_until_the_chosen_plan_is_exact(prepared, raced):
    from autocomp.search.pareto import pareto_front
    from autocomp.workflow.pipeline import select_plans

    race, params, plans, s = raced
    history = s["raced"]
    calls = []

    def rescore(batch):
        calls.append(len(batch))
        return race.full_scorer(params)(batch)

    sel = select_plans(prepared.space, history, rescore, batch=4)
    assert calls and set(calls) == {4}  # padded to one compiled batch size
    whole = dict(zip(map(bytes, np.asarray(plans)), s["whole"]["reward"], strict=True))
    exact = np.isclose(sel.reward, [whole[bytes(p)] for p in sel.plans], atol=1e-6)
    candidates = np.flatnonzero(~sel.violation)
    assert exact[sel.chosen]
    assert sel.reward[sel.chosen] >= sel.reward[candidates].max() - 1e-9
    assert exact[pareto_front(sel.accuracy, sel.costs[:, :1])].all()
    assert select_plans(prepared.space, history).reward.tolist() != sel.reward.tolist()


def test_race_config_names_the_fix():
    from autocomp.config import ConfigError, RaceConfig

    with pytest.raises(ConfigError, match="env.race.examples=0 turns racing off"):
        RaceConfig(examples=100, keep=0.0)


@pytest.mark.slow  # about 20 s on 2 cores: `make test-slow`
def test_rerank_chooses_by_accuracy_after_a_short_fine_tuning(prepared, raced):
    import dataclasses

    from autocomp.workflow import pipeline

    race, params, _, s = raced
    cfg = dataclasses.replace(prepared.config.finetune, rerank=3, rerank_examples=128)
    p = dataclasses.replace(prepared, config=dataclasses.replace(prepared.config, finetune=cfg))
    sel = pipeline.select_plans(p.space, s["whole"])
    simulated = pipeline.plan_logits(race, params)
    new, rows = pipeline.rerank(p, sel, simulated)
    inside = np.flatnonzero(~sel.violation)
    top = inside[np.argsort(-sel.reward[inside], kind="stable")][:3]
    assert [r["plan"] for r in rows] == top.tolist()
    assert new.chosen == max(rows, key=lambda r: r["short_finetune_val_accuracy"])["plan"]
    c = pipeline.compress(p, sel.plans[new.chosen], simulated(sel.plans[new.chosen]))
    assert pipeline.short_finetune(p, c, 128) == pytest.approx(
        max(r["short_finetune_val_accuracy"] for r in rows)
    )  # deterministic
