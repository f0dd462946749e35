"""DeepIoT's joint fine-tuning: the network's weights trained under the plans the search samples.

DeepIoT (Yao et al., SenSys 2017) steps the original network's weights (Adam, cross-entropy)
under dropout masks sampled from its compressor between the compressor's updates, so the
network grows robust to the compression the compressor is converging on, and the compressor is
rewarded for what the weights can make of a plan rather than for how little the plan disturbs
the base model. Here that loop wraps any :class:`~autocomp.search.agent.Trainer`: after each
of its chunks, ``steps`` Adam steps train the network's trainable weights (a linen model's
``params`` collection, an NNX model's ``nnx.Param`` variables; batch statistics stay) with the
cross-entropy of the *simulated* compressed network on training batches, each step under one of
the chunk's in-budget plans drawn at random. The techniques' own precomputations (truncated
factors, distilled replacement layers, filter orders) are not trained: they stay what the base
model gave, in the search as in the materialized model, so simulation and materialization
still agree.

The tuned weights are kept as a difference from the environment's base weights inside the
wrapped trainer's state (a pytree: the search checkpoints and resumes it like any agent's), and
:attr:`Trainer.scored_params` gives the environment params with them applied: what the chosen
plan is re-scored under and materialized from. Rewards in a joint search's history were scored
under the weights of their time; the selection re-scores its candidates under the final ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autocomp.search.agent import Trainer

__all__ = ["JointSettings", "JointState", "joint_settings", "joint_trainer"]


class JointSettings(NamedTuple):
    """``steps``: Adam steps per chunk of the agent; ``learning_rate``; ``batch_size``:
    training examples per step."""

    steps: int
    learning_rate: float
    batch_size: int


class JointState(NamedTuple):
    """The wrapped agent's state, the trainable weights' offsets from the base weights, Adam's
    state and the key that draws the training batches and plans."""

    agent: Any
    delta: list
    opt: Any
    key: jax.Array


def joint_settings(agent_config) -> JointSettings | None:
    """The joint fine-tuning an agent's config asks for (``agent.joint_finetune=true`` and its
    ``joint_*`` fields), or None."""
    if not getattr(agent_config, "joint_finetune", False):
        return None
    return JointSettings(
        int(agent_config.joint_steps),
        float(agent_config.joint_learning_rate),
        int(agent_config.joint_batch_size),
    )


def _with_delta(base_params, trainable: Sequence[bool], delta: list):
    leaves, treedef = jax.tree.flatten(base_params)
    it = iter(delta)
    return jax.tree.unflatten(
        treedef, [leaf + next(it) if t else leaf for leaf, t in zip(leaves, trainable, strict=True)]
    )


def joint_trainer(
    trainer: Trainer,
    logits: Callable,
    base_params,
    trainable: Sequence[bool],
    settings: JointSettings,
    x_train: np.ndarray,
    y_train: np.ndarray,
) -> Trainer:
    """``trainer`` with joint fine-tuning after each of its chunks.

    Args:
        trainer: any agent's trainer.
        logits: ``(plan int[L, 2], env_params, x) -> logits``, the environment's simulation
            of a plan (``CompressionEnv.logits``).
        base_params: the environment's ``base_params`` (their leaves' shapes and dtypes).
        trainable: per leaf of ``base_params`` (``jax.tree.leaves`` order), whether it trains.
        settings: steps per chunk, step size and batch size.
        x_train, y_train: the training split the steps draw their batches from.
    """
    if settings.steps < 1 or settings.batch_size < 1 or settings.learning_rate <= 0:
        raise ValueError(
            f"agent.joint_steps={settings.steps}, agent.joint_batch_size={settings.batch_size} "
            f"and agent.joint_learning_rate={settings.learning_rate} must be > 0"
        )
    trainable = tuple(bool(t) for t in trainable)
    leaves = jax.tree.leaves(base_params)
    if len(leaves) != len(trainable) or not any(trainable):
        raise ValueError("joint fine-tuning: the model has no trainable weights to tune")
    shapes = [(leaf.shape, leaf.dtype) for leaf, t in zip(leaves, trainable, strict=True) if t]
    tx = optax.adam(settings.learning_rate)
    batch = min(settings.batch_size, len(x_train))

    def tuned(env_params, delta):
        return env_params._replace(
            base_params=_with_delta(env_params.base_params, trainable, delta)
        )

    def init(key):
        delta = [jnp.zeros(s, d) for s, d in shapes]
        return JointState(trainer.init(key), delta, tx.init(delta), jax.random.fold_in(key, 7))

    def tune_step(env_params, plans, weights, x_all, y_all, carry, _):
        delta, opt, key = carry
        key, k_x, k_p = jax.random.split(key, 3)
        idx = jax.random.randint(k_x, (batch,), 0, x_all.shape[0])
        plan = plans[jax.random.choice(k_p, plans.shape[0], p=weights)]

        def loss_fn(d):
            out = logits(plan, tuned(env_params, d), x_all[idx])
            return optax.softmax_cross_entropy_with_integer_labels(out, y_all[idx]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(delta)
        updates, opt = tx.update(grads, opt, delta)
        return (optax.apply_updates(delta, updates), opt, key), loss

    @jax.jit
    def chunk(state: JointState, env_params, x_all, y_all):
        agent, metrics = trainer.run_chunk(state.agent, tuned(env_params, state.delta))
        plans = metrics["plan"].reshape(-1, *metrics["plan"].shape[-2:])
        ok = ~metrics["violation"].reshape(-1)
        weights = jnp.where(jnp.any(ok), ok.astype(jnp.float32), 1.0)
        step = partial(tune_step, env_params, plans, weights / weights.sum(), x_all, y_all)
        (delta, opt, key), losses = jax.lax.scan(
            step, (state.delta, state.opt, state.key), None, settings.steps
        )
        return JointState(agent, delta, opt, key), metrics | {"joint_loss": losses.mean()}

    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train, jnp.int32)
    return Trainer(
        init=init,
        run_chunk=lambda state, env_params: chunk(state, env_params, x_dev, y_dev),
        policy=lambda state, env_params: trainer.policy(
            state.agent, tuned(env_params, state.delta)
        ),
        num_chunks=trainer.num_chunks,
        episodes_per_chunk=trainer.episodes_per_chunk,
        scored_params=lambda state, env_params: tuned(env_params, state.delta),
    )
