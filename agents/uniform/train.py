"""Uniform compression as a :class:`~autocomp.search.agent.Trainer`: a grid search over the
plans that apply one (technique, ratio bin) to every layer.

Grid plan ``g`` is the pair ``(t, r) = (g // R, g % R)``. At each layer it sends ``(t, r)`` if
technique ``t`` fits the layer (any ratio of ``t`` in the static fit mask ``allowed[l, t]``), and
the identity action otherwise; the environment projects a masked action as in any search (to the
nearest allowed ratio of ``t`` first), and the applied plans are what is recorded. Duplicate
pairs (the identity at every ratio, a ratio-free technique at every ratio) are not skipped: the
grid's size must be static, and they cost ``T * R`` evaluations at most. The policy is the best
in-budget uniform plan (:class:`~autocomp.search.agent.Best`).

Sources: the survey of Nan, Liu, Du and Liu (Tsinghua Science and Technology 24(6), 2019,
doi:10.26599/TST.2018.9010103) compares compression techniques each applied alike to a model;
AMC (He et al., ECCV 2018) compares against uniform per-layer ratios.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Int

from agents.uniform.config import UniformConfig
from autocomp.search import rollouts
from autocomp.search.agent import Best, Trainer, best_plan_policy, num_chunks
from autocomp.search.spaces import Environment
from autocomp.techniques import identity_index


class UniformState(NamedTuple):
    """``chunk``: chunks run so far (the next grid batch starts at ``chunk * batch_episodes``);
    ``best``: best in-budget plan seen."""

    chunk: jax.Array
    best: Best


def identity_action(env, allowed: Bool[ArrayLike, "L T R"]) -> Int[Array, "L 2"]:
    """int[L, 2]: the action that leaves each layer as it is.

    The technique is ``identity_index(env.techniques)`` for an environment that names its
    techniques (:class:`CompressionEnv`) and 0 otherwise (the toy environment, whose (0, 0) is
    always allowed); the ratio bin is the lowest one the static fit mask ``allowed`` allows for
    it at each layer (bin 0: ``autocomp.search.space`` allows the identity only there).
    """
    techniques = getattr(env, "techniques", None)
    t = 0 if techniques is None else identity_index(techniques)
    r = jnp.argmax(allowed[:, t, :], axis=-1)
    return jnp.stack([jnp.full_like(r, t), r], axis=-1).astype(jnp.int32)


def grid_plans(env, allowed: Bool[Array, "L T R"], index: Int[Array, " B"]) -> Int[Array, "B L 2"]:
    """The uniform plans of grid indices ``index`` (pair ``(index // R, index % R)``): that
    pair at every layer its technique fits, the identity action elsewhere."""
    n_r = allowed.shape[-1]
    t, r = index // n_r, index % n_r
    fits = jnp.any(allowed[:, t, :], axis=-1).T  # [B, L]
    pair = jnp.stack([t, r], axis=-1).astype(jnp.int32)[:, None, :]
    return jnp.where(fits[..., None], pair, identity_action(env, allowed)[None])


def make_trainer(config: UniformConfig, env: Environment) -> Trainer:
    """Uniform grid search bound to ``env``: chunk ``c`` evaluates grid plans
    ``c * B .. c * B + B - 1`` (modulo the grid size, which pads the last batch) in one jitted
    call; ``num_chunks`` covers the grid once (or ``episodes`` plans, if fewer)."""
    batch = config.batch_episodes
    grid = env.spec.num_techniques * env.spec.num_ratios

    def init(key: jax.Array) -> UniformState:
        del key  # deterministic
        return UniformState(jnp.int32(0), Best.empty(env.spec.num_steps))

    def step(env_params, state: UniformState, _):
        index = (state.chunk * batch + jnp.arange(batch)) % grid
        plans = grid_plans(env, env_params.allowed, index)
        metrics = rollouts.episode_metrics(rollouts.evaluate(env, env_params, plans))
        return UniformState(state.chunk + 1, state.best.update(metrics)), metrics

    @jax.jit
    def run_chunk(state: UniformState, env_params):
        return jax.lax.scan(lambda s, x: step(env_params, s, x), state, None, 1)

    return Trainer(
        init, run_chunk, best_plan_policy, num_chunks(min(config.episodes, grid), batch), batch
    )
