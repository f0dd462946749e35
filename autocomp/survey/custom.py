"""The survey's table for a user's model (``model._target_``): every technique alone, on every
layer it fits, through the own-model front end.

The rows are those of :mod:`autocomp.survey.builtin`; costs come from the search space of the
user's model (its layers and every op between them, :mod:`autocomp.models.graph_costs`), the
largest feature map and the host latency from the compressed model itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import jax
import numpy as np

from autocomp.config import RootConfig
from autocomp.search.space import CHANNELS, build_search_space, plan_cost
from autocomp.techniques import family, identity_index, technique_fits

BYTES_PER_FLOAT = 4


def largest_feature_bytes(fn, example: np.ndarray) -> int:
    """The largest intermediate tensor (float32) of ``fn`` on one example, input and output
    excluded (a view such as a reshape counts as the tensor it shows)."""
    closed = jax.make_jaxpr(fn)(example[None])
    ends = {id(v) for v in (*closed.jaxpr.invars, *closed.jaxpr.outvars)}
    sizes = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            for v in eqn.outvars:
                if id(v) not in ends and hasattr(v.aval, "shape"):
                    sizes.append(int(np.prod(v.aval.shape)))
            for key in ("jaxpr", "call_jaxpr"):
                if key in eqn.params:
                    walk(getattr(eqn.params[key], "jaxpr", eqn.params[key]))

    walk(closed.jaxpr)
    return BYTES_PER_FLOAT * max(sizes, default=0)


class CustomSubject:
    """What a survey measures on a user's model: its layers, techniques, and a row maker."""

    def __init__(self, config: RootConfig, finetune_data, ft, measure: bool):
        from autocomp.data import load_dataset
        from autocomp.search.plan import prepare_aux
        from autocomp.workflow.custom import base_variables, network, output_fn
        from autocomp.workflow.pipeline import cache_root, prepare_context, validate

        self.config, self.ft, self.measure = config, ft, measure
        self.data = load_dataset(config.data)
        self.finetune_data = finetune_data(self.data)
        self.profile, techniques = validate(config)
        self.techniques = tuple(techniques)
        model, variables, _ = base_variables(config, self.data, _base_dir(config, cache_root))
        m = config.model
        self.net = network(model, variables, self.data.x_train[:1], dict(m.apply_kwargs),
                           output_fn(m), m.name)  # fmt: skip
        self.layers = self.net.layers
        self.ratios = tuple(config.env.ratios)
        self.space = build_search_space(
            (), self.layers, self.techniques, self.ratios, self.profile,
            self.data.x_train.shape[1:], self.net.graph_priced(), self.net.num_groups,
        )  # fmt: skip
        self.base_params = self.net.base_params()
        self.aux = prepare_aux(self.layers, self.base_params, self.techniques,
                               prepare_context(config), self.net, self.data.x_train)  # fmt: skip

    def indices(self, technique: str, ratio: float) -> np.ndarray | None:
        """``technique`` at ``ratio`` on every layer it fits, ``keep`` elsewhere (None: none)."""
        names = [t.name for t in self.techniques]
        t, keep = names.index(technique), identity_index(self.techniques)
        r = self.ratios.index(ratio)
        rows = [
            (t, r) if technique_fits(self.techniques[t], la) is None else (keep, 0)
            for la in self.layers
        ]
        return np.array(rows, np.int32) if any(row[0] == t for row in rows) else None

    def row(self, name: str, ratio: float, indices: np.ndarray | None):
        from autocomp.search.plan import plan_from_indices
        from autocomp.survey.builtin import SurveyRow
        from autocomp.workflow.custom import accuracy, compressed_model, finetune

        keep = identity_index(self.techniques)
        if indices is None:  # the original
            indices = np.array([(keep, 0)] * len(self.layers), np.int32)
        plan = plan_from_indices(self.net.name, self.layers, self.techniques, self.ratios,
                                 indices)  # fmt: skip
        cmp = compressed_model(self.net, self.aux, self.techniques, plan)
        start = time.perf_counter()
        params = cmp.params
        if name != "original":
            params = finetune(self.net, cmp, self.finetune_data, self.ft, self.config.seed,
                              self.base_params)  # fmt: skip
        seconds = time.perf_counter() - start
        x, y = self.data.x_test, self.data.y_test
        cost = dict(zip(CHANNELS, plan_cost(self.space, indices), strict=True))
        fn = cmp.export_fn(params)
        return SurveyRow(
            technique=name,
            family=family(name) if name != "original" else "",
            ratio=ratio,
            layers="all"
            if name == "original"
            else ",".join(
                la.name for la, (t, _) in zip(self.layers, indices, strict=True) if t != keep
            ),  # fmt: skip
            test_accuracy=accuracy(cmp.logits, params, x, y),
            params=int(cost["params"]),
            bytes=int(cost["bytes"]),
            max_feature_bytes=largest_feature_bytes(fn, x[0]),
            macs=int(cost["macs"]),
            latency_ms=float(cost["latency_ms"]),
            energy_mj=float(cost["energy_mj"]),
            measured_ms=self._measured(fn, x[0], cmp.deployed_ops),
            finetune_s=seconds,
        )

    def _measured(self, fn, example, ops) -> float | None:
        """The host latency of the file the row's table latency stands for (mixed where
        ``+q8`` layers are priced as int8, :func:`autocomp.devices.mixed.deployed_file`)."""
        if not self.measure:
            return None
        from autocomp.devices.mixed import deployed_file
        from autocomp.export import TfliteModel

        lite = TfliteModel(deployed_file(fn, example.shape, ops, self.profile))
        return float(lite.latency_ms(example)["median"])


def _base_dir(config: RootConfig, cache_root) -> Path:
    """Where a survey keeps the base model it trains (a model without ``model.checkpoint``),
    by what it depends on."""
    key = {"model": asdict(config.model), "data": asdict(config.data),
           "base": asdict(config.base), "seed": config.seed}  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return cache_root(config.base) / "custom" / digest[:16]
