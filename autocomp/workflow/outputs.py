"""Writing a run directory. Every file is written atomically; ``metrics.json`` comes last, so
its presence means the run finished."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from autocomp.io import atomic_write_bytes, atomic_write_json, atomic_write_text, git_sha
from autocomp.search.pareto import plot_pareto
from autocomp.workflow.pipeline import Compressed, Prepared, Selection, run_paths


def plot_selection(path: Path, sel: Selection, base_latency: float, base_val: float,
                   budget_ms: float, title: str) -> Path:  # fmt: skip
    """``pareto.png``: every evaluated plan, the front, the base model and the chosen plan."""
    return plot_pareto(
        path, sel.accuracy, sel.costs[:, 0], sel.costs[:, 2], sel.front,
        base=(base_latency, base_val),
        chosen=(float(sel.costs[sel.chosen, 0]), float(sel.accuracy[sel.chosen])),
        budget_ms=budget_ms if np.isfinite(budget_ms) else None, title=title,
    )  # fmt: skip


def write_run(
    run_dir: Path,
    p: Prepared,
    sel: Selection,
    comp: Compressed,
    params: dict,
    metrics: dict,
    resolved: dict,
    overrides: Sequence[str] = (),
) -> dict[str, Path]:
    """Write plan, params, Pareto plot, run record and metrics into ``run_dir``."""
    paths = run_paths(run_dir)
    atomic_write_text(paths["plan"], comp.plan.to_json())
    blob = {
        "ops": [op.__dict__ for op in comp.ops],
        "params": jax.tree.map(np.asarray, params),
        "masks": {k: np.asarray(v) for k, v in comp.masks.items()},
    }
    atomic_write_bytes(paths["params"], serialization.msgpack_serialize(blob))
    title = f"{p.config.name}: {len(sel.plans)} unique plans on {p.profile.name}"
    budget = float(np.asarray(p.reward.budgets)[0])
    plot_selection(paths["pareto"], sel, float(p.space.base[0]), p.base_val_accuracy, budget, title)
    atomic_write_json(
        paths["run"],
        {
            "git_sha": git_sha(),
            "seed": p.config.seed,
            "overrides": list(overrides),
            "cwd": os.getcwd(),  # relative data paths in the config are relative to it
            "config": resolved,
            "device_table": {
                "name": p.profile.name,
                "path": p.profile.path,
                "kind": p.profile.kind,
            },
            "host": {
                "python": platform.python_version(),
                "jax": jax.__version__,
                "machine": platform.machine(),
            },
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    atomic_write_json(paths["metrics"], metrics)
    return paths
