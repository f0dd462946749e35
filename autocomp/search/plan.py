"""Plans: per-layer (technique, ratio) choices, their JSON form, and materialization.

A plan is data. During search it is two int arrays applied inside one compiled function; once
chosen it is materialized here, on the host, into a really smaller model: real shapes, pruned
filters removed (with the next layer's inputs), factorized layers split in two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import jax
import numpy as np

from autocomp.config import ModelConfig
from autocomp.models.layers import LayerInfo, as_network, compressible_layers, layer_inputs
from autocomp.models.ops import Op, base_ops
from autocomp.techniques import (
    Materialized,
    PrepareContext,
    Technique,
    TechniqueError,
    check_ratio,
    identity_technique,
    make_technique,
    slice_outputs,
    technique_fits,
)

PLAN_VERSION = 1


class PlanError(ValueError):
    """A plan that does not fit the model; the message names the layer and the problem."""


@dataclass(frozen=True)
class LayerChoice:
    """One layer of a plan, with what it became (filled in when the plan is materialized)."""

    name: str
    technique: str
    ratio: float
    shape: list = field(default_factory=list)
    latency_ms: float | None = None
    energy_mj: float | None = None
    params: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class Plan:
    model: str
    layers: tuple[LayerChoice, ...]
    version: int = PLAN_VERSION

    def to_json(self) -> str:
        doc = {
            "version": self.version,
            "model": self.model,
            "layers": [asdict(layer) for layer in self.layers],
        }
        return json.dumps(doc, indent=2) + "\n"

    @staticmethod
    def from_json(text: str) -> Plan:
        """Parse a plan (JSON only: nothing in it is ever executed)."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise PlanError(f"malformed plan: not JSON ({err})") from err
        errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
            raise PlanError(
                f"plan does not follow autocomp/search/plan.schema.json at {where}: "
                f"{errors[0].message}"
            )
        # The schema fixed the version, the keys and their types.
        layers = tuple(
            LayerChoice(**{**layer, "ratio": float(layer["ratio"])}) for layer in doc["layers"]
        )
        return Plan(model=doc["model"], layers=layers)

    @staticmethod
    def load(path: str | Path) -> Plan:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise PlanError(f"cannot read plan {str(path)!r}: {err}") from err
        return Plan.from_json(text)


