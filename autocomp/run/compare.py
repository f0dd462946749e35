"""Every agent on one experiment with the same number of plan evaluations and the same seeds:
the runs behind ``python -m autocomp.bench agents``.

The base model, the search space and the environment are built once; each (agent, seed) runs a
whole search (resumable: its search checkpoint is kept in ``out/checkpoints`` until the run's
record is in ``out/runs.jsonl``, and finished runs are not repeated), then the plan it would
deliver (the best in-budget plan among its evaluations, its policy's plan counted as one of
them) is materialized and fine-tuned as the experiment's run does, for its test accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from agents import AGENTS
from autocomp.io import append_jsonl, read_jsonl
from autocomp.run.compose import compose
from autocomp.run.subject import Subject
from autocomp.run.subject import subject as make_subject
from autocomp.search.compare import best_curve, hypervolume, write_report
from autocomp.search.joint import joint_settings
from autocomp.search.loop import run_search
from autocomp.workflow import pipeline
from autocomp.workflow.tracking import NullTracker

log = logging.getLogger("autocomp.bench")


def agent_names() -> list[str]:
    return list(AGENTS)


def _fingerprint(overrides: Sequence[str], name: str, seed: int, evaluations: int) -> str:
    blob = json.dumps([list(overrides), name, seed, evaluations])
    return hashlib.sha256(blob.encode()).hexdigest()


def _key(name: str, seed: int, evaluations: int) -> str:
    return f"{name}-seed{seed}-{evaluations}"


def _history_at(history: dict, n: int) -> dict:
    return {k: v[:n] for k, v in history.items()}


def run_one(s: Subject, config, seed: int, evaluations: int, checkpoint: Path,
            fingerprint: str, finetune: bool, show_progress: bool) -> dict:  # fmt: skip
    """One agent's search of ``evaluations`` plans and the fine-tuned result of its plan."""
    env, env_params = s.env, s.env_params
    trainer = s.trainer(config.agent)
    started = time.perf_counter()
    state, history, timings = run_search(
        trainer, env_params, jax.random.key(seed), NullTracker(), checkpoint, fingerprint,
        show_progress,
    )  # fmt: skip
    # A joint search (agent.joint_finetune) scores its last plans under its tuned weights.
    joint = joint_settings(config.agent) is not None
    policy = trainer.policy(state, env_params)
    env_params = trainer.scored_params(state, env_params)
    # Equal budgets: the first evaluations - 1 plans of the search and the policy's plan.
    history = _history_at(history, evaluations - 1)
    last = jax.device_get(env.evaluate_plans(np.asarray(policy)[None], env_params))
    history = pipeline.merge_history(history, {k: v[None] for k, v in last.items()})
    search_s = time.perf_counter() - started
    base_latency = float(s.space.base[0])
    record = {
        "key": _key(config.agent.name, seed, evaluations),
        "agent": config.agent.name,
        "seed": seed,
        "evaluations": evaluations,
        "evaluated": int(len(history["reward"])),
        "curve": best_curve(history["reward"], history["violation"], evaluations).tolist(),
        "hypervolume": hypervolume(history["accuracy"], history["latency_ms"] / base_latency),
        "first_chunk_s": timings["first_chunk_s"],
        "search_s": search_s,
    }
    finite = [c for c in record["curve"] if c == c]
    record["best_reward"] = finite[-1] if finite else None
    sel = s.select(history, env.full_scorer(env_params, always=True) if joint else None)
    indices = sel.plans[sel.chosen]
    record["plan"] = np.asarray(indices).tolist()
    record["val_accuracy"] = float(sel.accuracy[sel.chosen])
    record["latency_frac"] = float(sel.costs[sel.chosen, 0] / base_latency)
    if finetune:
        tuned = jax.device_get(env_params.base_params) if joint else None
        record["test_accuracy"] = s.tuned(indices, tuned)
    record["wall_s"] = time.perf_counter() - started
    return record


def compare_agents(
    overrides: Sequence[str],
    out_dir: Path,
    evaluations: int,
    seeds: int,
    agents: Sequence[str] | None = None,
    finetune: bool = True,
    show_progress: bool = True,
) -> dict[str, Path]:
    """Run (or resume) the comparison into ``out_dir``; returns the report's paths."""
    agents = list(agents or AGENTS)
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agents {unknown}; choose from {sorted(AGENTS)}")
    if evaluations < 2 or seeds < 1:
        raise ValueError(f"evaluations={evaluations} must be >= 2 and seeds={seeds} >= 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    records = out_dir / "runs.jsonl"
    runs = read_jsonl(records) if records.exists() else []
    done = {r["key"] for r in runs}
    base_config = compose(overrides)
    subject = make_subject(base_config, out_dir)
    for name in agents:
        config = compose([*overrides, f"agent={name}", f"agent.episodes={evaluations}"])
        for seed in range(seeds):
            if _key(name, seed, evaluations) in done:
                continue
            log.info("agents: %s seed %d (%d evaluations)", name, seed, evaluations)
            ckpt = out_dir / "checkpoints" / f"{name}-seed{seed}.msgpack"
            ckpt.parent.mkdir(exist_ok=True)
            fp = _fingerprint(overrides, name, seed, evaluations)
            record = run_one(subject, config, seed, evaluations, ckpt, fp, finetune,
                             show_progress)  # fmt: skip
            append_jsonl(records, record)
            ckpt.unlink(missing_ok=True)
            runs.append(record)
    runs = [r for r in runs if r["evaluations"] == evaluations and r["agent"] in agents]
    title = (
        f"{base_config.name}: {evaluations} plan evaluations, {seeds} seeds, "
        f"device {subject.device}"
    )
    return write_report(out_dir, runs, title)
