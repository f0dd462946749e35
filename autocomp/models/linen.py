"""The linen front end: a user's own ``flax.linen`` model with its own trained variables.

Discovery (:mod:`autocomp.models.discovery`) runs the model once under :func:`jax.eval_shape`
inside :func:`flax.linen.intercept_methods` and lists every layer with params, compressible or
not. Simulation intercepts the compressible layers in the same way inside the environment's one
compiled function. Channel groups come from the model's jaxpr (:mod:`autocomp.models.channels`,
:mod:`autocomp.models.channel_groups`), traced with each compressible layer as one named ``jit``
call; :class:`GraphNetwork`, shared with the NNX front end, confirms them and builds the layer
inventory. Materialization (:func:`materialize`) gives an ordinary linen module,
:class:`~autocomp.models.materialized.Substituted`, that runs the user's module with the
compressed layers put in (factorized layers as two layers), batch norms and depthwise convs of
pruned groups sliced, and a plain ``apply`` that jit, grad and jax2tf accept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from autocomp.models.channel_groups import Group, build_groups, pin_group
from autocomp.models.channels import LAYER_PREFIX, trace_channels
from autocomp.models.discovery import Found, ModelError, discover, with_bias
from autocomp.models.graph_costs import GraphOp, graph_ops
from autocomp.models.layers import LayerInfo
from autocomp.models.materialized import (
    Compressed,
    MaterializedLinen,
    Substituted,
    export_form,
    get_at,
    plain_tree,
    set_at,
)


class GraphNetwork:
    """What the front ends share: the channel analysis, its confirmation, the layer inventory.

    A front end sets ``name``, ``example``, ``output_fn``, ``found`` and implements
    ``forward(params, x, hook)``, ``base_params()``, ``layer_params(params, layer)``,
    ``_leaf_tree()`` (the pytree whose leaves the analysis traces, ``params`` built from it by
    ``_as_params``) and ``_trial(aux, techniques, plan) -> (fn(v, x), v)`` (a materialized
    model as a function of its variables).
    """

    def _setup(self) -> None:
        compressible = [f for f in self.found if f.reason is None]
        self._paths = tuple(f.path for f in compressible)
        self.groups, wiring = self._analyze(compressible)
        self.leaf_paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(self._leaf_tree())[0]]
        self._build(compressible, wiring)
        self._confirm(compressible, wiring)

    def _build(self, compressible, wiring) -> None:
        self.layers = tuple(
            _layer_info(i, f, w, self.groups)
            for i, (f, w) in enumerate(zip(compressible, wiring, strict=True))
        )
        self.by_path = dict(zip(self._paths, self.layers, strict=True))

    def _confirm(self, compressible, wiring) -> None:
        """Prune each group alone (half its channels) and check that the model's own code
        runs the same operations: code that branches on a width (``if x.shape[-1] == n``)
        or builds a layer from one would make another network. Such groups are pinned."""
        from autocomp.search.plan import plan_from_indices, prepare_aux
        from autocomp.techniques import make_techniques

        techs = make_techniques([*(t.name for t in make_techniques() if t.identity), "filter"])
        aux = prepare_aux(self.layers, self.base_params(), techs, ops=self)
        zero = np.zeros((len(self.layers), 2), np.int32)

        def structure(rows):
            plan = plan_from_indices(self.name, self.layers, techs, (0.0, 0.5), rows)
            fn, v = self._trial(aux, techs, plan)
            return _primitives(jax.make_jaxpr(fn)(v, self.example).jaxpr)

        reference = structure(zero)
        pins = {}
        for layer in self.layers:
            if layer.out_group < 0:
                continue
            rows = zero.copy()
            rows[layer.index] = (1, 1)
            try:
                same = structure(rows) == reference
                why = "the model's code runs other operations when this group loses channels"
            except Exception as err:  # the user's code refuses the smaller widths
                same, why = False, f"the model fails when this group loses channels ({err})"
            if not same:
                pins[layer.out_group] = why.splitlines()[0][:200]
        if pins:
            self.groups = tuple(
                pin_group(g, pins[g.index]) if g.index in pins else g for g in self.groups
            )
            self._build(compressible, wiring)

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def by_path_of(self, layer: LayerInfo) -> tuple[str, ...]:
        """The module path of a compressible layer."""
        return self._paths[layer.index]

    def graph_priced(self) -> list[tuple[int, GraphOp]]:
        """Every op the model runs outside its compressible layers (see
        :mod:`autocomp.models.graph_costs`), with the prunable group that decides its width (-1:
        none, priced at full width)."""
        out = []
        for g, gop in self.graph:
            prunable = g >= 0 and self.groups[g].pinned is None
            out.append((g if prunable else -1, gop))
        return out

    def _check_output(self, out) -> None:
        logits = self.output_fn(out) if self.output_fn is not None else out
        if not hasattr(logits, "shape") or len(logits.shape) != 2:
            raise ModelError(
                f"the model's output is {type(logits).__name__} "
                f"{getattr(logits, 'shape', '')}, not a (batch, classes) logits array; pass "
                "output_fn (e.g. output_fn=lambda out: out.logits)"
            )

    def _analyze(self, compressible: Sequence[Found]) -> tuple[tuple[Group, ...], tuple]:
        def marker(index: int, out_shape: tuple[int, ...]):
            def fn(h):
                return jnp.zeros((h.shape[0], *out_shape), h.dtype)

            fn.__name__ = f"{LAYER_PREFIX}{index}"
            return jax.jit(fn)

        markers = {f.path: marker(i, f.out_shape) for i, f in enumerate(compressible)}
        self.by_path = {f.path: _Index(i) for i, f in enumerate(compressible)}

        def hook(layer, h):
            return markers[self._paths[layer.index]](h)

        tree = self._leaf_tree()
        closed = jax.make_jaxpr(lambda v, x: self.forward(self._as_params(v), x, hook))(
            tree, self.example
        )
        n_leaves = len(jax.tree.leaves(tree))
        trace = trace_channels(closed, n_leaves)
        groups, wiring = build_groups(trace, len(compressible))
        slot_group = {
            trace.uf.find(int(s)): g.index
            for g in groups
            for p in g.producers
            for s in trace.produced[p]
        }
        self.graph = []
        for gop in graph_ops(closed, n_leaves, trace.visits):
            hit = (
                set()
                if gop.info is None
                else {
                    slot_group.get(trace.uf.find(int(s)), -1) if s >= 0 else -1
                    for s in gop.info.slots
                }
            )
            self.graph.append((hit.pop() if len(hit) == 1 else -1, gop))
        return groups, wiring


@dataclass
class LinenNetwork(GraphNetwork):
    """A user's linen model as the environment walks it (see :mod:`autocomp.models.layers`).

    Args:
        model: the ``nn.Module``.
        variables: its trained variables (``{"params": ..., "batch_stats": ...}``).
        example: a batch of inputs (one example is enough).
        apply_kwargs: keyword arguments of ``model.apply`` at inference (``train=False``).
        output_fn: maps the model's output to the logits (``lambda out: out.logits``).
        name: the model's name in plans.
    """

    model: nn.Module
    variables: Mapping
    example: Any
    apply_kwargs: Mapping = field(default_factory=dict)
    output_fn: Callable | None = None
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.variables, Mapping) or "params" not in self.variables:
            raise ModelError(
                "the variables have no 'params' collection; pass what model.init returns "
                "(or the restored checkpoint), e.g. {'params': params, 'batch_stats': stats}"
            )
        self.name = self.name or type(self.model).__name__
        self.apply_kwargs = dict(self.apply_kwargs)
        self.found, out = discover(self.model, self.variables, self.example, self.apply_kwargs)
        self._check_output(out)
        self._setup()

    def _leaf_tree(self):
        return dict(self.variables)

    def _as_params(self, tree) -> dict:
        return {"variables": tree}

    def _trial(self, aux, techniques, plan):
        mat = materialize(self, aux, techniques, plan)
        return (lambda v, x: mat.module.apply(v, x, **self.apply_kwargs)), mat.variables

    # ---------------------------------------------------------------- params
    def base_params(self) -> dict:
        """The params pytree the environment carries: the user's variables."""
        return {"variables": jax.tree.map(jnp.asarray, dict(self.variables))}

    def trainable(self, params: dict) -> list[bool]:
        """Per leaf of ``params`` (:meth:`base_params`' form): whether it is a weight (the
        ``params`` collection), not a statistic."""
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        return [getattr(path[1], "key", None) == "params" for path, _ in flat]

    def with_base_params(self, params: dict) -> LinenNetwork:
        """The same network (layers, groups) with other weights, e.g. jointly tuned ones."""
        new = copy.copy(self)
        new.variables = jax.tree.map(np.asarray, dict(params["variables"]))
        return new

    def layer_params(self, params: dict, layer: LayerInfo) -> dict:
        node = params["variables"]["params"]
        for key in self._paths[layer.index]:
            node = node[key]
        return with_bias(node["kernel"], node.get("bias"))

    # --------------------------------------------------------------- forward
    def forward(self, params: dict, x, hook=None):
        """The model's logits, with ``hook(layer, h)`` replacing layer outputs where it
        returns an array."""
        busy = [False]

        def interceptor(next_fn, args, kwargs, ctx):
            if busy[0] or hook is None or ctx.method_name != "__call__":
                return next_fn(*args, **kwargs)
            layer = self.by_path.get(tuple(ctx.module.path))
            if layer is None:
                return next_fn(*args, **kwargs)
            busy[0] = True  # the replacement runs modules of its own: not the user's
            try:
                y = hook(layer, args[0])
            finally:
                busy[0] = False
            return next_fn(*args, **kwargs) if y is None else y

        with nn.intercept_methods(interceptor):
            out = self.model.apply(params["variables"], x, **self.apply_kwargs)
        return self.output_fn(out) if self.output_fn is not None else out


