"""What :func:`autocomp.compress` returns: the plan, the metrics, the compressed model, and
methods to save and export it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from autocomp.data import Dataset
from autocomp.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from autocomp.models.materialized import Compressed
from autocomp.search.plan import Plan
from autocomp.workflow.custom import predict
from autocomp.workflow.outputs import plot_selection


@dataclass
class Result:
    """What :func:`compress` returns.

    Attributes:
        plan: the chosen per-layer plan (the same ``plan.json`` as a CLI run).
        metrics: ``base`` and ``compressed`` (test accuracy, params, bytes, MACs, latency and
            energy from the device table), their ratios, the materialization check.
        model: the compressed model: an ordinary linen module
            (:class:`autocomp.models.materialized.Substituted`) for a linen model, a real
            ``nnx.Module`` for an NNX one.
        variables: linen: its variables, ``model.apply(variables, x, **apply_kwargs)``;
            NNX: ``None`` (the weights are in ``model``).
        network: what autocomp saw in the original model.
        compressed: the compressed model as functions of ``params``, its trainable params.
        selection: the search's distinct plans, their accuracy-latency front and the chosen
            one (:class:`autocomp.workflow.pipeline.Selection`).
        front: that front as table rows, ``(columns, rows)``.
    """

    plan: Plan
    metrics: dict
    model: Any
    variables: dict | None
    network: Any
    compressed: Compressed
    params: Any
    selection: Any = None
    front: tuple | None = None

    def logits(self, x: np.ndarray) -> np.ndarray:
        return predict(self.compressed.logits, self.params, np.asarray(x, np.float32))

    def save(self, run_dir: str | Path) -> Path:
        """``plan.json``, ``metrics.json``, ``compressed_params.msgpack`` (the trainable
        params, and for linen the other collections too) and ``pareto.png``, written
        atomically."""
        run_dir = Path(run_dir)
        atomic_write_text(run_dir / "plan.json", self.plan.to_json())
        if self.selection is not None:
            m, budget = self.metrics, self.metrics["search"]["budgets"]["latency_ms"]
            title = (f"{self.plan.model}: {len(self.selection.plans)} unique plans on "
                     f"{m['device_table']['name']}")  # fmt: skip
            plot_selection(run_dir / "pareto.png", self.selection, m["base"]["latency_ms"],
                           m["base"]["val_accuracy"], float("inf") if budget is None else budget,
                           title)  # fmt: skip
        tree = self.variables if self.variables is not None else self.params
        tree = tree.to_pure_dict() if hasattr(tree, "to_pure_dict") else tree
        blob = serialization.msgpack_serialize(jax.tree.map(np.asarray, tree))
        atomic_write_bytes(run_dir / "compressed_params.msgpack", blob)
        atomic_write_json(run_dir / "metrics.json", self.metrics)
        return run_dir

    def export(self, out_dir: str | Path, data: Dataset, int8: bool = True) -> dict:
        """``model.tflite`` (float32), ``model_int8.tflite``, ``model_mixed.tflite`` (where the
        plan has ``+q8`` layers) and ``verify.json``: the files run in the LiteRT interpreter on
        the test split against the JAX model."""
        from autocomp.export import export_function, int8_layer_count

        fn = self.compressed.export_fn(self.params)
        n8 = int8_layer_count(self.compressed.deployed_ops)
        return export_function(fn, self.logits(data.x_test), data, Path(out_dir), int8,
                               metrics=self.metrics, int8_layers=n8)  # fmt: skip
