"""Training of the DDPG agent: lockstep batches of episodes, a replay ring, AMC's updates.

Each step rolls out ``batch_episodes`` episodes in lockstep (a ``lax.scan`` over the layers
with ``env.batch_step``), stores their ``L * batch_episodes`` applied transitions, each with its
episode's final reward, and then, once warm-up is over, runs ``updates_per_step`` gradient
updates (one per stored transition by default, AMC's ratio). A chunk is ``steps_per_chunk``
steps in one jitted ``lax.scan``. The policy is the best in-budget plan seen (AMC reports the
best policy its search met, ``env.best_strategy``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents.ddpg import losses, replay
from agents.ddpg.config import DDPGConfig
from agents.ddpg.networks import Actor, Critic, action_wall, explore_ratios
from autocomp.search.agent import Best, Trainer, best_plan_policy, num_chunks, scan_chunk
from autocomp.search.spaces import Environment, episode_record


class DDPGState(NamedTuple):
    actor: Any
    critic: Any
    actor_target: Any
    critic_target: Any
    actor_opt: Any
    critic_opt: Any
    replay: replay.Replay
    baseline: jax.Array  # float32[], AMC's moving-average reward baseline
    updates: jax.Array  # int32[], gradient updates done (the baseline starts at the first)
    episodes: jax.Array  # int32[], episodes played
    key: jax.Array
    best: Best


class Exploration(NamedTuple):
    """How one lockstep batch acts: ratio noise sigma [B] and technique epsilon [B]; in warm-up
    the actor's ratios are replaced by uniform ones (AMC's ``random_action``)."""

    sigma: jax.Array
    epsilon: jax.Array
    uniform: jax.Array  # bool[]


class Agent(NamedTuple):
    """The static parts: networks, optimizers, the env and the ratio bins."""

    config: DDPGConfig
    env: Environment
    actor: Actor
    critic: Critic
    actor_tx: optax.GradientTransformation
    critic_tx: optax.GradientTransformation
    ratios: jax.Array  # float32[R], the env's ratio bins


def _technique_ok(mask: jax.Array) -> jax.Array:
    return jnp.any(mask, axis=-1)


def _walled_q(ag: Agent, critic_params, features, mask, ratio):
    """Q of every technique [N, T] at its walled ratio bin, and the bins [N, T]."""
    bins = action_wall(ratio, mask, ag.ratios)
    techniques = jnp.broadcast_to(jnp.arange(ratio.shape[-1]), ratio.shape)
    q = ag.critic.apply(critic_params, features[:, None, :], techniques, ag.ratios[bins])
    return q, bins


def select_action(ag: Agent, key, actor_params, critic_params, obs, explore: Exploration):
    """int[B, 2]: per technique, the (noisy or uniform) ratio through the action wall; then the
    technique of highest Q at its bin among the allowed ones, or with probability epsilon a
    uniformly random allowed technique."""
    k_noise, k_uniform, k_tech, k_coin = jax.random.split(key, 4)
    features, mask = obs.features, obs.action_mask
    mean = ag.actor.apply(actor_params, features)
    noisy = explore_ratios(k_noise, mean, explore.sigma)
    ratio = jnp.where(explore.uniform, jax.random.uniform(k_uniform, mean.shape), noisy)
    q, bins = _walled_q(ag, critic_params, features, mask, ratio)
    ok = _technique_ok(mask)
    greedy, _ = losses.best_technique(q, ok)
    random = jax.random.categorical(k_tech, jnp.where(ok, 0.0, -jnp.inf))
    coin = jax.random.uniform(k_coin, greedy.shape) < explore.epsilon
    technique = jnp.where(coin, random, greedy).astype(jnp.int32)
    ratio_bin = jnp.take_along_axis(bins, technique[:, None], axis=1)[:, 0]
    return jnp.stack([technique, ratio_bin], axis=-1)


def _rollout(ag: Agent, env_params, key, actor_params, critic_params, explore: Exploration):
    """A lockstep batch of episodes: (transitions [L, B], last step's info, rewards [L, B])."""
    batch = explore.sigma.shape[0]
    k_reset, key = jax.random.split(key)
    obs, env_state = ag.env.batch_reset(jax.random.split(k_reset, batch), env_params)

    def body(carry, _):
        obs, env_state, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        action = select_action(ag, k_act, actor_params, critic_params, obs, explore)
        obs2, env_state2, reward, done, info = ag.env.batch_step(
            jax.random.split(k_env, batch), env_state, action, env_params
        )
        applied = info.applied_action
        record = replay.Transition(
            obs.features,
            obs.action_mask,
            applied[:, 0],
            ag.ratios[applied[:, 1]],
            reward,
            done,
            obs2.features,
            obs2.action_mask,
        )
        return (obs2, env_state2, key), (record, applied, info)

    _, (traj, applied, infos) = jax.lax.scan(
        body, (obs, env_state, key), None, ag.env.spec.num_steps
    )
    final = traj.reward[-1]  # paid at the last layer; AMC stores it on every transition
    traj = traj._replace(reward=jnp.broadcast_to(final, traj.reward.shape))
    return traj, jnp.swapaxes(applied, 0, 1), jax.tree.map(lambda x: x[-1], infos)


def _gradient_update(ag: Agent, state: DDPGState, key):
    """One AMC update on a sampled batch: baseline, critic step, actor step, soft targets."""
    c = ag.config
    batch = replay.sample(state.replay, key, c.batch_size)
    baseline = losses.moving_average(
        state.baseline, state.updates > 0, batch.reward.mean(), c.baseline_alpha
    )
    next_ratio = ag.actor.apply(state.actor_target, batch.next_features)
    next_q, _ = _walled_q(ag, state.critic_target, batch.next_features, batch.next_mask, next_ratio)
    _, next_value = losses.best_technique(next_q, _technique_ok(batch.next_mask))
    next_value = jnp.where(jnp.isfinite(next_value), next_value, 0.0)
    target = losses.td_target(batch.reward - baseline, batch.done, next_value, c.discount)

    def critic_loss(p):
        q = ag.critic.apply(p, batch.features, batch.technique, batch.ratio)
        return losses.critic_loss(q, target)

    c_loss, c_grad = jax.value_and_grad(critic_loss)(state.critic)
    c_updates, critic_opt = ag.critic_tx.update(c_grad, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, c_updates)

    def actor_loss(p):
        ratio = ag.actor.apply(p, batch.features)
        techniques = jnp.broadcast_to(jnp.arange(ratio.shape[-1]), ratio.shape)
        q = ag.critic.apply(critic, batch.features[:, None, :], techniques, ratio)
        return losses.actor_loss(q, _technique_ok(batch.mask))

    a_loss, a_grad = jax.value_and_grad(actor_loss)(state.actor)
    a_updates, actor_opt = ag.actor_tx.update(a_grad, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, a_updates)
    new = state._replace(
        actor=actor,
        critic=critic,
        actor_target=losses.soft_update(state.actor_target, actor, c.tau),
        critic_target=losses.soft_update(state.critic_target, critic, c.tau),
        actor_opt=actor_opt,
        critic_opt=critic_opt,
        baseline=baseline,
        updates=state.updates + 1,
    )
    return new, (c_loss, a_loss)


def _learn(ag: Agent, state: DDPGState, key, n_updates: int):
    """``n_updates`` gradient updates; (state, mean critic loss, mean actor loss)."""
    state, (c_loss, a_loss) = jax.lax.scan(
        partial(_gradient_update, ag), state, jax.random.split(key, n_updates)
    )
    return state, c_loss.mean(), a_loss.mean()


def _exploration(config: DDPGConfig, episodes, warmup_episodes: int) -> Exploration:
    """AMC's schedule for the batch of episodes ``episodes + [0, B)``."""
    index = episodes + jnp.arange(config.batch_episodes)
    after = jnp.maximum(index - warmup_episodes, 0).astype(jnp.float32)
    warm = episodes < warmup_episodes
    sigma = config.noise_init * config.noise_decay**after
    epsilon = jnp.where(warm, 1.0, config.epsilon * config.epsilon_decay**after)
    return Exploration(sigma, epsilon, warm)


def _make_agent(config: DDPGConfig, env: Environment) -> Agent:
    n_t = env.spec.num_techniques
    return Agent(
        config,
        env,
        Actor(n_t, config.hidden),
        Critic(n_t, config.hidden),
        optax.adam(config.actor_lr),
        optax.adam(config.critic_lr),
        jnp.asarray(env.spec.ratios, jnp.float32),
    )


def make_trainer(config: DDPGConfig, env: Environment) -> Trainer:
    """The DDPG agent as a :class:`~autocomp.search.agent.Trainer`: one chunk is
    ``steps_per_chunk`` steps of ``batch_episodes`` lockstep episodes each, one jitted
    ``lax.scan``; the policy is the best in-budget plan seen."""
    ag = _make_agent(config, env)
    spec = env.spec
    n_steps_total = config.episodes // config.batch_episodes
    n_chunks = num_chunks(n_steps_total, config.steps_per_chunk)
    warmup_episodes = -(-config.warmup // config.batch_episodes) * config.batch_episodes
    n_updates = config.updates_per_step or spec.num_steps * config.batch_episodes

    def init(key) -> DDPGState:
        k_actor, k_critic, key = jax.random.split(key, 3)
        features = jnp.zeros((1, spec.obs_dim), jnp.float32)
        actor = ag.actor.init(k_actor, features)
        critic = ag.critic.init(k_critic, features, jnp.zeros(1, jnp.int32), jnp.zeros(1))
        buffer = replay.empty(
            config.replay_per_layer * spec.num_steps,
            spec.obs_dim,
            spec.num_techniques,
            spec.num_ratios,
        )
        return DDPGState(
            actor,
            critic,
            actor,
            critic,
            ag.actor_tx.init(actor),
            ag.critic_tx.init(critic),
            buffer,
            jnp.float32(0.0),
            jnp.int32(0),
            jnp.int32(0),
            key,
            Best.empty(spec.num_steps),
        )

    def step(env_params, state: DDPGState, _):
        key, k_roll, k_learn = jax.random.split(state.key, 3)
        explore = _exploration(config, state.episodes, warmup_episodes)
        traj, plan, last = _rollout(ag, env_params, k_roll, state.actor, state.critic, explore)
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), traj)
        state = state._replace(replay=replay.push(state.replay, flat), key=key)
        state, c_loss, a_loss = jax.lax.cond(
            explore.uniform,
            lambda s: (s, jnp.float32(jnp.nan), jnp.float32(jnp.nan)),
            lambda s: _learn(ag, s, k_learn, n_updates),
            state,
        )
        metrics = episode_record(plan, traj.reward[-1], last)
        best = state.best.update(metrics)
        state = state._replace(episodes=state.episodes + config.batch_episodes, best=best)
        extras = {"noise": explore.sigma, "epsilon": explore.epsilon, "baseline": state.baseline}
        return state, metrics | extras | {"critic_loss": c_loss, "actor_loss": a_loss}

    run_chunk = scan_chunk(step, config.steps_per_chunk)

    return Trainer(
        init, run_chunk, best_plan_policy, n_chunks, config.batch_episodes * config.steps_per_chunk
    )


def make_greedy_policy(config: DDPGConfig, env: Environment):
    """``(state, env_params) -> int[L, 2]``: the applied plan of a noise-free rollout of the
    trained actor and critic (what the agent has learned, as opposed to the best plan seen)."""
    ag = _make_agent(config, env)
    explore = Exploration(jnp.zeros(1), jnp.zeros(1), jnp.bool_(False))

    @jax.jit
    def greedy(state: DDPGState, env_params):
        _, plan, _ = _rollout(ag, env_params, jax.random.key(0), state.actor, state.critic, explore)
        return plan[0]

    return lambda state, env_params: np.asarray(greedy(state, env_params))
