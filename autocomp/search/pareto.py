"""The Pareto front of evaluated plans (accuracy up; latency, energy and size down)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autocomp.io import atomic_write_bytes


def pareto_front(accuracy: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points.

    Args:
        accuracy: float[N], higher is better.
        costs: float[N, K], lower is better.
    """
    objectives = np.concatenate([-np.asarray(accuracy)[:, None], np.asarray(costs)], axis=1)
    n = len(objectives)
    keep = np.ones(n, bool)
    for i in range(n):
        if not keep[i]:
            continue
        dominated = np.all(objectives[i] <= objectives, axis=1) & np.any(
            objectives[i] < objectives, axis=1
        )
        keep &= ~dominated
    return np.flatnonzero(keep)


def plot_pareto(
    path: str | Path,
    accuracy: np.ndarray,
    latency: np.ndarray,
    size: np.ndarray,
    front: Sequence[int],
    base: tuple[float, float],
    chosen: tuple[float, float],
    budget_ms: float | None = None,
    title: str = "",
) -> Path:
    """Accuracy vs latency of every evaluated plan (colour: size), front and chosen plan marked."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    sc = ax.scatter(latency, 100 * accuracy, c=np.log10(size), s=8, cmap="viridis", alpha=0.6)
    fig.colorbar(sc, ax=ax, label="log10 size (bytes)")
    front = np.asarray(front, int)
    ax.scatter(
        latency[front],
        100 * accuracy[front],
        s=14,
        facecolors="none",
        edgecolors="r",
        lw=0.8,
        label="Pareto front (acc, latency, energy, size)",
    )
    front2d = pareto_front(accuracy, np.asarray(latency)[:, None])
    order = front2d[np.argsort(latency[front2d])]
    ax.step(
        latency[order],
        100 * accuracy[order],
        "r-",
        where="post",
        lw=1.2,
        label="front (acc, latency)",
    )
    ax.scatter([base[0]], [100 * base[1]], marker="s", c="k", s=50, label="base model")
    ax.scatter(
        [chosen[0]],
        [100 * chosen[1]],
        marker="*",
        c="orange",
        s=160,
        ec="k",
        label="chosen plan",
        zorder=5,
    )
    if budget_ms is not None and np.isfinite(budget_ms):
        ax.axvline(budget_ms, color="grey", ls="--", lw=1, label="latency budget")
    ax.set_xlabel("latency (ms, device cost table)")
    ax.set_ylabel("validation accuracy (%), before fine-tuning")
    ax.set_title(title)
    return finish_figure(fig, ax, path)


def finish_figure(fig, ax, path: str | Path) -> Path:
    """Grid, legend at the lower right, then the PNG written atomically and the figure closed."""
    import io

    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
