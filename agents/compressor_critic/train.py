"""Training of the compressor-critic by policy gradient with a learned critic baseline.

Each update rolls out ``batch_episodes`` plans in lockstep (one env step per layer) and scores
them (the env's reward at the last layer). The first share of the batch is the policy's own
samples; the rest (``local_share``) are one-layer variants of the best distinct in-budget plans
seen so far (a queue of ``elite`` plans), the changed layer's new action sampled from the policy:
the learned policy serves as the mutation proposal of a local search, which a sampler of whole
plans lacks. For the first ``greedy_start`` updates the variant rows are the greedy agent's
equal-slope plans (half of them the distinct plans nearest the budget line, then multipliers
coarse to fine), so the queue starts from what the per-layer sensitivity recommends. Every plan
feeds the queue; one Adam step on the own samples' ``pg_loss + value_coef * value_loss +
entropy_coef * entropy_loss`` follows. Updates run in jitted chunks (``lax.scan``); the host logs
and checkpoints between chunks. The delivered plan is the queue's head. Options, off by
default: a share of the variants' parents drawn from an archive of the accuracy-latency front
(``front``, ``front_share``), their new actions drawn uniformly (``uniform_share``), a second
layer changed (``pair_share``).
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
from agents.greedy.config import GreedyConfig
from agents.greedy.selection import coarse_to_fine, lambda_grid, select_many
from autocomp.search.agent import Trainer, num_chunks, scan_chunk
from autocomp.search.spaces import Environment, episode_record


class Rollout(NamedTuple):
    """Time-major [L, B, ...] record of a lockstep batch of episodes."""

    features: jax.Array
    mask: jax.Array
    action: jax.Array  # the applied action
    reward: jax.Array
    info: Any


class Elite(NamedTuple):
    """The queue of the best distinct in-budget plans seen: applied plans int[K, L, 2] and
    their rewards float[K], best first (-inf marks an empty slot)."""

    action: jax.Array
    reward: jax.Array

    @staticmethod
    def empty(size: int, num_steps: int) -> Elite:
        return Elite(
            jnp.zeros((size, num_steps, 2), jnp.int32), jnp.full((size,), -jnp.inf, jnp.float32)
        )

    def push(self, plans: jax.Array, reward: jax.Array, violation: jax.Array) -> Elite:
        """The queue with a batch of plans [B, L, 2] folded in: the ``K`` best distinct
        in-budget plans of queue and batch (a plan already queued, or twice in the batch,
        counts once)."""
        action = jnp.concatenate([self.action, plans])
        score = jnp.concatenate([self.reward, jnp.where(violation, -jnp.inf, reward)])
        n = score.shape[0]
        same = jnp.all(action[:, None] == action[None, :], axis=(-2, -1))
        earlier = jnp.arange(n)[None, :] < jnp.arange(n)[:, None]
        dup = jnp.any(same & earlier & jnp.isfinite(score)[None, :], axis=1)
        _, keep = jax.lax.top_k(jnp.where(dup, -jnp.inf, score), self.reward.shape[0])
        return Elite(action[keep], score[keep])


class Front(NamedTuple):
    """An archive of the accuracy-latency front of the in-budget plans seen: plans int[K, L, 2],
    their accuracy and latency float[K], fastest first (latency +inf marks an empty slot).
    Where the front has more than ``K`` plans, ``K`` spread evenly along it are kept."""

    action: jax.Array
    accuracy: jax.Array
    latency: jax.Array

    @staticmethod
    def empty(size: int, num_steps: int) -> Front:
        return Front(
            jnp.zeros((size, num_steps, 2), jnp.int32),
            jnp.full((size,), -jnp.inf, jnp.float32),
            jnp.full((size,), jnp.inf, jnp.float32),
        )

    def push(self, plans, accuracy, latency, violation) -> Front:
        """The archive with a batch [B, L, 2] folded in: the non-dominated plans of both (of
        plans with equal accuracy and latency, the first), at most ``K`` of them."""
        action = jnp.concatenate([self.action, plans])
        acc = jnp.concatenate([self.accuracy, jnp.where(violation, -jnp.inf, accuracy)])
        lat = jnp.concatenate([self.latency, jnp.where(violation, jnp.inf, latency)])
        n = acc.shape[0]
        ok = jnp.isfinite(lat) & jnp.isfinite(acc)
        ge = (acc[None, :] >= acc[:, None]) & (lat[None, :] <= lat[:, None])  # j weakly beats i
        strict = (acc[None, :] > acc[:, None]) | (lat[None, :] < lat[:, None])
        tie = ~strict & (jnp.arange(n)[None, :] < jnp.arange(n)[:, None])
        beaten = jnp.any(ge & (strict | tie) & ok[None, :], axis=1)
        front = ok & ~beaten
        order = jnp.argsort(jnp.where(front, lat, jnp.inf))
        count = jnp.sum(front)
        k = self.latency.shape[0]
        spread = jnp.round(jnp.arange(k) * (count - 1) / max(k - 1, 1)).astype(jnp.int32)
        pick = jnp.where(count > k, spread, jnp.arange(k))
        keep = order[pick]
        full = jnp.arange(k) < count
        return Front(
            action[keep], jnp.where(full, acc[keep], -jnp.inf), jnp.where(full, lat[keep], jnp.inf)
        )


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    update: jax.Array
    elite: Elite
    front: Front


def _network(config: CompressorCriticConfig, env: Environment) -> CompressorCritic:
    return CompressorCritic(env.spec.num_techniques, env.spec.num_ratios, config.hidden)


class Variants(NamedTuple):
    """Plans to roll out as one-layer variants of queued ones, time-major [L, B, ...] over the
    whole batch: where ``keep`` is set the queued plan's ``action`` is taken (if the budget mask
    still allows it); where ``change`` is set the policy samples an action other than it; rows
    with neither set anywhere are the policy's own samples."""

    action: jax.Array
    keep: jax.Array
    change: jax.Array
    uniform: jax.Array  # [L, B]: where set, the changed layer's new action uniform, not sampled


