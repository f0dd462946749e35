"""What materialization gives: a compressed model as the user gets it back.

:class:`Substituted` is an ordinary linen module that runs the user's module with the compressed
layers put in (factorized layers as two layers) and the depthwise convs of pruned groups resized,
with a plain ``apply`` that jit, grad and jax2tf accept; :class:`MaterializedLinen` holds it with
its variables (built by :func:`autocomp.models.linen.materialize`), :func:`export_form` bakes its
k-bit kernels for a converter. :class:`Compressed` is either front end's compressed model as
functions of its trainable params.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from autocomp.models.ops import Op, bake_quantized, run_ops


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


def plain_tree(tree):
    if isinstance(tree, Mapping):
        return {k: plain_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def set_at(tree: dict, keys: Sequence[str], value) -> None:
    for key in keys[:-1]:
        tree = tree[key]
    tree[keys[-1]] = value


def get_at(tree, keys: Sequence[str]):
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


def export_form(mat: MaterializedLinen) -> tuple[Substituted, dict]:
    """The module and variables with k-bit kernels baked to their quantized values, for a
    converter (see :func:`autocomp.models.ops.bake_quantized`)."""
    params = plain_tree(mat.variables["params"])
    replaced = []
    for path, ops in mat.module.replaced:
        node = get_at(params["base"], path)
        baked_ops, baked = bake_quantized(ops, node)
        set_at(params["base"], path, baked)
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

    @property
    def deployed_ops(self) -> tuple:
        """Every layer's deployed ops, in layer order."""
        return tuple(op for layer_ops in self.ops.values() for op in layer_ops)


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
