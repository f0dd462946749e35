"""Many searches as one compiled program: the same agent and environment under several rewards
(budgets, reward weights), mapped over the parts of the environment's params that differ.

A budget sweep run as separate processes pays, per budget, the start-up, the base model and the
layer statistics, and a compilation of every chunk. Here the K searches share all of that: one
chunk program advances all K agents by one chunk (each its own state, the same seed as a separate
search would use), and the loop checkpoints the K states as one pytree.

The K searches go through ``lax.map``, not ``vmap``: the environment scores a plan with a
``lax.switch`` over techniques (one branch runs), which a ``vmap`` over searches would turn into
running every technique's branch (about 10x slower on the digits search). ``lax.map`` keeps one
compiled chunk for all K, each search run as it would run alone.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.search.agent import Trainer
from autocomp.search.loop import _progress, _time_chunk, load_checkpoint, save_checkpoint
from autocomp.workflow.pipeline import merge_history

log = logging.getLogger(__name__)


def _same(a, b) -> bool:
    if a is b:
        return True
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def vmap_params(params: Sequence[Any]) -> tuple[Any, Any]:
    """Stack K environment params along a new leading axis where they differ.

    Returns:
        ``(stacked, axes)``: the params with every differing leaf stacked [K, ...] and the others
        kept once, and the matching ``in_axes`` tree (0 where stacked, None where shared), so the
        shared arrays (weights, validation images) are neither copied nor batched.
    """
    flat = [jax.tree.flatten(p) for p in params]
    treedef = flat[0][1]
    if any(t != treedef for _, t in flat[1:]):
        raise ValueError("the environment params to search together differ in structure")
    leaves, axes = [], []
    for column in zip(*(f for f, _ in flat), strict=True):
        shared = all(_same(column[0], x) for x in column[1:])
        leaves.append(column[0] if shared else jnp.stack([jnp.asarray(x) for x in column]))
        axes.append(None if shared else 0)
    return jax.tree.unflatten(treedef, leaves), jax.tree.unflatten(treedef, axes)


def _map_chunk(run_chunk, axes, state, stacked):
    """One chunk of every search, one after the other (``lax.map``) in one program."""
    flat, treedef = jax.tree.flatten(stacked)
    mapped = [a == 0 for a in jax.tree.leaves(axes, is_leaf=lambda x: x is None)]
    per = [x for x, m in zip(flat, mapped, strict=True) if m]

    def one(xs):
        s, leaves = xs
        it = iter(leaves)
        full = [next(it) if m else x for x, m in zip(flat, mapped, strict=True)]
        return run_chunk(s, jax.tree.unflatten(treedef, full))

    return jax.lax.map(one, (state, per))


def _take(tree, k: int):
    return jax.tree.map(lambda x: x[k], tree)


def run_searches(
    trainer: Trainer,
    params: Sequence[Any],
    key: jax.Array,
    tracker,
    labels: Sequence[str],
    checkpoint: Path | None = None,
    fingerprint: str = "",
    show_progress: bool = True,
) -> tuple[list[Any], list[dict[str, np.ndarray]], dict[str, float]]:
    """K searches (one per env params in ``params``, all from ``key``) as one vmapped program.

    Returns:
        per search its agent state and its history of every episode (as
        :func:`~autocomp.search.loop.run_search` gives them), and the shared timings.
    """
    k = len(params)
    if k != len(labels) or k < 1:
        raise ValueError(f"{k} env params and {len(labels)} labels: give one label per search")
    stacked, axes = vmap_params(params)
    init = jax.jit(jax.vmap(lambda _: trainer.init(key)))
    chunk = jax.jit(functools.partial(_map_chunk, trainer.run_chunk, axes))
    state, history = init(jnp.arange(k)), None
    if checkpoint is not None and checkpoint.is_file():
        state, history = load_checkpoint(checkpoint, state, fingerprint)
        log.info("resuming %d searches from %s", k, checkpoint)
    done = 0 if history is None else history["reward"].shape[1]
    best = np.full(k, -np.inf)
    timings = {"first_chunk_s": 0.0, "steady_s": 0.0, "steady_episodes": 0}
    with _progress(show_progress) as bar:
        task = bar.add_task("search", total=trainer.episodes, completed=done, r="-", a="-", l="-")
        while done < trainer.episodes:
            start = time.perf_counter()
            state, metrics = chunk(state, stacked)
            metrics = jax.device_get(metrics)
            elapsed = time.perf_counter() - start
            parts = [merge_history(None, _take(metrics, i)) for i in range(k)]
            new = {n: np.stack([p[n] for p in parts]) for n in parts[0]}
            history = new if history is None else {
                n: np.concatenate([history[n], new[n]], axis=1) for n in history
            }  # fmt: skip
            n_new = new["reward"].shape[1]
            _time_chunk(timings, elapsed, k * n_new)
            done += n_new
            ok = np.where(history["violation"], -np.inf, history["reward"])
            best = ok.max(axis=1)
            tracker.log(
                {f"{label}/best/reward": float(b) for label, b in zip(labels, best, strict=True)},
                step=done,
            )
            if checkpoint is not None:
                save_checkpoint(checkpoint, state, history, fingerprint)
            bar.update(task, completed=done, r="/".join(f"{b:.3f}" for b in best), a="-", l="-")
            if show_progress and not bar.console.is_terminal:  # a background run's log
                log.info("search: %d/%d episodes x %d rewards, best rewards %s",
                         done, trainer.episodes, k, np.round(best, 4).tolist())  # fmt: skip
    states = [_take(state, i) for i in range(k)]
    histories = [{n: v[i] for n, v in history.items()} for i in range(k)]
    return states, histories, timings
