"""Run tracking: Weights & Biases (offline by default) or nothing."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from autocomp.config import LoggerConfig

log = logging.getLogger(__name__)


class NullTracker:
    """``logger=none``: tracks nothing."""

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def log_image(self, key: str, path: str | Path) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    """A wandb run in ``run_dir/wandb``. Offline unless ``logger.mode=online``; sync an offline
    run later with ``wandb sync <run_dir>/wandb/offline-run-*``."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict, name: str):
        # Our top-level package is named `agents`, which wandb mistakes for the OpenAI Agents SDK
        # and then advertises Weave for; nothing here uses Weave.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        import wandb

        self._wandb = wandb
        mode = os.environ.get("WANDB_MODE", cfg.mode)
        self.run = wandb.init(
            project=cfg.project,
            name=name,
            dir=str(run_dir),
            mode=mode,
            config=config,
            tags=list(cfg.tags),
            settings=wandb.Settings(console="off", silent=True),
            reinit="finish_previous",
        )
        log.info("wandb run %s (%s) in %s", self.run.id, mode, run_dir / "wandb")

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)

    def log_table(self, key, columns, rows):
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    def log_image(self, key, path):
        self.run.log({key: self._wandb.Image(str(path))})

    def summary(self, values):
        self.run.summary.update(values)

    def finish(self):
        self.run.finish()


def make_tracker(cfg: LoggerConfig, run_dir: Path, config: dict, name: str) -> NullTracker:
    if cfg.name == "none" or cfg.mode == "disabled":
        return NullTracker()
    return WandbTracker(cfg, run_dir, config, name)


def track_run(tracker: NullTracker, layers, front: tuple, pareto_png: Path, base: dict,
              compressed: dict) -> None:  # fmt: skip
    """A finished run in its tracker: the plan (``layers``: its :class:`LayerChoice` rows), the
    front (``(columns, rows)``), the Pareto image and the summary (``base/...`` and
    ``compressed/...``: flat top-level keys, the metrics sweeps optimize), then finish."""
    tracker.log_table(
        "plan",
        ["layer", "technique", "ratio", "latency_ms", "energy_mj"],
        [[c.name, c.technique, c.ratio, c.latency_ms, c.energy_mj] for c in layers],
    )
    tracker.log_table("pareto_front", *front)
    tracker.log_image("pareto", pareto_png)
    flat = {f"base/{k}": v for k, v in base.items() if k != "cost_sources"}
    tracker.summary(flat | {f"compressed/{k}": v for k, v in compressed.items()
                            if k != "cost_sources"})  # fmt: skip
    tracker.finish()
