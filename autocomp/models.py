"""Sequential Flax CNNs described by data, so that a compressed model is just other data.

A model is a tuple of :class:`Op`. The base model comes from ``ModelConfig``; a compressed model
is the op tuple that the techniques materialize (pruned layers with fewer features, factorized
layers split in two). :func:`walk_shapes` gives every op's input shape without running anything,
which the cost tables and the layer inventory use.
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

WEIGHTED = ("conv", "dense")


@dataclass(frozen=True)
class Op:
    """One operator of a sequential model.

    Attributes:
        kind: ``conv``, ``dense``, ``maxpool``, ``avgpool``, ``flatten`` or ``relu``.
        name: params key of a weighted op.
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


def _dense(op: Op, x: Array) -> Array:
    return nn.Dense(op.features, use_bias=op.use_bias, name=op.name)(x)


def _pool(pool_fn: Callable) -> Callable[[Op, Array], Array]:
    def apply(op: Op, x: Array) -> Array:
        return pool_fn(x, (op.kernel, op.kernel), strides=(op.stride, op.stride), padding="VALID")

    return apply


_APPLY: dict[str, Callable[[Op, Array], Array]] = {
    "conv": _conv,
    "dense": _dense,
    "maxpool": _pool(nn.max_pool),
    "avgpool": _pool(nn.avg_pool),
    "flatten": lambda op, x: x.reshape(x.shape[0], -1),
    "relu": lambda op, x: nn.relu(x),
}


class SequentialNet(nn.Module):
    """Applies ``ops`` in order to a batch of NHWC images and returns logits."""

    ops: tuple[Op, ...]

    @nn.compact
    def __call__(self, x: Float[Array, "batch h w c"]) -> Float[Array, "batch classes"]:
        for op in self.ops:
            x = _APPLY[op.kind](op, x)
        return x


def base_ops(cfg: ModelConfig) -> tuple[Op, ...]:
    """The op tuple of the uncompressed model described by ``cfg``."""
    ops: list[Op] = []
    for layer in cfg.layers:
        if layer.kind in WEIGHTED:
            ops.append(Op(layer.kind, layer.name, layer.features, layer.kernel, layer.stride))
            if layer.activation == "relu":
                ops.append(Op("relu"))
        elif layer.kind in ("maxpool", "avgpool"):
            ops.append(Op(layer.kind, kernel=layer.kernel, stride=layer.stride or layer.kernel))
        else:
            ops.append(Op(layer.kind))
    return tuple(ops)


def out_shape(op: Op, shape: Shape) -> Shape:
    """Output shape of ``op`` for one example of ``shape`` (no batch axis)."""
    if op.kind == "conv":
        h, w, _ = shape
        return (math.ceil(h / op.stride), math.ceil(w / op.stride), op.features)
    if op.kind == "dense":
        return (op.features,)
    if op.kind in ("maxpool", "avgpool"):
        h, w, c = shape
        return ((h - op.kernel) // op.stride + 1, (w - op.kernel) // op.stride + 1, c)
    if op.kind == "flatten":
        return (math.prod(shape),)
    return shape


def walk_shapes(ops: Sequence[Op], input_shape: Sequence[int]) -> list[Shape]:
    """Input shape of every op, plus the final output shape as the last entry."""
    shapes = [tuple(input_shape)]
    for op in ops:
        if op.kind == "dense" and len(shapes[-1]) != 1:
            raise ValueError(f"dense op {op.name} needs a flat input, got {shapes[-1]}")
        shapes.append(out_shape(op, shapes[-1]))
    return shapes


def init_params(ops: tuple[Op, ...], input_shape: Sequence[int], key: jax.Array) -> dict:
    """Random initial params of a model (jitted, so it is cheap per architecture)."""
    model = SequentialNet(ops)
    x = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.jit(model.init)(key, x)["params"]
