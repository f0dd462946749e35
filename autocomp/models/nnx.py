"""The NNX front end: a user's own ``flax.nnx`` model object, with its weights in it.

NNX has no method interceptor, so the front end works on ``nnx.clone``s (the user's object is
never changed). For discovery and simulation, each ``nnx.Conv``/``nnx.Linear``/``nnx.BatchNorm``
of a clone is wrapped in :class:`_Hooked`, which asks a hook (a context variable, read at trace
time) whether to replace the layer's output; the clone runs under ``jit`` through
``nnx.split``/``nnx.merge``. Materialization is surgery on another clone: compressed layers
become :class:`Replaced` modules, the batch norms and depthwise convs of pruned groups get
sliced variables and matching attributes. The channel analysis, its confirmation and the
inventory are the linen front end's (:class:`autocomp.models.linen.GraphNetwork`).
"""

from __future__ import annotations

import contextvars
import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from autocomp.models.discovery import Found, ModelError, layer_op, with_bias
from autocomp.models.layers import LayerInfo
from autocomp.models.linen import GraphNetwork
from autocomp.models.materialized import Compressed
from autocomp.models.ops import Op, run_ops

_HOOK: contextvars.ContextVar = contextvars.ContextVar("autocomp_nnx_hook", default=None)
WRAPPED = (nnx.Conv, nnx.Linear, nnx.BatchNorm)


class _Hooked(nnx.Module):
    """A layer of a clone whose output the current hook may replace (``key``: its path)."""

    def __init__(self, inner: nnx.Module, key: tuple):
        self.inner = inner
        self.key = key

    def __call__(self, x, *args, **kwargs):
        hook = _HOOK.get()
        if hook is not None:
            y = hook(self.key, self.inner, x)
            if y is not None:
                return y
        return self.inner(x, *args, **kwargs)


class Replaced(nnx.Module):
    """A compressed layer: autocomp's ops with their params (``nnx.Param``)."""

    def __init__(self, ops: tuple[Op, ...], params: dict):
        self.ops = tuple(ops)
        self.p = nnx.data(
            {k: {n: nnx.Param(jnp.asarray(v)) for n, v in d.items()} for k, d in params.items()}
        )

    def __call__(self, x):
        p = jax.tree.map(lambda v: v[...], self.p, is_leaf=lambda v: isinstance(v, nnx.Variable))
        return run_ops(self.ops, p, x)


def _child(node, key):
    return node[key] if isinstance(key, int) else getattr(node, key)


def _set_child(parent, key, value) -> None:
    if isinstance(key, int):
        parent[key] = value
    else:
        setattr(parent, key, value)


def _module_at(root, path: Sequence):
    node = root
    for key in path:
        node = _child(node, key)
    return node


def _param_count(mod) -> int:
    return sum(math.prod(np.shape(v)) for v in jax.tree.leaves(nnx.state(mod, nnx.Param)))


