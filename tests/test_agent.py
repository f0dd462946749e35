"""Compressor-critic: losses by hand, and learning the known optimum of a toy environment."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.compressor_critic import CompressorCriticConfig, losses, make_trainer
from envs.toy import ToyEnv


def test_log_prob_and_entropy_by_hand():
    t_logits = jnp.array([0.0, jnp.log(3.0), 5.0])
    r_logits = jnp.zeros((3, 2))
    mask = jnp.array([[True, True], [True, False], [False, False]])  # technique 2 masked out
    logp, entropy = losses.action_log_prob_and_entropy(t_logits, r_logits, mask, jnp.array([1, 0]))
    # p(t) = [1/4, 3/4, 0]; p(r | t=1) = [1, 0]
    np.testing.assert_allclose(logp, np.log(0.75), rtol=1e-6)
    h_t = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    np.testing.assert_allclose(entropy, h_t, rtol=1e-5)


def test_pg_value_entropy_losses_by_hand():
    np.testing.assert_allclose(losses.policy_gradient_loss(jnp.log(0.5), 2.0), -2 * np.log(0.5))
    np.testing.assert_allclose(losses.value_loss(1.0, 3.0), 2.0)
    np.testing.assert_allclose(losses.entropy_loss(0.7), -0.7)
    np.testing.assert_allclose(losses.returns_to_go(jnp.array([0.0, 0.0, 2.0])), [2.0, 2.0, 2.0])
    grad = jax.grad(lambda lp: losses.policy_gradient_loss(lp, lp))(1.0)
    np.testing.assert_allclose(grad, -1.0)  # the advantage is a constant


def test_learns_toy_optimum():
    env = ToyEnv(num_layers=4, num_techniques=3, num_ratios=4)
    params = env.make_params(seed=0)
    # the default learning rate, entropy and risk-seeking share (top_share)
    # without the greedy start, which would queue the toy's optimum in the first update
    config = CompressorCriticConfig(
        episodes=3072, batch_episodes=32, updates_per_chunk=16, greedy_start=0
    )
    trainer = make_trainer(config, env)
    state, chunks = trainer.init(jax.random.key(0)), []
    for _ in range(trainer.num_chunks):
        state, metrics = trainer.run_chunk(state, params)
        chunks.append(jax.device_get(metrics))
    plan = trainer.policy(state, params)
    np.testing.assert_array_equal(plan, env.optimum(params))
    first, last = chunks[0]["reward"].mean(), chunks[-1]["reward"].mean()
    assert last > first


def test_array_annotations_are_checked_at_test_time():
    """conftest installs jaxtyping's import hook with beartype: a wrong shape at a public
    boundary is an error here, not a silent broadcast."""
    from jaxtyping import TypeCheckError

    from autocomp.config import RewardConfig
    from autocomp.search.reward import compute_reward, make_reward_params

    params = make_reward_params(RewardConfig(), (1.0, 1.0, 1.0), 0.9)
    compute_reward(params, jnp.float32(0.8), jnp.ones(3))
    with pytest.raises(TypeCheckError):
        compute_reward(params, jnp.float32(0.8), jnp.ones(4))


def test_queue_keeps_the_best_distinct_in_budget_plans():
    from agents.compressor_critic.train import Elite

    queue = Elite.empty(3, num_steps=2)
    plans = jnp.array([[[0, 1], [1, 0]], [[1, 1], [0, 0]], [[0, 1], [1, 0]], [[1, 0], [1, 1]]])
    reward = jnp.array([3.0, 1.0, 3.0, 9.0])
    queue = queue.push(plans, reward, jnp.array([False, False, False, True]))
    # the over-budget plan (9.0) stays out; the repeated plan counts once; a slot stays empty
    np.testing.assert_array_equal(queue.reward, [3.0, 1.0, -np.inf])
    np.testing.assert_array_equal(queue.action[:2], plans[:2])
    again = queue.push(plans, jnp.array([3.0, 1.0, 3.0, 0.5]), jnp.zeros(4, bool))
    # a queued plan seen again is not queued twice; a new one takes the empty slot
    np.testing.assert_array_equal(again.reward, [3.0, 1.0, 0.5])
    np.testing.assert_array_equal(again.action, plans[jnp.array([0, 1, 3])])
    worse = again.push(plans, jnp.zeros(4), jnp.zeros(4, bool))
    jax.tree.map(np.testing.assert_array_equal, worse, again)  # nothing better: unchanged
    best = again.push(plans[3:], jnp.array([7.0]), jnp.zeros(1, bool))
    np.testing.assert_array_equal(best.reward, [3.0, 1.0, 0.5])  # plans[3] is queued already


def test_variants_change_one_layer_of_a_queued_plan():
    from agents.compressor_critic.networks import sample_action
    from agents.compressor_critic.train import Elite, _network, _rollout, _variants

    env = ToyEnv(num_layers=5, num_techniques=3, num_ratios=4)
    params = env.make_params(seed=0)
    plan = jnp.asarray(env.optimum(params))
    queue = Elite.empty(4, env.spec.num_steps)
    queue = queue._replace(action=queue.action.at[0].set(plan), reward=queue.reward.at[0].set(1.0))
    config = CompressorCriticConfig()
    net = _network(config, env)
    weights = net.init(jax.random.key(0), net.initial_carry(1), jnp.zeros((1, env.spec.obs_dim)))
    variants = _variants(jax.random.key(1), queue, 32, 24)
    traj = _rollout(net, weights, env, params, jax.random.key(2), 32, sample_action, variants)
    rows = np.swapaxes(np.asarray(traj.action), 0, 1)[8:]  # the last 24 rows are variants
    changed = np.any(rows != np.asarray(plan)[None], axis=-1).sum(axis=1)
    np.testing.assert_array_equal(changed, 1)  # the optimum's actions are always allowed here
    assert not np.asarray(variants.keep)[:, :8].any()  # the first 8 are the policy's own
    assert not np.asarray(variants.change)[:, :8].any()
    empty = _variants(jax.random.key(1), Elite.empty(4, env.spec.num_steps), 32, 24)
    assert not np.asarray(empty.keep).any() and not np.asarray(empty.change).any()


def test_greedy_start_rolls_out_the_equal_slope_plans_first():
    """The first ``greedy_start`` updates' variant rows follow the greedy agent's equal-slope
    plans: on the toy environment (zero cost: every multiplier picks the least-error action of
    each layer) that is the optimum, queued after the first update; without the start, one
    update of the untrained policy does not find it."""
    from agents.compressor_critic.networks import sample_action
    from agents.compressor_critic.train import _equal_slope, _network, _queued, _rollout

    env = ToyEnv(num_layers=5, num_techniques=3, num_ratios=4)
    params = env.make_params(seed=1)
    optimum = env.optimum(params)
    variants = _queued(_equal_slope(env, params, jnp.linspace(0.0, 10.0, 16)), 32)
    assert not np.asarray(variants.keep)[:, :16].any() and np.asarray(variants.keep)[:, 16:].all()
    net = _network(CompressorCriticConfig(), env)
    weights = net.init(jax.random.key(0), net.initial_carry(1), jnp.zeros((1, env.spec.obs_dim)))
    traj = _rollout(net, weights, env, params, jax.random.key(2), 32, sample_action, variants)
    rows = np.swapaxes(np.asarray(traj.action), 0, 1)
    np.testing.assert_array_equal(rows[16:], np.broadcast_to(optimum, rows[16:].shape))

    config = CompressorCriticConfig(episodes=64, batch_episodes=32, updates_per_chunk=1)
    trainer = make_trainer(config, env)
    state, _ = trainer.run_chunk(trainer.init(jax.random.key(0)), params)
    np.testing.assert_array_equal(trainer.policy(state, params), optimum)
    off = make_trainer(dataclasses.replace(config, greedy_start=0), env)
    state, _ = off.run_chunk(off.init(jax.random.key(0)), params)
    assert not np.array_equal(off.policy(state, params), optimum)  # 1 of 12**5 plans


def test_parent_decay_favours_the_queue_head():
    """``parent_decay`` 0 draws the variants' parents uniformly from the full queue; a large
    one draws the best plan (the queue's head) nearly always."""
    from agents.compressor_critic.train import Elite, _variants

    queue = Elite.empty(4, num_steps=3)
    plans = jnp.arange(4)[:, None, None] * jnp.ones((4, 3, 2), jnp.int32)  # plan i: all i
    queue = Elite(plans, jnp.array([4.0, 3.0, 2.0, 1.0]))

    def parents(decay):
        v = _variants(jax.random.key(0), queue, 1024, 1024, decay)
        return np.asarray(v.action)[0, :, 0]  # layer 0's technique = the parent's index

    uniform, head = np.bincount(parents(0.0), minlength=4), np.bincount(parents(5.0), minlength=4)
    assert uniform.min() > 200  # about 256 each
    assert head[0] > 1000  # the others weigh exp(-5) = 0.7% each


def test_front_keeps_the_accuracy_latency_front():
    """The archive keeps the non-dominated in-budget plans (one of equal ones), fastest first;
    past its size, plans spread along the front including both ends."""
    from agents.compressor_critic.train import Front

    plans = jnp.arange(7)[:, None, None] * jnp.ones((7, 2, 2), jnp.int32)  # plan i: all i
    acc = jnp.array([0.5, 0.6, 0.4, 0.9, 0.9, 0.95, 0.7])
    lat = jnp.array([1.0, 2.0, 3.0, 4.0, 4.0, 5.0, 4.5])
    over = jnp.array([False] * 5 + [True, False])  # plan 5 is over the budget
    front = Front.empty(6, num_steps=2).push(plans, acc, lat, over)
    # 2 is beaten by 1, 4 equals 3 (the first counts), 6 is beaten by 3
    np.testing.assert_array_equal(front.action[:3, 0, 0], [0, 1, 3])
    np.testing.assert_array_equal(front.latency, [1.0, 2.0, 4.0] + [np.inf] * 3)
    again = front.push(plans[:1], jnp.array([0.99]), jnp.array([0.5]), jnp.zeros(1, bool))
    np.testing.assert_array_equal(again.latency[:1], [0.5])  # plan 0 at a new score beats all
    assert np.isfinite(again.latency).sum() == 1
    many = jnp.linspace(1.0, 2.0, 9)  # 9 non-dominated plans into 3 slots: both ends and the middle
    small = Front.empty(3, num_steps=2).push(
        jnp.arange(9)[:, None, None] * jnp.ones((9, 2, 2), jnp.int32), many, many,
        jnp.zeros(9, bool),
    )  # fmt: skip
    np.testing.assert_array_equal(small.action[:, 0, 0], [0, 4, 8])


def test_variants_from_the_front_uniform_actions_and_layer_pairs():
    """Front rows take their parents from the front archive; the ``uniform`` rows' new action
    ignores the policy's logits; ``pair_share`` 1 changes two layers where they differ."""
    from agents.compressor_critic.networks import sample_action
    from agents.compressor_critic.train import Elite, Front, Variants, _variants, _with_variants

    queue = Elite(jnp.zeros((2, 6, 2), jnp.int32), jnp.array([1.0, -jnp.inf]))
    front = Front(jnp.ones((2, 6, 2), jnp.int32), jnp.array([0.5, 0.6]), jnp.array([1.0, 2.0]))
    v = _variants(jax.random.key(0), queue, 64, 48, front=front, front_rows=24, uniform_rows=48)
    parents = np.asarray(v.action)[0, :, 0]
    assert (parents[16:40] == 0).all() and (parents[40:] == 1).all()
    flat = np.asarray(v.uniform)
    assert flat[:, 16:].any(axis=0).all() and not flat[:, :16].any()
    pairs = _variants(jax.random.key(0), queue, 256, 256, pair_share=1.0)
    changed = np.asarray(pairs.change).sum(axis=0)
    assert set(changed) <= {1, 2} and (changed == 2).mean() > 0.7  # the same layer twice: 1/6

    mask = jnp.ones((512, 3, 4), bool)
    t_logits = jnp.broadcast_to(jnp.array([50.0, 0.0, 0.0]), (512, 3))  # the policy: technique 0
    r_logits = jnp.zeros((512, 3, 4))
    step = Variants(jnp.zeros((512, 2), jnp.int32), jnp.zeros(512, bool), jnp.ones(512, bool),
                    jnp.arange(512) >= 256)  # fmt: skip
    act = _with_variants(sample_action, None)(jax.random.key(1), t_logits, r_logits, mask, None)
    assert (np.asarray(act)[:, 0] == 0).all()
    act = np.asarray(_with_variants(sample_action, step)(jax.random.key(1), t_logits, r_logits,
                                                          mask, step))  # fmt: skip
    assert (act[:256, 0] == 0).all() and not (act[:, :] == 0).all(axis=1).any()  # never (0, 0)
    counts = np.bincount(act[256:, 0] * 4 + act[256:, 1], minlength=12)
    assert counts[0] == 0 and counts[1:].min() > 5  # the other 11 actions alike (about 23 each)