def _variants(
    key, elite: Elite, batch: int, rows: int, decay: float = 0.0, front: Front | None = None,
    front_rows: int = 0, uniform_rows: int = 0, pair_share: float = 0.0,
) -> Variants:  # fmt: skip
    """For a batch whose last ``rows`` are one-layer variants of plans drawn from the queue's
    full slots, rank r with weight exp(-decay * r) (the queue is sorted best first; while it is
    empty, every row is the policy's own sample); of them, the last ``front_rows`` drawn
    uniformly from the front archive's full slots instead (where it has any), and the last
    ``uniform_rows`` take the changed layer's new action uniformly over the allowed ones; each
    variant changes a second layer as well with probability ``pair_share``."""
    k_pick, k_layer = jax.random.split(key)  # the same draws as without the options
    k_front, k_pair, k_second = (jax.random.fold_in(key, i) for i in (1, 2, 3))
    full = jnp.isfinite(elite.reward)
    rank = -decay * jnp.arange(elite.reward.shape[0], dtype=jnp.float32)
    pick = jax.random.categorical(k_pick, jnp.where(full, rank, -jnp.inf), shape=(rows,))
    parents = elite.action[pick]
    if front is not None and front_rows:
        in_front = jnp.isfinite(front.latency)
        f_pick = jax.random.categorical(
            k_front, jnp.where(in_front, 0.0, -jnp.inf), shape=(front_rows,)
        )
        tail = jnp.where(jnp.any(in_front), front.action[f_pick], parents[rows - front_rows :])
        parents = parents.at[rows - front_rows :].set(tail)
    steps = elite.action.shape[1]
    layer = jnp.stack([jax.random.randint(k, (rows,), 0, steps) for k in (k_layer, k_second)])
    own = batch - rows  # the first rows: the policy's own samples, masked out by `row`
    row = (jnp.arange(batch) >= own) & jnp.any(full)
    layer = jnp.concatenate([jnp.zeros((2, own), layer.dtype), layer], axis=1)
    on = jnp.arange(steps)[:, None] == layer[0][None, :]  # [L, B]
    pair = jax.random.uniform(k_pair, (batch,)) < pair_share  # these change a second layer too
    on = on | ((jnp.arange(steps)[:, None] == layer[1][None, :]) & pair[None, :])
    queued = jnp.concatenate([jnp.zeros((own, steps, 2), jnp.int32), parents])
    flat = jnp.broadcast_to(jnp.arange(batch) >= batch - uniform_rows, on.shape)
    return Variants(jnp.swapaxes(queued, 0, 1), ~on & row, on & row, on & row & flat)


