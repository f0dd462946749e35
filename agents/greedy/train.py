"""A greedy, equal-slope sweep of per-layer (technique, ratio) choices over a Lagrange multiplier.

For a multiplier ``lambda >= 0`` every layer takes, among its allowed actions, the one that
minimizes ``sensitivity + lambda * cost`` (:func:`agents.greedy.selection.select`): at lambda = 0
the least-error plan, as lambda grows ever cheaper ones. Since the total error and cost are
sums over layers, each such plan minimizes the tables' total error at its own total cost
(Everett 1963), and the sweep traces the lower convex hull of the plans' (cost, error)
trade-off, where the marginal error per unit of cost saved is lambda in every layer: the
equal-slope rule of Lagrangian bit allocation (Shoham and Gersho, IEEE Trans. ASSP 1988). Plans
inside the hull are never proposed. The multipliers, 0 and a log grid from ``lambda_min`` to
``lambda_max``, one per plan evaluated (``episodes`` rounded up to whole chunks), are visited
coarse to fine (van der Corput order), ``batch_episodes`` per step, ``steps_per_chunk`` steps
per jitted chunk; each plan is evaluated by the environment, whose budget masks project it (the
applied plan is what is recorded), and the policy is the best in-budget plan seen
(:class:`~autocomp.search.agent.Best`).

Sources, and what differs:

- AIMET's *greedy compression-ratio selection* (qualcomm/aimet,
  ``Docs/user_guide/greedy_compression_ratio_selection.rst``; ``../shared/reference/peers.md``
  §1.9) first sweeps each layer alone over candidate ratios, scoring the whole model each time
  (the "eval dictionary": a per-layer eval-score curve), then, assuming one eval score for
  every layer, interpolates each layer's ratio at that score, prices the model and moves the
  score until the cost target is met. That equalizes the per-layer score *level*; we equalize
  the *slope* (error per unit of cost) instead, the Lagrangian form, with the multiplier in
  the role of AIMET's common score, a choice of technique as well as ratio, and device-table
  costs instead of MACs or memory.
- NetAdapt (Yang et al., "NetAdapt: Platform-Aware Neural Network Adaptation for Mobile
  Applications", ECCV 2018) shrinks the network step by step: each iteration proposes, per
  layer, the smallest change that meets the next resource target (measured latency from
  look-up tables), scores the proposals by short fine-tuning and keeps the best. We keep its
  platform-aware costs (the device table, weighted as the reward weights resources) but not
  its fine-tuning or its iterations.
- Both spend evaluations on per-layer accuracy sweeps. Here the per-layer curve is the
  relative output error of each technique at each ratio on the layer's real inputs, which the
  environment precomputes (``greedy_tables``), so the whole evaluation budget goes to plans of
  the sweep. The price: the output error of one layer is a proxy for the accuracy of the whole
  plan (errors compound across layers), and the costs are per layer at full input width (a
  pruned predecessor makes a layer cheaper); the evaluation of every plan corrects neither, it
  only ranks the sweep's plans.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents.greedy.config import GreedyConfig
from agents.greedy.selection import coarse_to_fine, select_many
from autocomp.search import rollouts
from autocomp.search.agent import Best, Trainer, best_plan_policy, num_chunks


class GreedyState(NamedTuple):
    """``step``: steps done (each evaluates the next ``batch_episodes`` multipliers of the
    schedule); ``best``: the best in-budget plan seen."""

    step: jax.Array
    best: Best


def schedule(config: GreedyConfig, total: int) -> np.ndarray:
    """float32[total]: the multipliers in the order they are evaluated (coarse to fine)."""
    return coarse_to_fine(total, config.lambda_min, config.lambda_max)


def make_trainer(config: GreedyConfig, env) -> Trainer:
    """The greedy sweep as a :class:`~autocomp.search.agent.Trainer`. ``env`` must have
    ``greedy_tables(params) -> (sensitivity [L, T, R], cost [L, T, R])``."""
    if not hasattr(env, "greedy_tables"):
        raise ValueError(f"agent.name={config.name!r} needs an environment with greedy_tables")
    batch = config.batch_episodes
    n_steps = num_chunks(config.episodes, batch)
    n_chunks = num_chunks(n_steps, config.steps_per_chunk)
    per_chunk = batch * config.steps_per_chunk
    lambdas = jnp.asarray(schedule(config, n_chunks * per_chunk))

    def init(key) -> GreedyState:
        del key  # deterministic
        return GreedyState(jnp.int32(0), Best.empty(env.spec.num_steps))

    def step(env_params, tables, state: GreedyState, _):
        lam = jax.lax.dynamic_slice(lambdas, (state.step * batch,), (batch,))
        chosen = select_many(*tables, env_params.allowed, lam)
        metrics = rollouts.episode_metrics(rollouts.evaluate(env, env_params, chosen))
        projected = jnp.sum(jnp.any(metrics["plan"] != chosen, axis=-1), axis=-1)
        extra = {"lambda": lam, "projected_layers": projected}
        return GreedyState(state.step + 1, state.best.update(metrics)), metrics | extra

    @jax.jit
    def run_chunk(state: GreedyState, env_params):
        tables = env.greedy_tables(env_params)
        return jax.lax.scan(partial(step, env_params, tables), state, None, config.steps_per_chunk)

    return Trainer(init, run_chunk, best_plan_policy, n_chunks, per_chunk)