@functools.cache
def _validator():
    import jsonschema

    schema = json.loads(resources.files("autocomp.search").joinpath("plan.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def plan_from_indices(
    model_name: str,
    layers: Sequence[LayerInfo],
    techniques: Sequence[Technique],
    ratios: Sequence[float],
    indices: np.ndarray,
) -> Plan:
    """A :class:`Plan` from an int array [L, 2] of (technique, ratio bin) indices."""
    indices = np.asarray(indices)
    return Plan(
        model=model_name,
        layers=tuple(
            LayerChoice(layer.name, techniques[int(t)].name, float(ratios[int(r)]))
            for layer, (t, r) in zip(layers, indices, strict=True)
        ),
    )


def prepare_aux(
    layers: Sequence[LayerInfo],
    params: dict,
    techniques: Sequence[Technique],
    ctx: PrepareContext | None = None,
    ops: Sequence[Op] | None = None,
    x_train: np.ndarray | None = None,
) -> tuple[dict, ...]:
    """Per layer, every fitting technique's precomputation on the trained weights.

    With ``ops`` and ``x_train`` (training images), each layer's inputs in the trained model
    are recorded for the techniques that distill replacements (``ctx.distill.examples``
    images); ``ctx`` gives the ratio bins and distillation settings.
    """
    ctx = ctx or PrepareContext()
    inputs: list[np.ndarray | None] = [None] * len(layers)
    if ops is not None and x_train is not None:
        inputs = layer_inputs(ops, layers, params, x_train[: ctx.distill.examples])
    net = as_network(ops, layers) if ops is not None else None
    return tuple(
        {
            tech.name: tech.prepare(
                layer,
                jax.tree.map(
                    np.asarray, net.layer_params(params, layer) if net else params[layer.name]
                ),
                dataclasses.replace(ctx, inputs=inputs[layer.index]),
            )
            for tech in techniques
            if technique_fits(tech, layer) is None
        }
        for layer in layers
    )


def check_plan(plan: Plan, layers: Sequence[LayerInfo], techniques: Sequence[Technique]) -> None:
    """Raise :class:`PlanError`/:class:`TechniqueError` if ``plan`` does not fit the model."""
    by_name = {t.name: t for t in techniques}
    names = [layer.name for layer in layers]
    if [c.name for c in plan.layers] != names:
        raise PlanError(
            f"plan for model {plan.model!r} lists layers {[c.name for c in plan.layers]}, but "
            f"this model's compressible layers are {names}"
        )
    for layer, choice in zip(layers, plan.layers, strict=True):
        if choice.technique not in by_name:
            raise TechniqueError(
                f"layer {layer.name!r}: unknown technique {choice.technique!r}; "
                f"available: {sorted(by_name)}"
            )
        reason = technique_fits(by_name[choice.technique], layer)
        if reason is not None:
            raise TechniqueError(
                f"technique {choice.technique!r} does not fit layer {layer.name!r}: {reason}"
            )
        check_ratio(choice.technique, layer, choice.ratio)


def materialize(
    base_ops: tuple[Op, ...],
    layers: Sequence[LayerInfo],
    params: dict,
    aux: Sequence[dict],
    techniques: Sequence[Technique],
    plan: Plan,
) -> tuple[tuple[Op, ...], dict, dict[str, np.ndarray]]:
    """The really smaller model of ``plan``: (ops, params, sparsity masks to keep)."""
    done, _ = materialize_layers(layers, lambda layer: params[layer.name], aux, techniques, plan)
    replaced = {name: out.ops for name, out in done.items()}
    by_name = {t.name: t for t in techniques}
    pooled = {c.name for c in plan.layers if by_name[c.technique].pooled_input}
    new_params: dict = {}
    masks: dict[str, np.ndarray] = {}
    for out in done.values():
        new_params.update(out.params)
        masks.update(out.masks)
    ops: list[Op] = []
    for op in base_ops:
        if op.name in pooled and ops and ops[-1].kind == "flatten":
            ops.pop()  # the replacement takes the feature map itself (Technique.pooled_input)
        ops.extend(replaced.get(op.name, (op,)) if op.name else (op,))
        if op.name and op.name not in replaced:  # layers no technique touches (depthwise)
            new_params[op.name] = params[op.name]
    return tuple(ops), new_params, masks


def materialize_layers(
    layers: Sequence[LayerInfo],
    layer_params,
    aux: Sequence[dict],
    techniques: Sequence[Technique],
    plan: Plan,
) -> tuple[dict[str, Materialized], dict[int, np.ndarray]]:
    """Each layer of ``plan`` made really smaller, in order: a layer's input rows are those its
    input group keeps, and a layer whose outputs follow a group's root loses the channels the
    root removed. Returns (layer name -> :class:`Materialized`, group -> kept channels)."""
    check_plan(plan, layers, techniques)
    by_name = {t.name: t for t in techniques}
    done: dict[str, Materialized] = {}
    kept: dict[int, np.ndarray] = {}
    for layer, choice in zip(layers, plan.layers, strict=True):
        if layer.in_group in kept:
            in_rows = layer.input_rows(kept[layer.in_group])
        else:
            in_rows = np.arange(layer.in_shape[-1])
        tech = by_name[choice.technique]
        p = jax.tree.map(np.asarray, layer_params(layer))
        out = tech.materialize(layer, p, aux[layer.index][tech.name], choice.ratio, in_rows)
        if layer.out_group >= 0:
            kept[layer.out_group] = np.asarray(out.out_keep)
        elif layer.follows in kept:
            out = slice_outputs(out, kept[layer.follows])
        done[layer.name] = out
    return done, kept


def apply_plan(
    model: ModelConfig,
    params: dict,
    plan: Plan | str | Path,
    x_train: np.ndarray | None = None,
    ctx: PrepareContext | None = None,
) -> tuple[tuple[Op, ...], dict, dict[str, np.ndarray]]:
    """Re-apply a plan to the trained params of the architecture it was made for, without
    searching. Returns (ops, params, sparsity masks) of the really smaller model, the same as
    the run that wrote the plan had before fine-tuning.

    ``plan`` is a :class:`Plan` or the path of a ``plan.json``; files are validated against
    ``autocomp/search/plan.schema.json`` and never executed. Plans with distilled replacements
    (``dwsep``, ``fire``, ``mlpconv``, ``gap``) need training images ``x_train`` (and the run's
    ``ctx`` distillation settings to reproduce it).

    Raises:
        PlanError: a malformed plan, or one made for another architecture.
        TechniqueError: an unknown technique, or one that does not fit its layer.
    """
    if not isinstance(plan, Plan):
        plan = Plan.load(plan)
    if plan.model != model.name:
        raise PlanError(
            f"the plan was made for model {plan.model!r}, not {model.name!r}; use the plan with "
            "the architecture it was searched for"
        )
    ops = base_ops(model)
    layers = compressible_layers(ops, model.input_shape)
    used = {choice.technique for choice in plan.layers}
    techniques = [identity_technique()]
    for name in sorted(used - {techniques[0].name}):
        with contextlib.suppress(TechniqueError):  # check_plan names the layer of a bad one
            techniques.append(make_technique(name))
    check_plan(plan, layers, techniques)
    ratios = tuple(sorted({0.0, *(choice.ratio for choice in plan.layers)}))
    ctx = dataclasses.replace(ctx or PrepareContext(), ratios=ratios)
    aux = prepare_aux(layers, params, techniques, ctx, ops, x_train)
    return materialize(ops, layers, params, aux, techniques, plan)