def _equal_slope(env: Environment, env_params, lam) -> jax.Array:
    """int[len(lam), L, 2]: the greedy agent's equal-slope plan of each multiplier (each
    layer's action minimizes its sensitivity + multiplier x cost share)."""
    sensitivity, cost = env.greedy_tables(env_params)
    return select_many(sensitivity, cost, env_params.allowed, lam)


def _start_plans(env: Environment, env_params, near: int, coarse: np.ndarray) -> jax.Array:
    """int[near + len(coarse), L, 2]: the greedy start's plans. First the ``near`` distinct
    equal-slope plans nearest the budget line (on a grid of 1,024 multipliers, the first whose
    plan fits by ``env.greedy_fits``, and the plans on either side of it), where the greedy
    sweep's best plan lies; then the plans of the multipliers ``coarse``."""
    coarse_plans = _equal_slope(env, env_params, jnp.asarray(coarse, jnp.float32))
    if near == 0:
        return coarse_plans
    fine = lambda_grid(1024, GreedyConfig.lambda_min, GreedyConfig.lambda_max)
    plans = _equal_slope(env, env_params, jnp.asarray(fine))
    fits = env.greedy_fits(env_params, plans)
    line = jnp.where(jnp.any(fits), jnp.argmax(fits), plans.shape[0] - 1)
    changed = jnp.concatenate([jnp.ones(1, bool), jnp.any(plans[1:] != plans[:-1], axis=(1, 2))])
    distance = jnp.abs(jnp.arange(plans.shape[0]) - line).astype(jnp.float32)
    _, nearest = jax.lax.top_k(jnp.where(changed, -distance, -jnp.inf), near)
    return jnp.concatenate([plans[nearest], coarse_plans])


def _queued(plans: jax.Array, batch: int) -> Variants:
    """A batch whose last ``len(plans)`` rows follow ``plans`` [rows, L, 2]; the first rows
    are the policy's own samples."""
    own = batch - plans.shape[0]
    queued = jnp.concatenate([jnp.zeros((own, *plans.shape[1:]), jnp.int32), plans])
    keep = jnp.broadcast_to(jnp.arange(batch) >= own, (plans.shape[1], batch))
    return Variants(jnp.swapaxes(queued, 0, 1), keep, jnp.zeros_like(keep), jnp.zeros_like(keep))


