"""The linen front end: a user's own ``flax.linen`` model with its own trained variables.

Discovery runs ``model.apply`` with the user's variables under :func:`jax.eval_shape` inside
:func:`flax.linen.intercept_methods`, so every layer call is seen with its path, input and
output shapes and attributes, and nothing is computed. ``nn.Conv`` (NHWC, no dilation, no
mask, ungrouped, square kernel and strides) and ``nn.Dense`` on a (batch, features) input are
compressible; every other layer with params is listed with the reason it stays as it is.

Simulation intercepts those layers in the same way inside the environment's one compiled
function. Channel groups come from the model's jaxpr (:mod:`autocomp.models.channels`), traced with
each compressible layer as one named ``jit`` call. Materialization (:func:`materialize`) gives
an ordinary linen module, :class:`Substituted`, that runs the user's module with the compressed
layers put in (factorized layers as two layers), batch norms and depthwise convs of pruned
groups sliced, and a plain ``apply`` that jit, grad and jax2tf accept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from autocomp.models.channels import LAYER_PREFIX, Group, build_groups, pin_group, trace_channels
from autocomp.models.graph_costs import GraphOp, graph_ops
from autocomp.models.layers import LayerInfo
from autocomp.models.ops import Op, run_ops


class ModelError(ValueError):
    """A model autocomp cannot take as it is; the message names the layer and the way out."""


@dataclass(frozen=True)
class Found:
    """One layer call seen while running the model.

    Attributes:
        path: module path in the variables (``("layers_3", "ConvBlock_0", "Conv_0")``).
        kind: module class name.
        in_shape, out_shape: shapes without the batch axis.
        params: parameter count of the module itself.
        calls: how many times the model calls it (more than one: a shared layer).
        op: the layer as autocomp's op when it is compressible.
        reason: why it is not compressible (``None``: it is).
    """

    path: tuple[str, ...]
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    calls: int = 1
    op: Op | None = None
    reason: str | None = None

    @property
    def name(self) -> str:
        return "/".join(self.path)


def _pairs(value, n: int = 2) -> tuple[int, ...] | None:
    if value is None:
        return (1,) * n
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def _padding(padding, kernel: Sequence[int]):
    """Explicit ((top, bottom), (left, right)) or ``None`` for SAME; a string for a reason."""
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            return None
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        return f"padding {padding!r} is not zero padding"
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    pads = [((p, p) if isinstance(p, int) else tuple(p)) for p in padding]
    if len(pads) != 2:
        return f"padding {padding!r} is not 2-D"
    return (tuple(pads[0]), tuple(pads[1]))


def conv_op(mod, name: str, x_shape: tuple[int, ...], features: int) -> Op | str:
    """A conv layer (linen's ``nn.Conv`` or NNX's ``nnx.Conv``: the same attributes) as
    autocomp's op, or why it is not compressible."""
    kernel = _pairs(mod.kernel_size)
    strides = _pairs(mod.strides)
    if len(x_shape) != 4 or len(kernel) != 2:
        return (
            f"a {len(kernel)}-D convolution on a rank-{len(x_shape)} input "
            "(autocomp takes 2-D NHWC)"
        )
    if _pairs(mod.input_dilation) != (1, 1) or _pairs(mod.kernel_dilation) != (1, 1):
        return "a dilated convolution"
    if mod.mask is not None:
        return "a masked convolution"
    if mod.feature_group_count != 1:
        if mod.feature_group_count == x_shape[-1] == features:
            return "a depthwise convolution: it passes channels through (sliced with its group)"
        return f"a grouped convolution ({mod.feature_group_count} groups)"
    if kernel[0] != kernel[1] or strides[0] != strides[1]:
        return f"a non-square kernel {kernel} or strides {strides}"
    padding = _padding(mod.padding, kernel)
    if isinstance(padding, str):
        return padding
    return Op("conv", name, features, kernel[0], strides[0], True, padding=padding)


def layer_op(mod, name: str, x_shape: tuple[int, ...]) -> Op | str:
    """A linen or NNX layer as autocomp's op, or why it is not compressible."""
    if type(mod) in (nn.Conv, nnx.Conv):
        features = mod.features if type(mod) is nn.Conv else mod.out_features
        return conv_op(mod, name, x_shape, features)
    if type(mod) in (nn.Dense, nnx.Linear):
        if len(x_shape) != 2:
            return (
                f"a dense layer on a rank-{len(x_shape)} input (autocomp takes (batch, features))"
            )
        features = mod.features if type(mod) is nn.Dense else mod.out_features
        return Op("dense", name, features, use_bias=True)
    if isinstance(mod, nn.BatchNorm | nnx.BatchNorm):
        return "batch norm: passes channels through (sliced with its group)"
    return f"{type(mod).__name__} is not a layer autocomp compresses"