@dataclass
class NnxNetwork(GraphNetwork):
    """A user's NNX model as the environment walks it.

    Args:
        model: the ``nnx.Module`` with its trained weights (not modified).
        example: a batch of inputs.
        apply_kwargs: keyword arguments of its ``__call__`` at inference.
        output_fn: maps the model's output to logits.
        name: the model's name in plans.
    """

    model: nnx.Module
    example: Any
    apply_kwargs: dict | None = None
    output_fn: Callable | None = None
    name: str = ""

    def __post_init__(self):
        self.name = self.name or type(self.model).__name__
        self.apply_kwargs = dict(self.apply_kwargs or {})
        shared = {tuple(p) for paths in nnx.find_duplicates(self.model) for p in paths[1:]}
        hooked = nnx.clone(self.model)
        hooked.eval()
        candidates = [
            (tuple(path), mod)
            for path, mod in nnx.iter_modules(hooked)
            if isinstance(mod, WRAPPED) and tuple(path) not in shared and path
        ]
        for path, mod in candidates:
            _set_child(_module_at(hooked, path[:-1]), path[-1], _Hooked(mod, path))
        self._graphdef, self._state = nnx.split(hooked)
        self.found = self._discover(candidates, shared)
        self._setup()

    def _discover(self, candidates, shared) -> list[Found]:
        seen: dict[tuple, tuple] = {}

        def record(key, inner, x):
            y = inner(x)
            if key in seen:
                seen[key] = (*seen[key][:2], seen[key][2] + 1)
            else:  # dicts keep insertion order: the layers in call order
                seen[key] = (tuple(x.shape), tuple(y.shape), 1)
            return y

        def run(state, x):
            token = _HOOK.set(record)
            try:
                return nnx.merge(self._graphdef, state)(x, **self.apply_kwargs)
            finally:
                _HOOK.reset(token)

        try:
            out = jax.eval_shape(run, self._state, self.example)
        except (TypeError, ValueError) as err:
            raise ModelError(
                f"running the NNX model failed: {str(err).splitlines()[0]}; if its __call__ needs "
                "arguments (train=False), pass them as apply_kwargs"
            ) from err
        self._check_output(out)
        found = []
        modules = dict(candidates)
        for path in seen:  # call order, as the environment walks the layers
            mod = modules[path]
            name = "/".join(map(str, path))
            in_shape, out_shape, calls = seen[path]
            op = layer_op(mod, name, in_shape)
            if calls > 1:
                op = f"a shared layer: the model calls it {calls} times"
            found.append(Found(
                path, type(mod).__name__, in_shape[1:], out_shape[1:], _param_count(mod), calls,
                None if isinstance(op, str) else op, op if isinstance(op, str) else None,
            ))  # fmt: skip
        for path in sorted(shared, key=str):
            mod = _module_at(self.model, path)
            found.append(Found(path, type(mod).__name__, (), (), _param_count(mod), 2, None,
                               "a shared layer: one module under several paths"))  # fmt: skip
        return found

    # ------------------------------------------------------------- front end
    def _leaf_tree(self):
        return self._state

    def _as_params(self, tree) -> dict:
        return {"state": tree}

    def base_params(self) -> dict:
        return {"state": jax.tree.map(jnp.asarray, self._state)}

    def trainable(self, params: dict) -> list[bool]:
        """Per leaf of ``params``: whether it is an ``nnx.Param`` (not a batch statistic)."""
        mask = jax.tree.map(lambda v: isinstance(v, nnx.Param), params["state"],
                            is_leaf=lambda v: isinstance(v, nnx.Variable))  # fmt: skip
        return [bool(m) for m in jax.tree.leaves(mask)]

    def with_base_params(self, params: dict) -> NnxNetwork:
        """The same network (layers, groups) with other weights, e.g. jointly tuned ones: the
        user's model is not touched (a new one is merged from the hooked clone's graph)."""
        state = jax.tree.map(np.asarray, params["state"])
        model = nnx.merge(self._graphdef, state)
        for path, mod in [(tuple(p), m) for p, m in nnx.iter_modules(model)]:
            if isinstance(mod, _Hooked):
                _set_child(_module_at(model, path[:-1]), path[-1], mod.inner)
        new = copy.copy(self)
        new.model, new._state = model, state
        return new

    def layer_params(self, params: dict, layer: LayerInfo) -> dict:
        node = params["state"]
        for key in (*self._paths[layer.index], "inner"):
            node = node[key]
        kernel = node["kernel"][...]
        bias = node["bias"][...] if "bias" in node else None
        return with_bias(kernel, bias)

    def forward(self, params: dict, x, hook=None):
        busy = [False]

        def route(key, inner, h):
            layer = self.by_path.get(key)
            if layer is None or hook is None or busy[0]:
                return None
            busy[0] = True
            try:
                return hook(layer, h)
            finally:
                busy[0] = False

        token = _HOOK.set(route)
        try:
            out = nnx.merge(self._graphdef, params["state"])(x, **self.apply_kwargs)
        finally:
            _HOOK.reset(token)
        return self.output_fn(out) if self.output_fn is not None else out

    def _trial(self, aux, techniques, plan):
        model = materialize(self, aux, techniques, plan)
        graphdef, state = nnx.split(model)
        return (lambda s, x: nnx.merge(graphdef, s)(x, **self.apply_kwargs)), state

    def leaf_location(self, leaf: int) -> tuple[tuple, str]:
        """(module path in the user's model, variable name) of a traced leaf."""
        keys = []
        for k in self.leaf_paths[leaf]:
            name = getattr(k, "key", getattr(k, "idx", getattr(k, "name", None)))
            keys.append(name)
        keys = [k for k in keys if k not in ("inner", "value")]
        return tuple(keys[:-1]), keys[-1]


def materialize(net: NnxNetwork, aux, techniques, plan) -> nnx.Module:
    """The really smaller model of ``plan``: a real ``nnx.Module`` made by surgery on a clone
    of the user's model (consumers of pruned channels rebuilt, batch norms sliced)."""
    return _materialize(net, aux, techniques, plan)[0]


def _materialize(net: NnxNetwork, aux, techniques, plan) -> tuple[nnx.Module, dict]:
    """:func:`materialize` and the sparsity masks ((layer path, op name) -> kernel mask)."""
    from autocomp.search.plan import materialize_layers

    params = jax.tree.map(np.asarray, net.base_params())
    done, kept = materialize_layers(
        net.layers, lambda layer: net.layer_params(params, layer), aux, techniques, plan
    )
    model = nnx.clone(net.model)
    model.eval()
    masks = {}
    for path, layer in zip(net._paths, net.layers, strict=True):
        out = done[layer.name]
        _set_child(_module_at(model, path[:-1]), path[-1], Replaced(out.ops, out.params))
        masks.update({(path, name): m for name, m in out.masks.items()})
    for g, keep in kept.items():
        group = net.groups[g]
        if len(keep) == group.size:
            continue
        for leaf, (axis, channels) in group.leaves.items():
            path, var = net.leaf_location(leaf)
            mod = _module_at(model, path)
            sel = np.flatnonzero(np.isin(channels, keep))
            variable = getattr(mod, var)
            variable.set_value(jnp.asarray(np.take(np.asarray(variable[...]), sel, axis=axis)))
            _resize(mod, len(sel))
    return model, masks


def _resize(mod, n: int) -> None:
    """The shape attributes of a sliced batch norm or depthwise conv."""
    if isinstance(mod, nnx.BatchNorm):
        mod.num_features = n
    elif isinstance(mod, nnx.Conv):
        mod.in_features = mod.out_features = mod.feature_group_count = n
        mod.kernel_shape = (*mod.kernel_shape[:-2], 1, n)


def compressed(net: NnxNetwork, aux, techniques, plan):
    """:func:`materialize` as a :class:`autocomp.models.materialized.Compressed` (params: the
    ``nnx.Param`` state; k-bit layers export with their fake quantization traced)."""
    model, masks = _materialize(net, aux, techniques, plan)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    out_fn = net.output_fn or (lambda out: out)
    ops = {
        la.name: _module_at(model, path).ops
        for path, la in zip(net._paths, net.layers, strict=True)
    }

    def logits(p, x):
        return out_fn(nnx.merge(graphdef, p, rest)(x, **net.apply_kwargs))

    def build(p):
        return nnx.merge(graphdef, p, rest), None

    def export_fn(p):
        return lambda x: logits(p, x)

    return Compressed(params, logits, build, export_fn, masks, ops)
