"""The inventory of a model's compressible layers: what the environment walks, one step each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import numpy as np

from autocomp.models import WEIGHTED, Op, Shape, run_ops, walk_shapes

COUPLING = ("save", "add", "dwconv")  # ops that tie the channels of the layer before them


@dataclass(frozen=True)
class LayerInfo:
    """A compressible (weighted) layer and what surrounds it.

    Attributes:
        index: position among the compressible layers (the environment's step).
        name: params key (the layer's pytree path below ``params``).
        op: the base op.
        in_shape: input shape of one example, (H, W, C) or (C,).
        trailing: the non-weighted ops after this layer up to the next weighted one.
        in_channels: channels of the tensor feeding this layer (before any flatten).
        in_positions: spatial positions per input channel in this layer's input rows
            (H*W for a dense layer after a flatten, else 1); row = position * C + channel.
        is_classifier: the last weighted layer, whose outputs are the classes.
        coupled_out: the layer's output channels are tied to another tensor's (a residual
            shortcut saves or adds them, or a depthwise conv follows channel for channel), so
            techniques that remove output channels do not fit.
        pre_flatten: for a dense layer after a flatten, the (H, W, C) shape that was flattened.
    """

    index: int
    name: str
    op: Op
    in_shape: Shape
    trailing: tuple[Op, ...]
    in_channels: int
    in_positions: int
    is_classifier: bool
    coupled_out: bool = False
    pre_flatten: Shape | None = None

    @property
    def kind(self) -> str:
        return self.op.kind

    @property
    def features(self) -> int:
        return self.op.features

    @property
    def kernel(self) -> int:
        return self.op.kernel

    @property
    def fan_in(self) -> int:
        """Rows of the layer's weight matrix: k*k*C_in for a conv, inputs for a dense."""
        if self.kind == "conv":
            return self.kernel * self.kernel * self.in_shape[-1]
        return self.in_shape[0]

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        if self.kind == "conv":
            return (self.kernel, self.kernel, self.in_shape[-1], self.features)
        return (self.in_shape[0], self.features)

    def input_rows(self, kept_channels: np.ndarray) -> np.ndarray:
        """Input rows (dense) or input channels (conv) that survive when the producing layer
        keeps ``kept_channels`` (sorted channel indices)."""
        kept = np.asarray(kept_channels, dtype=np.int64)
        if self.in_positions == 1:
            return kept
        pos = np.arange(self.in_positions, dtype=np.int64)[:, None]
        return (pos * self.in_channels + kept[None, :]).reshape(-1)


def compressible_layers(ops: Sequence[Op], input_shape: Sequence[int]) -> tuple[LayerInfo, ...]:
    """The weighted layers of ``ops`` in order, with shapes and neighbourhood."""
    shapes = walk_shapes(ops, input_shape)
    weighted = [i for i, op in enumerate(ops) if op.kind in WEIGHTED]
    layers = []
    for n, i in enumerate(weighted):
        end = weighted[n + 1] if n + 1 < len(weighted) else len(ops)
        in_shape = shapes[i]
        in_channels, in_positions, pre_flatten = in_shape[-1], 1, None
        flattens = [j for j in range(weighted[n - 1] if n else 0, i) if ops[j].kind == "flatten"]
        if ops[i].kind == "dense" and flattens:
            # Rows of a dense after a flatten are (position, channel) of the pre-flatten tensor.
            pre_flatten = tuple(shapes[flattens[-1]])
            in_channels = pre_flatten[-1]
            in_positions = int(np.prod(pre_flatten[:-1]))
        layers.append(
            LayerInfo(
                index=n,
                name=ops[i].name,
                op=ops[i],
                in_shape=in_shape,
                trailing=tuple(ops[i + 1 : end]),
                in_channels=in_channels,
                in_positions=in_positions,
                is_classifier=n == len(weighted) - 1,
                coupled_out=any(op.kind in COUPLING for op in ops[i + 1 : end]),
                pre_flatten=pre_flatten,
            )
        )
    return tuple(layers)


def layer_inputs(
    ops: Sequence[Op], layers: Sequence[LayerInfo], params: dict, x: np.ndarray, batch: int = 256
) -> list[np.ndarray]:
    """Each compressible layer's input in the trained model for images ``x`` (float32)."""
    names = {layer.name for layer in layers}

    @jax.jit
    def record(xb):
        seen = {}

        def hook(op, h):
            if op.name in names:
                seen[op.name] = h
            return None

        run_ops(ops, params, xb, hook)
        return [seen[layer.name] for layer in layers]

    chunks = [record(x[i : i + batch]) for i in range(0, len(x), batch)]
    return [np.concatenate([np.asarray(c[l]) for c in chunks]) for l in range(len(layers))]
