"""The inventory of a model's compressible layers: what the environment walks, one step each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import numpy as np

from autocomp.models.ops import WEIGHTED, Op, Shape, run_ops, walk_shapes

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
        in_group: the channel group (see :mod:`autocomp.models.channel_groups`) this layer's
            input channels belong to, whose pruning removes its input rows; -1: none.
        out_group: the group whose root this layer is (its pruning decides the group's
            channels); -1: none.
        follows: the prunable group this layer's output channels belong to without being its
            root (they are removed where the root removes them); -1: none.
        out_reason: why output channels cannot be removed here (shown by ``inspect``).
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
    in_group: int = -1
    out_group: int = -1
    follows: int = -1
    out_reason: str | None = None

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
    roots: set[int] = set()  # a sequential model: each prunable layer is its own group
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
        coupled = any(op.kind in COUPLING for op in ops[i + 1 : end])
        is_root = not coupled and n < len(weighted) - 1
        feeds = n > 0 and (n - 1) in roots and in_channels == ops[weighted[n - 1]].features
        if is_root:
            roots.add(n)
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
                coupled_out=coupled,
                pre_flatten=pre_flatten,
                in_group=n - 1 if feeds else -1,
                out_group=n if is_root else -1,
            )
        )
    return tuple(layers)


class SequentialNetwork:
    """A model given as autocomp's op tuple: the front end of the built-in models.

    A network (this, or :class:`autocomp.models.linen.LinenNetwork` for a user's linen model) gives
    the environment its compressible ``layers``, the params of each (``layer_params``) and a
    ``forward(params, x, hook)`` in which ``hook(layer, h)`` may replace a layer's output.
    """

    def __init__(self, ops: Sequence[Op], layers: Sequence[LayerInfo]):
        self.ops = tuple(ops)
        self.layers = tuple(layers)

    @property
    def num_groups(self) -> int:
        return len(self.layers)

    def layer_params(self, params: dict, layer: LayerInfo) -> dict:
        return params[layer.name]

    def forward(self, params: dict, x, hook=None):
        by_name = {layer.name: layer for layer in self.layers}

        def op_hook(op, h):
            layer = by_name.get(op.name) if op.name is not None else None
            return None if layer is None or hook is None else hook(layer, h)

        return run_ops(self.ops, params, x, op_hook)


def as_network(model, layers: Sequence[LayerInfo]):
    """A network from an op tuple (the built-in models) or a network as it is."""
    return model if hasattr(model, "forward") else SequentialNetwork(model, layers)


def layer_inputs(
    model, layers: Sequence[LayerInfo], params: dict, x: np.ndarray, batch: int = 256
) -> list[np.ndarray]:
    """Each compressible layer's input in the trained model for images ``x`` (float32);
    ``model``: an op tuple or a network."""
    net = as_network(model, layers)
    names = {layer.name for layer in layers}

    @jax.jit
    def record(xb):
        seen = {}

        def hook(layer, h):
            if layer.name in names:
                seen[layer.name] = h
            return None

        net.forward(params, xb, hook)
        return [seen[layer.name] for layer in layers]

    chunks = [record(x[i : i + batch]) for i in range(0, len(x), batch)]
    return [np.concatenate([np.asarray(c[l]) for c in chunks]) for l in range(len(layers))]
