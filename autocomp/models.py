"""Sequential Flax CNNs described by data, so that a compressed model is just other data.

A model is a tuple of :class:`Op`. The base model comes from ``ModelConfig``; a compressed model
is the op tuple that the techniques materialize (pruned layers with fewer features, factorized
layers split in two). :func:`walk_shapes` gives every op's input shape without running anything,
which the cost tables and the layer inventory use.

Residual networks stay sequential: ``save`` pushes the current tensor, ``add`` pops it and adds
it back (ResNet's parameter-free "option A" shortcut: strided subsampling and zero channels
where the shapes differ). Batch norm (``bn``) exists only while the base model trains; it is then
folded into the layer before it (:func:`fold_batchnorm`), as TFLite does at export, so search,
compression and export see plain conv/dense layers with biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from autocomp.config import ModelConfig

WEIGHTED = ("conv", "dense")  # the compressible layers
PARAMETRIC = (*WEIGHTED, "dwconv")  # every op with params after batch-norm folding
BN_EPSILON = 1e-5


@dataclass(frozen=True)
class Op:
    """One operator of a sequential model.

    Attributes:
        kind: ``conv``, ``dense``, ``dwconv`` (depthwise conv), ``maxpool``, ``avgpool``,
            ``gap`` (global average pool to a vector), ``flatten``, ``relu``, ``save``/``add``
            (residual shortcut) or ``bn`` (batch norm, training only).
        name: params key of an op with params.
        features: output channels/units of a weighted op.
        kernel: kernel size (conv) or window (pools).
        stride: stride (conv, pools).
        use_bias: whether a weighted op has a bias.
        density: share of non-zero weights (storage only; a dense runtime runs them all).
    """

    kind: str
    name: str | None = None
    features: int = 0
    kernel: int = 1
    stride: int = 1
    use_bias: bool = True
    density: float = 1.0


Shape = tuple[int, ...]  # (H, W, C) for images, (C,) after flatten


def _conv(op: Op, x: Array) -> Array:
    return nn.Conv(
        op.features,
        (op.kernel, op.kernel),
        strides=op.stride,
        padding="SAME",
        use_bias=op.use_bias,
        name=op.name,
    )(x)


def _dwconv(op: Op, x: Array) -> Array:
    return nn.Conv(
        x.shape[-1],
        (op.kernel, op.kernel),
        strides=op.stride,
        padding="SAME",
        feature_group_count=x.shape[-1],
        use_bias=op.use_bias,
        name=op.name,
    )(x)


def shortcut(saved: Array, shape: Sequence[int]) -> Array:
    """ResNet option A: subsample ``saved`` to ``shape``'s grid, zero-pad its channels."""
    stride = saved.shape[1] // shape[1]
    if stride > 1:
        saved = saved[:, ::stride, ::stride, :]
    extra = shape[-1] - saved.shape[-1]
    if extra > 0:
        saved = jnp.pad(saved, ((0, 0), (0, 0), (0, 0), (0, extra)))
    return saved


def _dense(op: Op, x: Array) -> Array:
    return nn.Dense(op.features, use_bias=op.use_bias, name=op.name)(x)


def _pool(pool_fn: Callable) -> Callable[[Op, Array], Array]:
    def apply(op: Op, x: Array) -> Array:
        return pool_fn(x, (op.kernel, op.kernel), strides=(op.stride, op.stride), padding="VALID")

    return apply


_APPLY: dict[str, Callable[[Op, Array], Array]] = {
    "conv": _conv,
    "dense": _dense,
    "dwconv": _dwconv,
    "gap": lambda op, x: x.mean(axis=(1, 2)),
    "maxpool": _pool(nn.max_pool),
    "avgpool": _pool(nn.avg_pool),
    "flatten": lambda op, x: x.reshape(x.shape[0], -1),
    "relu": lambda op, x: nn.relu(x),
}


class SequentialNet(nn.Module):
    """Applies ``ops`` in order to a batch of NHWC images and returns logits."""

    ops: tuple[Op, ...]

    @nn.compact
    def __call__(
        self, x: Float[Array, "batch h w c"], train: bool = False
    ) -> Float[Array, "batch classes"]:
        saved: list[Array] = []
        for op in self.ops:
            if op.kind == "save":
                saved.append(x)
            elif op.kind == "add":
                x = x + shortcut(saved.pop(), x.shape)
            elif op.kind == "bn":
                x = nn.BatchNorm(
                    use_running_average=not train, momentum=0.9, epsilon=BN_EPSILON, name=op.name
                )(x)
            else:
                x = _APPLY[op.kind](op, x)
        return x


