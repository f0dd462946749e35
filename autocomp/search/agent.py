"""The agent protocol: what every search agent gives the search loop.

An agent lives in its own folder of ``agents/`` and is named once, in the registry of
``agents/__init__.py``. It exports an :class:`Agent`: its config dataclass and
``make_trainer(config, env) -> Trainer``. The loop (:mod:`autocomp.search.loop`) drives any
:class:`Trainer` the same way, checkpoints its state as an opaque pytree and resumes it, so an
agent never writes its own checkpoint code.

A chunk's metrics hold, per episode, the keys of :data:`EPISODE_KEYS` with leading dims
``[U, B]`` (any split of the chunk's episodes into U steps of B plans):
``plan`` int[U, B, L, 2] (the *applied* plan) and ``reward``, ``accuracy``, ``latency_ms``,
``energy_mj``, ``bytes``, ``violation`` [U, B]. Extra keys (losses, noise levels) are allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.search.spaces import EPISODE_KEYS

__all__ = [
    "EPISODE_KEYS",
    "Agent",
    "Best",
    "Trainer",
    "best_plan_policy",
    "check_batches",
    "num_chunks",
    "scan_chunk",
]


class Trainer(NamedTuple):
    """A search agent bound to one environment.

    Attributes:
        init: ``key -> state``, a pytree of arrays (PRNG keys allowed).
        run_chunk: ``(state, env_params) -> (state, metrics)``, jitted; evaluates exactly
            ``episodes_per_chunk`` plans. The environment's params are an argument, so the
            same compiled chunk serves other budgets or reward weights.
        policy: ``(state, env_params) -> int[L, 2]``, the plan the agent would choose now
            (a greedy rollout of a learned policy, or the best in-budget plan it has seen).
        num_chunks: chunks in a whole search (``episodes`` rounded up to whole chunks).
        episodes_per_chunk: plans evaluated per chunk.
        scored_params: ``(state, env_params) -> env_params`` under which the state's plans are
            scored now: the given ones, unless the search trains the network's weights
            (:mod:`autocomp.search.joint`), whose tuned weights it then carries.
    """

    init: Callable[[jax.Array], Any]
    run_chunk: Callable[[Any, Any], tuple[Any, dict]]
    policy: Callable[[Any, Any], Any]
    num_chunks: int
    episodes_per_chunk: int
    scored_params: Callable[[Any, Any], Any] = lambda state, env_params: env_params

    @property
    def episodes(self) -> int:
        return self.num_chunks * self.episodes_per_chunk


class Agent(NamedTuple):
    """An agent as the run sees it.

    Attributes:
        config: its config dataclass (Hydra group ``agent/<name>``; ``name`` names the agent,
            ``episodes`` is the number of plan evaluations of a search).
        make_trainer: ``(config, env) -> Trainer``.
    """

    config: type
    make_trainer: Callable[[Any, Any], Trainer]


def num_chunks(episodes: int, episodes_per_chunk: int) -> int:
    """Whole chunks that cover ``episodes`` plan evaluations."""
    return -(-episodes // episodes_per_chunk)


class Best(NamedTuple):
    """The best in-budget plan seen so far (an agent's state field, for agents whose policy is
    "the best plan found"); ``reward`` is -inf until one is seen."""

    plan: jax.Array  # int[L, 2]
    reward: jax.Array  # float[]

    @staticmethod
    def empty(num_layers: int) -> Best:
        return Best(jnp.zeros((num_layers, 2), jnp.int32), jnp.float32(-jnp.inf))

    def update(self, metrics: dict) -> Best:
        """Fold a batch of evaluated plans (``plan`` [..., L, 2], ``reward``/``violation``
        [...]) in; plans over budget count only while nothing in budget was seen (their
        reward is shifted far down)."""
        reward = jnp.where(metrics["violation"], metrics["reward"] - 1e6, metrics["reward"])
        flat_r = reward.reshape(-1)
        flat_p = metrics["plan"].reshape(-1, *metrics["plan"].shape[-2:])
        i = jnp.argmax(flat_r)
        better = flat_r[i] > self.reward
        return Best(
            jnp.where(better, flat_p[i], self.plan), jnp.where(better, flat_r[i], self.reward)
        )


def best_plan_policy(state, env_params) -> np.ndarray:
    """The policy of an agent that delivers the best in-budget plan it has seen
    (``state.best``, a :class:`Best`); the plan was scored under ``env_params`` already."""
    del env_params
    return np.asarray(state.best.plan)


def scan_chunk(step: Callable[[Any, Any, Any], tuple[Any, dict]], length: int):
    """``run_chunk(state, env_params)``: ``length`` calls of ``step(env_params, state, _) ->
    (state, metrics)`` in one jitted ``lax.scan`` (metrics stacked along a leading [U])."""

    @jax.jit
    def run_chunk(state, env_params):
        return jax.lax.scan(partial(step, env_params), state, None, length)

    return run_chunk


def check_batches(config) -> None:
    """The checks every batch-stepping agent's config shares: ``episodes >= batch_episodes >=
    1`` and ``steps_per_chunk >= 1``; a ``ValueError`` naming the ``agent.`` field."""
    if config.batch_episodes < 1 or config.episodes < config.batch_episodes:
        raise ValueError(
            f"agent.episodes={config.episodes} must be >= agent.batch_episodes="
            f"{config.batch_episodes} >= 1"
        )
    if config.steps_per_chunk < 1:
        raise ValueError(f"agent.steps_per_chunk={config.steps_per_chunk} must be >= 1")
