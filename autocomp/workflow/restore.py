"""A finished run of a ``model._target_`` model rebuilt from its run directory, for
``python -m autocomp.export run=<dir>``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autocomp.data import Dataset
from autocomp.models.discovery import ModelError
from autocomp.models.linen import LinenNetwork
from autocomp.workflow.custom import (
    build_model,
    compressed_model,
    load_checkpoint,
    network,
    output_fn,
    predict,
    template,
)


@dataclass
class Restored:
    """A finished run of a user's model, rebuilt (see :func:`restore_run`)."""

    plan: object
    metrics: dict
    record: dict
    data: Dataset
    network: object
    compressed: object
    params: object

    def logits(self, x: np.ndarray) -> np.ndarray:
        return predict(self.compressed.logits, self.params, x)


def restore_run(run_dir: Path) -> Restored:
    """The compressed model of a ``model._target_`` run: the model rebuilt from its import path
    and base checkpoint, the plan materialized on it again (distilled replacements from the
    cache the run filled), the fine-tuned params of ``compressed_params.msgpack`` put in."""
    import json

    from flax import serialization
    from omegaconf import OmegaConf

    from autocomp.config import RootConfig
    from autocomp.data import load_dataset
    from autocomp.search.plan import Plan, prepare_aux
    from autocomp.techniques import make_techniques
    from autocomp.workflow.pipeline import prepare_context, recorded_data, run_paths

    paths = run_paths(Path(run_dir))
    for key in ("run", "metrics", "params", "plan"):
        if not paths[key].is_file():
            raise ModelError(
                f"{str(paths[key])!r} is missing: {str(run_dir)!r} is not a finished autocomp "
                "run; point run= at the directory a train run printed"
            )
    record = json.loads(paths["run"].read_text())
    config = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(RootConfig), record["config"])
    )
    data = load_dataset(recorded_data(record))
    model = build_model(config.model)
    like = template(model, config.model, data.x_train[:1])
    checkpoint = record.get("base_checkpoint") or config.model.checkpoint
    if not checkpoint:
        raise ModelError(
            f"{str(run_dir)!r} does not say where its base model is (a run of an older "
            "autocomp that trained it): re-run it, or pass its checkpoint as model.checkpoint"
        )
    variables = load_checkpoint(checkpoint, like)
    plan = Plan.load(paths["plan"])
    net = network(model, variables, data.x_train[:1], dict(config.model.apply_kwargs),
                  output_fn(config.model), config.model.name)  # fmt: skip
    techniques = make_techniques(config.env.techniques)
    aux = prepare_aux(net.layers, net.base_params(), techniques, prepare_context(config), net,
                      data.x_train)  # fmt: skip
    cmp = compressed_model(net, aux, techniques, plan)
    saved = serialization.msgpack_restore(paths["params"].read_bytes())
    params = serialization.from_state_dict(
        cmp.params, saved["params"] if isinstance(net, LinenNetwork) else saved
    )
    metrics = json.loads(paths["metrics"].read_text())
    return Restored(plan, metrics, record, data, net, cmp, params)
