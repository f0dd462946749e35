"""The host side of a search: drive an agent's jitted chunks, show progress, log, checkpoint and
resume. Works with any agent's :class:`~autocomp.search.agent.Trainer`."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autocomp.io import atomic_write_bytes
from autocomp.search.agent import Trainer
from autocomp.training.loop import CheckpointError
from autocomp.workflow.pipeline import merge_history

log = logging.getLogger(__name__)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saveable(state) -> dict:
    """Any agent's state pytree as a flat dict of arrays (PRNG keys as their key data)."""
    leaves = jax.tree.leaves(state)
    return {
        str(i): np.asarray(jax.random.key_data(x) if _is_key(x) else x)
        for i, x in enumerate(leaves)
    }


def save_checkpoint(path: Path, state, history: dict, fingerprint: str) -> None:
    blob = {"fingerprint": fingerprint, "state": _to_saveable(state), "history": history}
    atomic_write_bytes(
        path, serialization.msgpack_serialize(serialization.to_state_dict(jax.device_get(blob)))
    )


def load_checkpoint(path: Path, template_state, fingerprint: str):
    """Restore (state, history) saved by :func:`save_checkpoint` for the same config; the
    state's structure comes from ``template_state`` (the agent's fresh state)."""
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types on corrupt input
        raise CheckpointError(
            f"search checkpoint {str(path)!r} is corrupt ({err}); delete it to start the search "
            "afresh, or run with resume=false"
        ) from err
    if raw.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"search checkpoint {str(path)!r} belongs to another config; use a new "
            "hydra.run.dir, delete the checkpoint, or run with resume=false"
        )
    leaves, treedef = jax.tree.flatten(template_state)
    saved = raw["state"]
    shapes = [np.shape(jax.random.key_data(x) if _is_key(x) else x) for x in leaves]
    if len(saved) != len(leaves) or any(
        np.shape(saved[str(i)]) != shape for i, shape in enumerate(shapes)
    ):
        raise CheckpointError(
            f"search checkpoint {str(path)!r} holds another agent's state (its arrays do not match "
            f"the {len(leaves)} of this agent's); delete it or run with resume=false"
        )
    restored = [
        jax.random.wrap_key_data(saved[str(i)]) if _is_key(x) else saved[str(i)]
        for i, x in enumerate(leaves)
    ]
    state = jax.tree.unflatten(treedef, restored)
    return state, {k: np.asarray(v) for k, v in raw["history"].items()}


def config_fingerprint(resolved: dict) -> str:
    """Hash of the parts of a config that change a search (not logging or resume)."""
    relevant = {k: v for k, v in resolved.items() if k not in ("logger", "resume", "finetune")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def run_search(
    trainer: Trainer,
    env_params,
    key: jax.Array,
    tracker,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    show_progress: bool = True,
) -> tuple[Any, dict[str, np.ndarray], dict[str, float]]:
    """Run (or resume) a search; returns (agent state, history of every episode, timings)."""
    state, history = trainer.init(key), None
    if checkpoint is not None and checkpoint.is_file():
        state, history = load_checkpoint(checkpoint, state, fingerprint)
        log.info("resuming search from %s at episode %d", checkpoint, len(history["reward"]))
    total = trainer.episodes
    done = 0 if history is None else len(history["reward"])
    best = {"reward": -np.inf, "accuracy": np.nan, "latency_ms": np.nan}
    timings = {"first_chunk_s": 0.0, "steady_s": 0.0, "steady_episodes": 0}
    with _progress(show_progress) as bar:
        task = bar.add_task("search", total=total, completed=done, r="-", a="-", l="-")
        while done < total:
            start = time.perf_counter()
            state, metrics = trainer.run_chunk(state, env_params)
            metrics = jax.device_get(metrics)
            elapsed = time.perf_counter() - start
            history = merge_history(history, metrics)
            _time_chunk(timings, elapsed, len(history["reward"]) - done)
            _log_chunk(tracker, history, done, best)
            if "joint_loss" in metrics:  # a joint search (autocomp.search.joint)
                loss = float(np.mean(metrics["joint_loss"]))
                tracker.log({"joint/loss": loss}, step=len(history["reward"]) - 1)
                log.info("joint fine-tuning: loss %.4f under the chunk's plans", loss)
            done = len(history["reward"])
            if checkpoint is not None:
                save_checkpoint(checkpoint, state, history, fingerprint)
            bar.update(
                task,
                completed=done,
                r=f"{best['reward']:.4f}",
                a=f"{best['accuracy']:.4f}",
                l=f"{best['latency_ms']:.4f}",
            )
            if show_progress and not bar.console.is_terminal:  # a background run's log
                log.info(
                    "search: %d/%d episodes, best reward %.4f (val acc %.4f, %.4f ms)",
                    done, total, best["reward"], best["accuracy"], best["latency_ms"],
                )  # fmt: skip
    return state, history, timings


def _progress(show: bool) -> Progress:
    columns = (
        TextColumn("[bold]search"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TextColumn("best r={task.fields[r]} acc={task.fields[a]} lat={task.fields[l]}ms"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, disable=not show, transient=False)


def _time_chunk(timings: dict, elapsed: float, episodes: int) -> None:
    """The first chunk of a process compiles: timed apart from the steady ones."""
    if timings["first_chunk_s"] == 0.0:
        timings["first_chunk_s"] = elapsed
    else:
        timings["steady_s"] += elapsed
        timings["steady_episodes"] += episodes


def _log_chunk(tracker, history: dict, start: int, best: dict) -> None:
    """Per-episode metrics to the tracker, and the running best (within budgets)."""
    for i in range(start, len(history["reward"])):
        ok = not bool(history["violation"][i])
        if ok and history["reward"][i] > best["reward"]:
            best.update(
                reward=float(history["reward"][i]),
                accuracy=float(history["accuracy"][i]),
                latency_ms=float(history["latency_ms"][i]),
            )
        tracker.log(
            {
                "episode/reward": float(history["reward"][i]),
                "episode/accuracy": float(history["accuracy"][i]),
                "episode/latency_ms": float(history["latency_ms"][i]),
                "episode/energy_mj": float(history["energy_mj"][i]),
                "episode/bytes": float(history["bytes"][i]),
                "episode/violation": int(history["violation"][i]),
                "best/reward": best["reward"],
            },
            step=i,
        )