def _greedy_start(env, env_params, variants: Variants, update, updates: int, batch: int,
                  rows: int) -> Variants:  # fmt: skip
    """``variants``, or in the first ``updates`` updates the equal-slope plans in their
    ``rows``: ``updates x rows`` plans, half of them those of :func:`_start_plans` nearest
    the budget line, then those of a log grid of multipliers coarse to fine. The plans are
    built only in those updates (``lax.cond``), not in every update of the search."""
    n = updates * rows
    coarse = coarse_to_fine(n - n // 2, GreedyConfig.lambda_min, GreedyConfig.lambda_max)

    def seeded():
        plans = _start_plans(env, env_params, n // 2, coarse)
        return _queued(plans.reshape(updates, rows, *plans.shape[1:])[update], batch)

    return jax.lax.cond(update < updates, seeded, lambda: variants)


def _with_variants(act_fn, variants: Variants | None):
    """``act_fn`` following ``variants`` (one step's slice [B, ...]) where they say so."""
    if variants is None:
        return lambda key, t, r, mask, _: act_fn(key, t, r, mask)

    def act(key, t_logits, r_logits, mask, step: Variants):
        rows = jnp.arange(mask.shape[0])
        was = mask[rows, step.action[:, 0], step.action[:, 1]]  # the queued action, allowed
        other = mask.at[rows, step.action[:, 0], step.action[:, 1]].set(False)
        other_ok = jnp.any(other, axis=(1, 2))
        mask = jnp.where((step.change & was & other_ok)[:, None, None], other, mask)
        sampled = act_fn(key, t_logits, r_logits, mask)
        flat = jax.random.categorical(  # its own draw: the policy's samples stay as they were
            jax.random.fold_in(key, 1), jnp.where(mask, 0.0, -jnp.inf).reshape(mask.shape[0], -1)
        )
        flat = jnp.stack(jnp.divmod(flat, mask.shape[-1]), axis=-1).astype(jnp.int32)
        sampled = jnp.where(step.uniform[:, None], flat, sampled)
        return jnp.where((step.keep & was)[:, None], step.action, sampled)

    return act


def _rollout(net, params, env, env_params, key, batch, act_fn, variants: Variants | None = None):
    keys = jax.random.split(key, batch + 1)
    obs, state = env.batch_reset(keys[1:], env_params)
    carry = net.initial_carry(batch)
    act_fn = _with_variants(act_fn, variants)

    def body(c, step):
        carry, obs, state, key = c
        key, k_act, k_env = jax.random.split(key, 3)
        carry, (t_logits, r_logits, _) = net.apply(params, carry, obs.features)
        action = act_fn(k_act, t_logits, r_logits, obs.action_mask, step)
        obs2, state2, reward, _, info = env.batch_step(
            jax.random.split(k_env, batch), state, action, env_params
        )
        record = Rollout(obs.features, obs.action_mask, info.applied_action, reward, info)
        return (carry, obs2, state2, key), record

    _, traj = jax.lax.scan(body, (carry, obs, state, keys[0]), variants, env.spec.num_steps)
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


def _batch_variants(key, state: TrainState, config: CompressorCriticConfig, local: int):
    """The update's :class:`Variants` (``local`` rows of the batch), or None without any."""
    if not local:
        return None
    front_rows = round(config.front_share * local) if config.front else 0
    return _variants(
        key, state.elite, config.batch_episodes, local, config.parent_decay, state.front,
        front_rows, round(config.uniform_share * local), config.pair_share,
    )  # fmt: skip


def make_trainer(config: CompressorCriticConfig, env: Environment) -> Trainer:
    """The compressor-critic as a :class:`~autocomp.search.agent.Trainer`: one chunk is
    ``updates_per_chunk`` policy-gradient updates of ``batch_episodes`` plans each, one jitted
    ``lax.scan``; the delivered plan is the best in-budget plan seen (the queue's head)."""
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
        elite = Elite.empty(config.elite, env.spec.num_steps)
        front = Front.empty(config.front, env.spec.num_steps)
        return TrainState(params, tx.init(params), key, jnp.int32(0), elite, front)

    local = config.variants_per_batch if config.elite else 0
    greedy_start = config.greedy_start if local and hasattr(env, "greedy_fits") else 0
    own = config.batch_episodes - local  # the policy's own samples: the policy gradient's batch

    def loss(params, traj: Rollout, entropy_coef):
        traj = jax.tree.map(lambda x: x[:, :own], traj)  # the policy's own samples only
        return _loss(net, params, traj, entropy_coef, config.value_coef, config.top_share)

    def update(env_params, state: TrainState, _):
        key, k_roll, k_var = jax.random.split(state.key, 3)
        variants = _batch_variants(k_var, state, config, local)
        if greedy_start:  # the first updates' variant rows: equal-slope plans
            variants = _greedy_start(
                env, env_params, variants, state.update, greedy_start, config.batch_episodes, local
            )
        traj = _rollout(
            net,
            state.params,
            env,
            env_params,
            k_roll,
            config.batch_episodes,
            sample_action,
            variants,
        )
        progress = state.update / jnp.maximum(n_updates - 1, 1)
        entropy_coef = config.entropy_coef * (1.0 - (1.0 - config.entropy_final_frac) * progress)
        last = jax.tree.map(lambda x: x[-1], traj.info)
        reward = traj.reward.sum(axis=0)
        plan = jnp.swapaxes(traj.action, 0, 1)
        elite = state.elite.push(plan, reward, last.violation) if config.elite else state.elite
        front = state.front
        if config.front:
            front = front.push(plan, last.accuracy, last.latency_ms, last.violation)
        grads, aux = jax.grad(loss, has_aux=True)(state.params, traj, entropy_coef)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = episode_record(plan, reward, last) | aux
        return TrainState(params, opt_state, key, state.update + 1, elite, front), metrics

    run_chunk = scan_chunk(update, config.updates_per_chunk)

    @jax.jit
    def greedy(params, env_params):
        act = lambda k, t, r, m: greedy_action(t, r, m)  # noqa: E731
        traj = _rollout(net, params, env, env_params, jax.random.key(0), 1, act)
        return traj.action[:, 0]

    def policy(state: TrainState, env_params) -> np.ndarray:
        """The best in-budget plan seen (the queue's head, scored under ``env_params`` during
        the search); the greedy rollout of the compressor before any was seen, or without
        a queue."""
        if config.elite and np.isfinite(float(state.elite.reward[0])):
            return np.asarray(state.elite.action[0])
        return np.asarray(greedy(state.params, env_params))

    return Trainer(
        init, run_chunk, policy, n_chunks, config.batch_episodes * config.updates_per_chunk
    )