def _own_params(variables: Mapping) -> dict:
    params = variables.get("params", {})
    return {k: v for k, v in params.items() if not isinstance(v, Mapping)}


def discover(model: nn.Module, variables: Mapping, x, apply_kwargs: Mapping) -> list[Found]:
    """Every layer with params that ``model.apply(variables, x, **apply_kwargs)`` calls."""
    seen: dict[tuple[str, ...], Found] = {}

    def interceptor(next_fn, args, kwargs, ctx):
        out = next_fn(*args, **kwargs)
        own = _own_params(ctx.module.variables) if ctx.method_name == "__call__" else {}
        if not own:
            return out
        path = tuple(ctx.module.path)
        if path in seen:
            prev = seen[path]
            seen[path] = Found(
                path, prev.kind, prev.in_shape, prev.out_shape, prev.params, prev.calls + 1,
                None, f"a shared layer: the model calls it {prev.calls + 1} times",
            )  # fmt: skip
            return out
        x_in = args[0] if args else None
        in_shape = tuple(getattr(x_in, "shape", ()))
        out_shape = tuple(getattr(out, "shape", ()))
        op = layer_op(ctx.module, "/".join(path), in_shape)
        count = sum(math.prod(np.shape(v)) for v in jax.tree.leaves(own))
        if not isinstance(op, str):
            expected = 4 if op.kind == "conv" else 2
            if np.ndim(own.get("kernel")) != expected:
                op = "its kernel has an extra axis (inside nn.scan or vmap)"
        seen[path] = Found(
            path,
            type(ctx.module).__name__,
            in_shape[1:],
            out_shape[1:],
            int(count),
            1,
            None if isinstance(op, str) else op,
            op if isinstance(op, str) else None,
        )
        return out

    def run(v, x):
        with nn.intercept_methods(interceptor):
            return model.apply(v, x, **apply_kwargs)

    try:
        out = jax.eval_shape(run, variables, x)
    except (TypeError, ValueError, flax.errors.FlaxError) as err:
        raise ModelError(_trace_hint(err, apply_kwargs)) from err
    return list(seen.values()), out


