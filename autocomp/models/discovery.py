"""Discovery: every layer with params that a user's model calls, and which of them autocomp
compresses.

:func:`discover` runs ``model.apply`` with the user's variables under :func:`jax.eval_shape`
inside :func:`flax.linen.intercept_methods`, so every layer call is seen with its path, input and
output shapes and attributes, and nothing is computed. ``nn.Conv`` (NHWC, no dilation, no mask,
ungrouped, square kernel and strides) and ``nn.Dense`` on a (batch, features) input are
compressible (:func:`layer_op`, which the NNX front end uses for ``nnx.Conv``/``nnx.Linear``);
every other layer with params is listed with the reason it stays as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from autocomp.models.ops import Op


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


def with_bias(kernel, bias) -> dict:
    """A layer's params as the techniques take them (a zero bias where it has none)."""
    return {
        "kernel": kernel,
        "bias": bias if bias is not None else jnp.zeros(kernel.shape[-1], kernel.dtype),
    }