@dataclass(frozen=True)
class _Index:
    """Stands for a layer while the channels are analysed (only its index is read)."""

    index: int


def _primitives(jaxpr) -> list[str]:
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            inner = eqn.params.get(key)
            if inner is not None:
                names.extend(_primitives(getattr(inner, "jaxpr", inner)))
    return names


def _layer_info(index: int, found: Found, wiring, groups: Sequence[Group]) -> LayerInfo:
    op = found.op
    in_shape = found.in_shape
    positions = wiring.in_positions
    in_channels = in_shape[-1] // positions if op.kind == "dense" else in_shape[-1]
    group = groups[wiring.out_group] if wiring.out_group >= 0 else None
    root = wiring.root and group is not None and group.pinned is None
    reason = None if root else (group.pinned if group is not None else None) or wiring.reason
    output = reason == "its channels reach the model output"
    follows = -1
    if group is not None and not wiring.root and group.pinned is None:
        follows = wiring.out_group
    in_group = wiring.in_group
    if in_group >= 0 and groups[in_group].pinned is not None:
        in_group = -1  # its input rows stay; a flatten keeps its positions (for gap)
    pre_flatten = None
    if op.kind == "dense" and positions > 1 and wiring.in_spatial is not None:
        pre_flatten = (*wiring.in_spatial, in_channels)
    return LayerInfo(
        index=index,
        name=found.name,
        op=op,
        in_shape=in_shape,
        trailing=(),
        in_channels=in_channels,
        in_positions=positions,
        is_classifier=output,
        coupled_out=not root,
        pre_flatten=pre_flatten,
        in_group=in_group,
        out_group=wiring.out_group if root else -1,
        follows=follows,
        out_reason=reason,
    )