def _trace_hint(err: Exception, apply_kwargs: Mapping) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, jax.errors.ConcretizationTypeError | jax.errors.TracerBoolConversionError):
        return (
            f"the model cannot be traced: {text}. It takes Python branches on array values; "
            "make them static (flags as module attributes or apply_kwargs)"
        )
    return (
        f"running the model with its variables failed: {text}. If its __call__ needs "
        f"arguments such as train=False or deterministic=True, pass them as apply_kwargs "
        f"(given: {dict(apply_kwargs)})"
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

        techs = make_techniques(["keep", "filter"])
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


def with_bias(kernel, bias) -> dict:
    """A layer's params as the techniques take them (a zero bias where it has none)."""
    return {
        "kernel": kernel,
        "bias": bias if bias is not None else jnp.zeros(kernel.shape[-1], kernel.dtype),
    }


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


# ------------------------------------------------------------------ materialization
class Substituted(nn.Module):
    """The user's module with compressed layers put in: a plain linen module.

    Attributes:
        base: the user's module (its variables live under ``base``).
        replaced: (layer path, the ops that replace it); their params are stored under the
            layer's path, keyed by op name.
        resized: (path, channels) of depthwise convs whose group lost channels.
    """

    base: nn.Module
    replaced: tuple[tuple[tuple[str, ...], tuple[Op, ...]], ...] = ()
    resized: tuple[tuple[tuple[str, ...], int], ...] = ()

    def __call__(self, *args, **kwargs):
        replaced, resized = dict(self.replaced), dict(self.resized)
        busy = [False]

        def interceptor(next_fn, a, kw, ctx):
            path = tuple(ctx.module.path)
            if busy[0] or ctx.method_name != "__call__" or path[:1] != ("base",):
                return next_fn(*a, **kw)
            path = path[1:]
            if path in replaced:
                busy[0] = True
                try:
                    return run_ops(replaced[path], dict(ctx.module.variables["params"]), a[0])
                finally:
                    busy[0] = False
            if path in resized:
                n = resized[path]
                clone = ctx.module.clone(parent=None, features=n, feature_group_count=n)
                busy[0] = True
                try:
                    return clone.apply({"params": ctx.module.variables["params"]}, *a, **kw)
                finally:
                    busy[0] = False
            return next_fn(*a, **kw)

        with nn.intercept_methods(interceptor):
            return self.base(*args, **kwargs)


def _plain(tree):
    if isinstance(tree, Mapping):
        return {k: _plain(v) for k, v in tree.items()}
    return np.asarray(tree)


def _set(tree: dict, keys: Sequence[str], value) -> None:
    for key in keys[:-1]:
        tree = tree[key]
    tree[keys[-1]] = value


def _get(tree, keys: Sequence[str]):
    for key in keys:
        tree = tree[key]
    return tree


@dataclass(frozen=True)
class MaterializedLinen:
    """A compressed linen model: ``module.apply(variables, x, **apply_kwargs)`` runs it.

    ``masks``: (layer path, op name) -> kernel mask of unstructured sparsity that fine-tuning
    keeps; ``ops``: layer name -> its deployed ops.
    """

    module: Substituted
    variables: dict
    masks: dict[tuple[tuple[str, ...], str], np.ndarray]
    ops: dict[str, tuple[Op, ...]]


def materialize(net: LinenNetwork, aux, techniques, plan) -> MaterializedLinen:
    """The really smaller model of ``plan`` in the user's world (see :class:`Substituted`)."""
    from autocomp.search.plan import materialize_layers

    variables = _plain(dict(net.variables))
    source = {"variables": variables}
    done, kept = materialize_layers(
        net.layers, lambda layer: net.layer_params(source, layer), aux, techniques, plan
    )
    params = variables["params"]
    new = {k: v for k, v in variables.items()}
    new["params"] = _plain(params)
    replaced, masks = [], {}
    for path, layer in zip(net._paths, net.layers, strict=True):
        out = done[layer.name]
        _set(new["params"], path, {name: dict(p) for name, p in out.params.items()})
        replaced.append((path, out.ops))
        masks.update({(path, name): m for name, m in out.masks.items()})
    depthwise = {f.path for f in net.found if f.reason and f.reason.startswith("a depthwise")}
    # every depthwise conv gets its width set: user code may derive it from its input's
    resized = {path: _get(params, path)["kernel"].shape[-1] for path in depthwise}
    for g, keep in kept.items():
        group = net.groups[g]
        if len(keep) == group.size:
            continue
        for leaf, (axis, channels) in group.leaves.items():
            keys = [k.key for k in net.leaf_paths[leaf]]
            sel = np.flatnonzero(np.isin(channels, keep))
            _set(new[keys[0]], keys[1:], np.take(_get(new[keys[0]], keys[1:]), sel, axis=axis))
            if tuple(keys[1:-1]) in depthwise and keys[0] == "params":
                resized[tuple(keys[1:-1])] = len(sel)
    module = Substituted(net.model, tuple(replaced), tuple(resized.items()))
    wrapped = {col: {"base": tree} for col, tree in new.items()}
    ops = {layer.name: done[layer.name].ops for layer in net.layers}
    return MaterializedLinen(module, wrapped, masks, ops)


def export_form(mat: MaterializedLinen) -> tuple[Substituted, dict]:
    """The module and variables with k-bit kernels baked to their quantized values, for a
    converter (see :func:`autocomp.models.ops.bake_quantized`)."""
    from autocomp.models.ops import bake_quantized

    params = _plain(mat.variables["params"])
    replaced = []
    for path, ops in mat.module.replaced:
        node = _get(params["base"], path)
        baked_ops, baked = bake_quantized(ops, node)
        _set(params["base"], path, baked)
        replaced.append((path, baked_ops))
    module = Substituted(mat.module.base, tuple(replaced), mat.module.resized)
    return module, {**mat.variables, "params": params}


@dataclass(frozen=True)
class Compressed:
    """A compressed model of either front end, as functions of its trainable params.

    Attributes:
        params: the trainable params (a pytree).
        logits: ``logits(params, x)``.
        build: ``build(params) -> (model, variables)`` as the user gets it back (NNX: the
            ``nnx.Module`` and ``None``).
        export_fn: ``export_fn(params) -> f(x)``, k-bit kernels baked, for a converter.
        masks: (layer path, op name) -> kernel mask that fine-tuning keeps.
        ops: layer name -> its deployed ops.
    """

    params: Any
    logits: Callable
    build: Callable
    export_fn: Callable
    masks: dict
    ops: dict


def keep_masks(params, masks: dict):
    """``params`` with every masked kernel multiplied by its mask (found by the layer path,
    op name and ``kernel`` at the end of the leaf's path, whatever the front end nests)."""
    if not masks:
        return params
    wanted = {(*map(str, path), op, "kernel"): m for (path, op), m in masks.items()}

    def apply(path, leaf):
        m = wanted.get(leaf_names(path))
        return leaf if m is None else leaf * m

    return jax.tree_util.tree_map_with_path(apply, params)


def leaf_names(path) -> tuple[str, ...]:
    """A params leaf's key path as names, without the front ends' own nesting (linen's
    ``base``, NNX's ``p`` and ``value``): (layer path..., op name, ``kernel``)."""
    out = []
    for k in path:
        name = getattr(k, "key", getattr(k, "idx", getattr(k, "name", None)))
        if name not in ("value", "base", "p"):
            out.append(str(name))
    return tuple(out)


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
