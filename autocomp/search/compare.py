"""Agents side by side: the per-run measures of ``python -m autocomp.bench agents`` and its
table, CSV and plot. Pure NumPy on the histories the searches return; the runs themselves are
in :mod:`autocomp.run.compare`.

Measures, per (agent, seed), over exactly ``evaluations`` plan evaluations:

- ``curve``: the best in-budget reward after each evaluation (``nan`` before the first
  in-budget plan); an agent that stops early (``uniform`` exhausts its grid) keeps its last value.
- ``best_reward``: the curve's last value.
- ``hypervolume``: the area that the evaluated plans dominate in the plane (validation accuracy,
  latency / base latency), maximizing accuracy and minimizing latency, up to the reference point
  (accuracy 0, latency = the base model's). 1.0 would be a plan at full accuracy and no latency.
- ``evals_to_95``: the first evaluation at which the curve comes within 5% (of its magnitude)
  of the best reward any agent reached on the experiment: ``best - 0.05 * |best|``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autocomp.io import atomic_write_bytes, atomic_write_text

TARGET_SHARE = 0.95


def best_curve(reward: np.ndarray, violation: np.ndarray, evaluations: int) -> np.ndarray:
    """float[evaluations]: the running best in-budget reward (nan until one is in budget)."""
    r = np.where(np.asarray(violation, bool), -np.inf, np.asarray(reward, float))[:evaluations]
    curve = np.maximum.accumulate(r) if len(r) else np.zeros(0)
    if len(curve) < evaluations:  # stopped early: its best stays
        last = curve[-1] if len(curve) else -np.inf
        curve = np.concatenate([curve, np.full(evaluations - len(curve), last)])
    return np.where(np.isfinite(curve), curve, np.nan)


def hypervolume(accuracy: np.ndarray, latency_frac: np.ndarray) -> float:
    """Area dominated by the points (accuracy up, latency down) up to (0, 1)."""
    keep = (np.asarray(latency_frac) < 1.0) & (np.asarray(accuracy) > 0.0)
    acc, lat = np.asarray(accuracy, float)[keep], np.asarray(latency_frac, float)[keep]
    total, best = 0.0, 0.0
    for i in np.argsort(lat, kind="stable"):
        if acc[i] > best:  # a new strip from this latency to the reference
            total += (1.0 - lat[i]) * (acc[i] - best)
            best = acc[i]
    return total


def target(best_overall: float) -> float:
    return best_overall - (1.0 - TARGET_SHARE) * abs(best_overall)


def evals_to_reach(curve: np.ndarray, level: float) -> float:
    """1-based evaluation count at which ``curve`` first reaches ``level`` (nan: never)."""
    hit = np.flatnonzero(np.nan_to_num(curve, nan=-np.inf) >= level)
    return float(hit[0] + 1) if len(hit) else math.nan


def _mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def summarize(runs: list[dict]) -> list[dict]:
    """One row per agent (in first-seen order) from the per-run records."""
    best_overall = max(
        (r["best_reward"] for r in runs if r["best_reward"] is not None), default=math.nan
    )
    level = target(best_overall)
    rows = []
    for name in dict.fromkeys(r["agent"] for r in runs):
        mine = [r for r in runs if r["agent"] == name]
        reward = _mean_std([r["best_reward"] for r in mine])
        hv = _mean_std([r["hypervolume"] for r in mine])
        reach = [evals_to_reach(np.asarray(r["curve"], float), level) for r in mine]
        reached = _mean_std(reach)
        test = _mean_std([r.get("test_accuracy") for r in mine])
        wall = _mean_std([r["wall_s"] for r in mine])
        rows.append(
            {
                "agent": name,
                "seeds": len(mine),
                "evaluations": mine[0]["evaluations"],
                "best_reward_mean": reward[0],
                "best_reward_std": reward[1],
                "hypervolume_mean": hv[0],
                "hypervolume_std": hv[1],
                "evals_to_95_mean": reached[0],
                "reached_95": f"{reached[2]}/{len(mine)}",
                "test_accuracy_mean": test[0],
                "test_accuracy_std": test[1],
                "wall_s_mean": wall[0],
            }
        )
    return rows


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict]) -> str:
    head = (
        "| agent | seeds | evaluations | best reward (mean ± sd) | hypervolume (mean ± sd) "
        "| evals to 95% (reached) | test acc after fine-tuning | wall s |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['agent']} | {r['seeds']} | {r['evaluations']} "
        f"| {_fmt(r['best_reward_mean'])} ± {_fmt(r['best_reward_std'])} "
        f"| {_fmt(r['hypervolume_mean'])} ± {_fmt(r['hypervolume_std'])} "
        f"| {_fmt(r['evals_to_95_mean'], 0)} ({r['reached_95']}) "
        f"| {_fmt(r['test_accuracy_mean'])} ± {_fmt(r['test_accuracy_std'])} "
        f"| {_fmt(r['wall_s_mean'], 1)} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


def write_report(out_dir: Path, runs: list[dict], title: str) -> dict[str, Path]:
    """``agents.csv``, ``agents.md`` and ``best_reward.png`` in ``out_dir`` (atomically)."""
    rows = summarize(runs)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    paths = {
        "csv": atomic_write_text(out_dir / "agents.csv", buf.getvalue()),
        "md": atomic_write_text(out_dir / "agents.md", f"### {title}\n\n" + markdown(rows)),
        "png": out_dir / "best_reward.png",
    }
    atomic_write_bytes(paths["png"], _plot(runs, title))
    return paths


def _plot(runs: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    floor, top = np.inf, -np.inf
    for name in dict.fromkeys(r["agent"] for r in runs):
        curves = np.array([r["curve"] for r in runs if r["agent"] == name], float)
        x = np.arange(1, curves.shape[1] + 1)
        with np.errstate(all="ignore"):
            mean = np.nanmean(curves, axis=0)
            low, high = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
        (line,) = ax.plot(x, mean, label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        # the view: from where the agents stand after 5% of the evaluations to the best
        early = mean[max(0, len(mean) // 20 - 1)]
        floor = min(floor, early) if np.isfinite(early) else floor
        top = max(top, np.nanmax(high)) if np.isfinite(np.nanmax(high)) else top
    if np.isfinite(floor) and np.isfinite(top) and top > floor:
        ax.set_ylim(floor - 0.05 * (top - floor), top + 0.05 * (top - floor))
    ax.set_xscale("log")
    ax.set_xlabel("plan evaluations (log scale)")
    ax.set_ylabel("best in-budget reward")
    ax.text(0.99, 0.02, "line: mean over seeds; band: min to max", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=7, color="0.4")  # fmt: skip
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
