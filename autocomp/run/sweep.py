"""A run over several rewards (``sweep.max_latency_frac=[...]``, ``sweep.latency_weight=[...]``):
one vmapped search for all of them (:func:`autocomp.search.batched.run_searches`), then per reward
the usual selection, materialization, fine-tuning and outputs in ``<run dir>/sweep/<label>/``, and
the accuracy-latency front over the rewards (``sweep.md``, ``sweep.json``, ``sweep.png``).

A variant whose ``metrics.json`` exists is finished and is not redone: a stopped run resumes from
the search checkpoint, then from the first unfinished variant.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

from autocomp.config import SweepConfig
from autocomp.io import atomic_write_json, atomic_write_text
from autocomp.search.batched import run_searches
from autocomp.search.loop import config_fingerprint
from autocomp.search.pareto import finish_figure
from autocomp.search.reward import make_reward_params
from autocomp.workflow import pipeline
from autocomp.workflow.tracking import NullTracker

log = logging.getLogger("autocomp.train")

COLUMNS = (  # (heading, row key, format); latencies in ms, accuracies before/after fine-tuning
    ("reward config", "label", "{}"),
    ("budget", "budget_ms", "{:.3f}"),
    ("latency", "latency_ms", "{:.3f}"),
    ("params", "params", "{:,}"),
    ("val acc", "val_accuracy_before_finetune", "{:.4f}"),
    ("test acc", "test_accuracy", "{:.4f}"),
    ("reward", "reward", "{:.4f}"),
)


def run_sweep(
    p, env, env_params, trainer, run_dir, resolved, tracker, show_progress, overrides, started
) -> dict:
    """Search every variant of ``p.config.sweep`` at once, then finish each; returns the
    top-level metrics (``sweep.json``'s rows, one per variant, and the front)."""
    from autocomp.run.builtin import Searched, finish

    variants = _variants(p.config, p.space.base, p.base_val_accuracy, env_params)
    states, histories, timings = _search(p.config, trainer, variants, run_dir, tracker,
                                         config_fingerprint(resolved), show_progress)  # fmt: skip

    def finish_one(k: int, v: Variant, out_dir: Path) -> dict:
        one = dataclasses.replace(p, config=v.config, reward=v.params.reward)
        searched = Searched(env, v.params, trainer, states[k], histories[k], timings)
        return finish(one, searched, out_dir, _resolved_for(resolved, v.reward), NullTracker(),
                      show_progress, overrides, started)  # fmt: skip

    rows = _finish_variants(variants, run_dir, finish_one)
    title = f"{p.config.name}: {len(rows)} rewards in one search on {p.profile.name}"
    return _write_front(run_dir, rows, title, tracker, timings, started)


def run_custom_sweep(st, config, run_dir, saved, show_progress, checkpoint, fingerprint,
                     tracker) -> dict:  # fmt: skip
    """:func:`run_sweep` for a user's own model (``st``: :func:`autocomp.run.custom.setup`),
    each variant's run directory as :func:`autocomp.run.custom.save_run` writes it."""
    from autocomp.run.custom import finish, save_run

    started = time.perf_counter()
    variants = _variants(config, st.space.base, st.base_val, st.env_params)
    states, histories, timings = _search(config, st.trainer, variants, run_dir, tracker,
                                         fingerprint, show_progress, checkpoint)  # fmt: skip

    def finish_one(k: int, v: Variant, out_dir: Path) -> dict:
        resume = pipeline.run_paths(out_dir)["finetune"] if config.resume else None
        result = finish(st, saved.data, v.config, v.params, states[k], histories[k], timings,
                        show_progress, started, resume)  # fmt: skip
        return save_run(
            result,
            v.config,
            out_dir,
            saved._replace(resolved=_resolved_for(saved.resolved, v.reward)),
        )

    rows = _finish_variants(variants, run_dir, finish_one)
    title = f"{st.net.name}: {len(rows)} rewards in one search on {st.profile.name}"
    return _write_front(run_dir, rows, title, tracker, timings, started)


class Variant(NamedTuple):
    """One reward of a sweep: its label, reward config, the run config of a single run of it,
    and the environment's params with its reward."""

    label: str
    reward: object
    config: object
    params: object


def _variants(config, base_costs, base_val: float, env_params) -> list[Variant]:
    out = []
    for label, reward_cfg in config.sweep.variants(config.reward):
        one = dataclasses.replace(config, reward=reward_cfg, sweep=SweepConfig())
        reward = make_reward_params(reward_cfg, tuple(base_costs[:3]), base_val)
        out.append(Variant(label, reward_cfg, one, env_params._replace(reward=reward)))
    labels = [v.label for v in out]
    log.info("sweep: %d rewards searched as one program: %s", len(labels), "; ".join(labels))
    return out


def _search(config, trainer, variants, run_dir, tracker, fingerprint, show_progress,
            checkpoint=False):  # fmt: skip
    """Every variant's search as one program (``checkpoint=False``: the run's own, with
    ``resume=true``)."""
    if checkpoint is False:
        checkpoint = pipeline.run_paths(run_dir)["checkpoint"] if config.resume else None
    return run_searches(trainer, [v.params for v in variants], jax.random.key(config.seed),
                        tracker, [v.label for v in variants], checkpoint, fingerprint,
                        show_progress)  # fmt: skip


def _finish_variants(variants, run_dir: Path, finish_one) -> list[dict]:
    """Each variant's selection, fine-tuning and outputs in ``<run_dir>/sweep/<label>/``; a
    variant with a ``metrics.json`` there finished before and is read back."""
    rows = []
    for k, v in enumerate(variants):
        out_dir = run_dir / "sweep" / v.label
        done = pipeline.run_paths(out_dir)["metrics"]
        if done.is_file():
            log.info("sweep %s: finished before, %s", v.label, done)
            metrics = json.loads(done.read_text())
        else:
            log.info("sweep %s (%d/%d): selection, fine-tuning, outputs", v.label, k + 1,
                     len(variants))  # fmt: skip
            metrics = finish_one(k, v, out_dir)
        rows.append(_row(v.label, v.reward, metrics))
    return rows


def _resolved_for(resolved: dict, reward_cfg) -> dict:
    """The run's resolved config as a single run of this variant would record it."""
    out = copy.deepcopy(resolved)
    out.setdefault("reward", {}).update(
        max_latency_frac=reward_cfg.max_latency_frac, latency_weight=reward_cfg.latency_weight
    )
    out["sweep"] = {"max_latency_frac": [], "latency_weight": []}
    return out


def _row(label: str, reward_cfg, metrics: dict) -> dict:
    comp = metrics["compressed"]
    budget = metrics["search"]["budgets"]["latency_ms"]
    return {
        "label": label,
        "max_latency_frac": reward_cfg.max_latency_frac,
        "latency_weight": reward_cfg.latency_weight,
        "budget_ms": budget if budget is not None else float("nan"),
        "latency_ms": comp["latency_ms"],
        "params": comp["params"],
        "val_accuracy_before_finetune": comp["val_accuracy_before_finetune"],
        "test_accuracy": comp["test_accuracy"],
        "reward": comp["reward"],
        "base_latency_ms": metrics["base"]["latency_ms"],
        "base_test_accuracy": metrics["base"]["test_accuracy"],
    }


def front_of(rows: list[dict]) -> list[int]:
    """Indices of the rows no other row beats in both test accuracy and latency."""
    keep = []
    for i, a in enumerate(rows):
        beaten = any(
            b["test_accuracy"] >= a["test_accuracy"]
            and b["latency_ms"] <= a["latency_ms"]
            and (b["test_accuracy"], b["latency_ms"]) != (a["test_accuracy"], a["latency_ms"])
            for b in rows
        )
        if not beaten:
            keep.append(i)
    return sorted(keep, key=lambda i: rows[i]["latency_ms"])


def _table(rows: list[dict], front: list[int]) -> Table:
    table = Table(
        title="sweep: one model per reward (ms; val acc before, test acc after fine-tuning)",
        caption="front: * on the accuracy-latency front over the rewards",
    )
    table.add_column("max lat frac", justify="right")
    table.add_column("lat weight", justify="right")
    for head, _, _ in COLUMNS[1:]:
        table.add_column(head, justify="right")
    table.add_column("front")
    for i, row in enumerate(rows):
        cells = [fmt.format(row[key]) for _, key, fmt in COLUMNS[1:]]
        frac, weight = row["max_latency_frac"], row["latency_weight"]
        table.add_row("-" if frac is None else f"{frac:g}", f"{weight:g}", *cells,
                      "*" if i in front else "")  # fmt: skip
    return table


def _markdown(rows: list[dict], front: list[int]) -> str:
    heads = [head for head, _, _ in COLUMNS] + ["front"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for i, row in enumerate(rows):
        cells = [fmt.format(row[key]) for _, key, fmt in COLUMNS]
        lines.append("| " + " | ".join([*cells, "*" if i in front else ""]) + " |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, rows: list[dict], front: list[int], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = np.array([r["latency_ms"] for r in rows])
    acc = 100 * np.array([r["test_accuracy"] for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter(lat, acc, c="tab:blue", s=30, label="compressed model (after fine-tuning)")
    for r, x, y in zip(rows, lat, acc, strict=True):
        ax.annotate(r["label"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.plot(lat[front], acc[front], "r-", lw=1.2, label="front over the rewards")
    ax.scatter([rows[0]["base_latency_ms"]], [100 * rows[0]["base_test_accuracy"]], marker="s",
               c="k", s=50, label="base model")  # fmt: skip
    ax.set_xlabel("latency (ms, device cost table)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    finish_figure(fig, ax, path)


def _write_front(run_dir: Path, rows: list[dict], title: str, tracker, timings, started) -> dict:
    front = front_of(rows)
    _plot(run_dir / "sweep.png", rows, front, title)
    atomic_write_text(run_dir / "sweep.md", _markdown(rows, front))
    Console().print(_table(rows, front))
    metrics = {
        "sweep": rows,
        "front": [rows[i]["label"] for i in front],
        "search": {"variants": len(rows), **timings},
        "wall_time_s": time.perf_counter() - started,
    }
    atomic_write_json(run_dir / "sweep.json", metrics)
    tracker.log_table("sweep", list(rows[0]), [list(r.values()) for r in rows])
    tracker.log_image("sweep", run_dir / "sweep.png")
    tracker.summary({f"{r['label']}/test_accuracy": r["test_accuracy"] for r in rows})
    tracker.finish()
    atomic_write_json(pipeline.run_paths(run_dir)["metrics"], metrics)
    log.info("sweep: %d models in %s/sweep, front %s", len(rows), run_dir, metrics["front"])
    return metrics
