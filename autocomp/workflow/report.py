"""What a person reads at the end of a run: a side-by-side table of base vs compressed."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.table import Table

from autocomp.search.plan import Plan

ROWS = (
    ("test accuracy (%)", "test_accuracy", lambda v: f"{100 * v:.2f}"),
    ("parameters", "params", lambda v: f"{v:,}"),
    ("size (bytes)", "bytes", lambda v: f"{v:,}"),
    ("MACs", "macs", lambda v: f"{v:,}"),
    ("latency (ms)", "latency_ms", lambda v: f"{v:.4f}"),
    ("energy (mJ)", "energy_mj", lambda v: f"{v:.4f}"),
)

log = logging.getLogger(__name__)


def summary_table(metrics: dict, device: str) -> Table:
    base, comp, ratios = metrics["base"], metrics["compressed"], metrics["ratios"]
    table = Table(title=f"autocomp: base vs compressed ({device})")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("compressed", justify="right")
    table.add_column("ratio", justify="right")
    for label, key, fmt in ROWS:
        if key == "test_accuracy":
            ratio = f"-{ratios['accuracy_drop_points']:.2f} pts"
        else:
            ratio = f"{ratios[f'{key}_x']:.2f}x"
        table.add_row(label, fmt(base[key]), fmt(comp[key]), ratio)
    b8, c8 = base.get("latency_int8_ms"), comp.get("latency_int8_ms")
    if b8 is not None and c8 is not None:  # the table's int8 column (model_int8.tflite)
        table.add_row("int8 latency (ms)", f"{b8:.4f}", f"{c8:.4f}", f"{b8 / max(c8, 1e-12):.2f}x")
    return table


def plan_table(plan: Plan) -> Table:
    table = Table(title="chosen plan")
    for col in ("layer", "technique", "ratio", "kernels", "latency ms", "energy mJ", "params"):
        table.add_column(col)
    for c in plan.layers:
        table.add_row(
            c.name,
            c.technique,
            f"{c.ratio:g}",
            " + ".join("x".join(map(str, s)) for s in c.shape),
            f"{c.latency_ms:.4f}",
            f"{c.energy_mj:.4f}",
            f"{c.params:,}",
        )
    return table


def print_report(metrics: dict, plan: Plan, device: str, console: Console | None = None) -> None:
    console = console or Console()
    console.print(plan_table(plan))
    console.print(summary_table(metrics, device))


class EpochBar:
    """A rich progress bar for epochs; ``bar.callback`` is an ``on_epoch(epoch, loss)``.

    When the output is not a terminal, each epoch is also logged (so ``train.log`` of a
    background run shows progress).

    The bar appears at the first epoch, so nothing shows when there is nothing to train (a
    cached model, or input rejected before training).
    """

    def __init__(self, label: str, total: int, enabled: bool = True):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs | loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self._label, self._total = label, total
        # Without a terminal (nohup, a cluster job) a live bar is not seen: log epochs instead.
        self._log_epochs = enabled and not self._progress.console.is_terminal
        self._task = self._progress.add_task(label, total=total, loss="-")
        self._started = False

    def __enter__(self) -> EpochBar:
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._progress.stop()

    def callback(self, epoch: int, loss: float) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(self._task, completed=epoch + 1, loss=f"{loss:.4f}")
        if self._log_epochs:
            log.info("%s: epoch %d/%d, loss %.4f", self._label, epoch + 1, self._total, loss)