def base_ops(cfg: ModelConfig, train: bool = False) -> tuple[Op, ...]:
    """The op tuple of the uncompressed model described by ``cfg``.

    With ``train``, layers with ``norm: batch`` are followed by a ``bn`` op named
    ``<layer>_bn``; without, the inference form that :func:`fold_batchnorm` produces.
    """
    ops: list[Op] = []
    for layer in cfg.layers:
        if layer.kind in PARAMETRIC:
            ops.append(Op(layer.kind, layer.name, layer.features, layer.kernel, layer.stride))
            if train and layer.norm == "batch":
                ops.append(Op("bn", f"{layer.name}_bn"))
            if layer.activation == "relu":
                ops.append(Op("relu"))
        elif layer.kind in ("maxpool", "avgpool"):
            ops.append(Op(layer.kind, kernel=layer.kernel, stride=layer.stride or layer.kernel))
        else:
            ops.append(Op(layer.kind))
    return tuple(ops)


def fold_batchnorm(train_ops: Sequence[Op], params: dict, batch_stats: dict) -> dict:
    """Params of the inference model: each ``bn`` folded into the layer before it.

    ``kernel * s`` and ``(bias - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``, the
    same algebra TFLite's converter applies.
    """
    out = {k: dict(v) for k, v in params.items() if not k.endswith("_bn")}
    for prev, op in zip(train_ops, train_ops[1:], strict=False):
        if op.kind != "bn":
            continue
        if prev.kind not in PARAMETRIC:
            raise ValueError(f"batch norm {op.name} must follow a layer with params")
        bn, stats = params[op.name], batch_stats[op.name]
        scale = bn["scale"] / jnp.sqrt(stats["var"] + BN_EPSILON)
        layer = out[prev.name]
        layer["kernel"] = layer["kernel"] * scale
        layer["bias"] = (layer["bias"] - stats["mean"]) * scale + bn["bias"]
    return out


def out_shape(op: Op, shape: Shape) -> Shape:
    """Output shape of ``op`` for one example of ``shape`` (no batch axis)."""
    if op.kind == "conv":
        h, w, _ = shape
        return (math.ceil(h / op.stride), math.ceil(w / op.stride), op.features)
    if op.kind == "dwconv":
        h, w, c = shape
        return (math.ceil(h / op.stride), math.ceil(w / op.stride), c)
    if op.kind == "gap":
        return (shape[-1],)
    if op.kind == "dense":
        return (op.features,)
    if op.kind in ("maxpool", "avgpool"):
        h, w, c = shape
        return ((h - op.kernel) // op.stride + 1, (w - op.kernel) // op.stride + 1, c)
    if op.kind == "flatten":
        return (math.prod(shape),)
    return shape


def walk_shapes(ops: Sequence[Op], input_shape: Sequence[int], strict: bool = True) -> list[Shape]:
    """Input shape of every op, plus the final output shape as the last entry.

    ``strict=False`` walks a fragment of a model, whose ``add`` may lack its ``save``.
    """
    shapes = [tuple(input_shape)]
    saved: list[Shape] = []
    for op in ops:
        shape = shapes[-1]
        if op.kind == "dense" and len(shape) != 1:
            raise ValueError(f"dense op {op.name} needs a flat input, got {shape}")
        if op.kind == "save":
            saved.append(shape)
        elif op.kind == "add" and (saved or strict):
            if not saved:
                raise ValueError("an 'add' op has no matching 'save' before it")
            skip = saved.pop()
            if len(skip) != 3 or skip[0] % shape[0] or skip[-1] > shape[-1]:
                raise ValueError(f"residual shortcut from {skip} cannot be added to {shape}")
        shapes.append(out_shape(op, shape))
    if saved and strict:
        raise ValueError("a 'save' op has no matching 'add' after it")
    return shapes


def init_variables(ops: tuple[Op, ...], input_shape: Sequence[int], key: jax.Array) -> dict:
    """Random initial variables (``params``, and ``batch_stats`` when there is batch norm)."""
    model = SequentialNet(ops)
    x = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.jit(model.init)(key, x)


def param_shapes(ops: tuple[Op, ...], input_shape: Sequence[int]) -> dict:
    """The params pytree of a model as ``jax.ShapeDtypeStruct`` leaves, computing nothing."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(SequentialNet(ops).init, jax.random.key(0), x)["params"]


def init_params(ops: tuple[Op, ...], input_shape: Sequence[int], key: jax.Array) -> dict:
    """Random initial params of a model (jitted, so it is cheap per architecture)."""
    return init_variables(ops, input_shape, key)["params"]