def materialize(net: LinenNetwork, aux, techniques, plan) -> MaterializedLinen:
    """The really smaller model of ``plan`` in the user's world (see :class:`Substituted`)."""
    from autocomp.search.plan import materialize_layers

    variables = plain_tree(dict(net.variables))
    source = {"variables": variables}
    done, kept = materialize_layers(
        net.layers, lambda layer: net.layer_params(source, layer), aux, techniques, plan
    )
    params = variables["params"]
    new = {k: v for k, v in variables.items()}
    new["params"] = plain_tree(params)
    replaced, masks = [], {}
    for path, layer in zip(net._paths, net.layers, strict=True):
        out = done[layer.name]
        set_at(new["params"], path, {name: dict(p) for name, p in out.params.items()})
        replaced.append((path, out.ops))
        masks.update({(path, name): m for name, m in out.masks.items()})
    depthwise = {f.path for f in net.found if f.reason and f.reason.startswith("a depthwise")}
    # every depthwise conv gets its width set: user code may derive it from its input's
    resized = {path: get_at(params, path)["kernel"].shape[-1] for path in depthwise}
    for g, keep in kept.items():
        group = net.groups[g]
        if len(keep) == group.size:
            continue
        for leaf, (axis, channels) in group.leaves.items():
            keys = [k.key for k in net.leaf_paths[leaf]]
            sel = np.flatnonzero(np.isin(channels, keep))
            set_at(new[keys[0]], keys[1:], np.take(get_at(new[keys[0]], keys[1:]), sel, axis=axis))
            if tuple(keys[1:-1]) in depthwise and keys[0] == "params":
                resized[tuple(keys[1:-1])] = len(sel)
    module = Substituted(net.model, tuple(replaced), tuple(resized.items()))
    wrapped = {col: {"base": tree} for col, tree in new.items()}
    ops = {layer.name: done[layer.name].ops for layer in net.layers}
    return MaterializedLinen(module, wrapped, masks, ops)


def compressed(net: LinenNetwork, aux, techniques, plan) -> Compressed:
    """:func:`materialize` as a :class:`Compressed`."""
    mat = materialize(net, aux, techniques, plan)
    rest = {k: v for k, v in mat.variables.items() if k != "params"}
    out_fn = net.output_fn or (lambda out: out)

    def logits(p, x):
        return out_fn(mat.module.apply({"params": p, **rest}, x, **net.apply_kwargs))

    def build(p):
        return mat.module, {"params": p, **rest}

    def export_fn(p):
        module, variables = export_form(
            MaterializedLinen(mat.module, build(p)[1], mat.masks, mat.ops)
        )
        return lambda x: out_fn(module.apply(variables, x, **net.apply_kwargs))

    return Compressed(mat.variables["params"], logits, build, export_fn, mat.masks, mat.ops)
