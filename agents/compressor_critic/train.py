"""Training of the compressor-critic by policy gradient with a learned critic baseline.

Each update rolls out ``batch_episodes`` plans in lockstep (one env step per layer), scores them
(the env's reward at the last layer), and takes one Adam step on
``pg_loss + value_coef * value_loss + entropy_coef * entropy_loss``. Updates run in jitted chunks
(``lax.scan``); the host logs and checkpoints between chunks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents.compressor_critic import losses
from agents.compressor_critic.config import CompressorCriticConfig
from agents.compressor_critic.networks import CompressorCritic, greedy_action, sample_action
from autocomp.search.agent import Trainer, num_chunks, scan_chunk
from autocomp.search.spaces import Environment, episode_record


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    update: jax.Array


class Rollout(NamedTuple):
    """Time-major [L, B, ...] record of a lockstep batch of episodes."""

    features: jax.Array
    mask: jax.Array
    action: jax.Array  # the applied action
    reward: jax.Array
    info: Any


def _network(config: CompressorCriticConfig, env: Environment) -> CompressorCritic:
    return CompressorCritic(env.spec.num_techniques, env.spec.num_ratios, config.hidden)


def _rollout(net, params, env, env_params, key, batch, act_fn):
    keys = jax.random.split(key, batch + 1)
    obs, state = env.batch_reset(keys[1:], env_params)
    carry = net.initial_carry(batch)

    def body(c, _):
        carry, obs, state, key = c
        key, k_act, k_env = jax.random.split(key, 3)
        carry, (t_logits, r_logits, _) = net.apply(params, carry, obs.features)
        action = act_fn(k_act, t_logits, r_logits, obs.action_mask)
        obs2, state2, reward, _, info = env.batch_step(
            jax.random.split(k_env, batch), state, action, env_params
        )
        record = Rollout(obs.features, obs.action_mask, info.applied_action, reward, info)
        return (carry, obs2, state2, key), record

    _, traj = jax.lax.scan(body, (carry, obs, state, keys[0]), None, env.spec.num_steps)
    return traj


def _loss(net, params, traj: Rollout, entropy_coef, value_coef, top_share=1.0):
    batch = traj.features.shape[1]

    def body(carry, xs):
        features, mask, action = xs
        carry, (t_logits, r_logits, value) = net.apply(params, carry, features)
        logp, entropy = jax.vmap(losses.action_log_prob_and_entropy)(
            t_logits, r_logits, mask, action
        )
        return carry, (logp, entropy, value)

    _, (logp, entropy, value) = jax.lax.scan(
        body, net.initial_carry(batch), (traj.features, traj.mask, traj.action)
    )
    returns = jax.vmap(losses.returns_to_go, in_axes=1, out_axes=1)(traj.reward)
    advantage = returns - value
    advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-6)
    if top_share < 1.0:  # risk-seeking: learn only from the batch's best share of plans
        final = returns[0]  # [B] the plan's reward (gamma = 1, paid at the last step)
        level = jnp.quantile(final, 1.0 - top_share)
        risk = jnp.where(final >= level, final - level, 0.0) / (final.std() + 1e-6)
        advantage = jnp.broadcast_to(risk, advantage.shape)
    pg = jax.vmap(jax.vmap(losses.policy_gradient_loss))(logp, advantage).mean()
    v = jax.vmap(jax.vmap(losses.value_loss))(value, returns).mean()
    ent = jax.vmap(jax.vmap(losses.entropy_loss))(entropy).mean()
    total = pg + value_coef * v + entropy_coef * ent
    return total, {"pg_loss": pg, "value_loss": v, "entropy": -ent}


def make_trainer(config: CompressorCriticConfig, env: Environment) -> Trainer:
    """The compressor-critic as a :class:`~autocomp.search.agent.Trainer`: one chunk is
    ``updates_per_chunk`` policy-gradient updates of ``batch_episodes`` plans each, one jitted
    ``lax.scan``; the policy is the greedy rollout of the trained compressor."""
    net = _network(config, env)
    n_updates = config.episodes // config.batch_episodes
    n_chunks = num_chunks(n_updates, config.updates_per_chunk)
    tx = optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate)
    )

    def init(key) -> TrainState:
        k_init, key = jax.random.split(key)
        dummy = jnp.zeros((1, env.spec.obs_dim), jnp.float32)
        params = net.init(k_init, net.initial_carry(1), dummy)
        return TrainState(params, tx.init(params), key, jnp.int32(0))

    def update(env_params, state: TrainState, _):
        key, k_roll = jax.random.split(state.key)
        traj = _rollout(
            net, state.params, env, env_params, k_roll, config.batch_episodes, sample_action
        )
        progress = state.update / jnp.maximum(n_updates - 1, 1)
        entropy_coef = config.entropy_coef * (1.0 - (1.0 - config.entropy_final_frac) * progress)
        grads, aux = jax.grad(
            lambda p: _loss(net, p, traj, entropy_coef, config.value_coef, config.top_share),
            has_aux=True,
        )(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        last = jax.tree.map(lambda x: x[-1], traj.info)
        plan = jnp.swapaxes(traj.action, 0, 1)
        metrics = episode_record(plan, traj.reward.sum(axis=0), last) | aux
        return TrainState(params, opt_state, key, state.update + 1), metrics

    run_chunk = scan_chunk(update, config.updates_per_chunk)

    @jax.jit
    def greedy(params, env_params):
        act = lambda k, t, r, m: greedy_action(t, r, m)  # noqa: E731
        traj = _rollout(net, params, env, env_params, jax.random.key(0), 1, act)
        return traj.action[:, 0]

    def policy(state: TrainState, env_params) -> np.ndarray:
        return np.asarray(greedy(state.params, env_params))

    return Trainer(
        init, run_chunk, policy, n_chunks, config.batch_episodes * config.updates_per_chunk
    )
