"""Sequential Flax CNNs described by data, so that a compressed model is just other data.

A model is a tuple of :class:`Op`. The base model comes from ``ModelConfig``; a compressed model
is the op tuple that the techniques materialize (pruned layers with fewer features, factorized
layers split in two). :func:`walk_shapes` gives every op's input shape without running anything,
which the cost tables and the layer inventory use.

Residual networks stay sequential: ``save`` pushes the current tensor, ``add`` pops it and adds
it back (ResNet's parameter-free "option A" shortcut: strided subsampling and zero channels
where the shapes differ). Batch norm (``bn``) exists only while the base model trains; it is then
folded into the layer before it (:func:`fold_batchnorm`), as TFLite does at export, so search,
compression and export see plain conv/dense layers with biases. The convs themselves, in the
forms XLA:CPU runs fast and the forms the TFLite converter wants, are :mod:`autocomp.models.convs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from autocomp.config import ModelConfig
from autocomp.models.convs import Conv, Expand, exporting

WEIGHTED = ("conv", "dense")  # the compressible layers
PARAMETRIC = (*WEIGHTED, "dwconv", "expand")  # every op with params after batch-norm folding
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
        kernel_w: kernel width of a conv when it differs from ``kernel`` (its height), for
            spatially separable k x 1 / 1 x k convs; 0: square.
        stride_w: horizontal stride when it differs from ``stride``; 0: the same.
        groups: grouped conv (input and output channels split into ``groups`` blocks).
        bits: stored bits per weight (32: float32; fewer: k-bit weights, applied as
            :func:`fake_quant` wherever the op runs, so training it is quantization-aware).
        padding: explicit ((top, bottom), (left, right)) zero padding of a conv; ``None``:
            SAME (a user's layer may pad explicitly, as ResNets do).
    """

    kind: str
    name: str | None = None
    features: int = 0
    kernel: int = 1
    stride: int = 1
    use_bias: bool = True
    density: float = 1.0
    kernel_w: int = 0
    stride_w: int = 0
    groups: int = 1
    bits: int = 32
    padding: tuple[tuple[int, int], tuple[int, int]] | None = None

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return (self.kernel, self.kernel_w or self.kernel)

    @property
    def strides(self) -> tuple[int, int]:
        return (self.stride, self.stride_w or self.stride)


Shape = tuple[int, ...]  # (H, W, C) for images, (C,) after flatten


def fake_quant(w: Array, bits: int) -> Array:
    """Symmetric per-output-channel ``bits``-bit weights (TFLite's per-channel int8 scheme:
    scale = max|w| / (2^(bits-1) - 1), zero point 0) with a straight-through gradient."""
    levels = 2 ** (bits - 1) - 1
    scale = jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)), keepdims=True) / levels
    scale = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(jnp.round(w / scale), -levels, levels) * scale
    return w + jax.lax.stop_gradient(q - w)


def _quantize_kernels(variables: dict, bits: int) -> dict:
    return {
        col: {k: fake_quant(v, bits) if k.startswith("kernel") else v for k, v in d.items()}
        for col, d in variables.items()
    }


def _weights(cls: type[nn.Module], op: Op) -> type[nn.Module]:
    """The layer class ``cls``, with its kernels fake-quantized when ``op.bits`` < 32."""
    if op.bits >= 32:
        return cls
    return nn.map_variables(
        cls, "params", trans_in_fn=lambda v: _quantize_kernels(v, op.bits), init=True
    )


def bake_quantized(ops: Sequence[Op], params: dict) -> tuple[tuple[Op, ...], dict]:
    """The same model with k-bit kernels stored as their quantized values and ``bits`` reset to
    32, so a converter sees plain layers (the values are exact on the k-bit grid)."""
    out = dict(params)
    for op in ops:
        if op.kind in PARAMETRIC and op.bits < 32:
            out[op.name] = _quantize_kernels({"p": params[op.name]}, op.bits)["p"]
    return tuple(replace(op, bits=32) for op in ops), out


def _conv(op: Op, x: Array) -> Array:
    return _weights(Conv, op)(
        op.features, op.kernel_hw, op.strides, op.groups, op.use_bias, op.padding, name=op.name
    )(x)


def _dwconv(op: Op, x: Array) -> Array:
    """Depthwise conv; ``features`` > 0 is channels x depth multiplier (output channel
    ``c * m + j`` is filter ``j`` of input channel ``c``, as in TFLite's DEPTHWISE_CONV_2D)."""
    c = x.shape[-1]
    return _weights(Conv, op)(
        op.features or c, op.kernel_hw, op.strides, c, op.use_bias, op.padding, name=op.name
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


def _outer(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A matmul over one input feature as the broadcast product it is (for the converter,
    which fuses a one-feature FULLY_CONNECTED into the next one with wrong shapes)."""
    del dimension_numbers, precision, preferred_element_type
    return lhs * rhs[0]


def _dense(op: Op, x: Array) -> Array:
    outer = exporting() and x.shape[-1] == 1
    dense = _weights(nn.Dense, op)
    return dense(op.features, use_bias=op.use_bias, name=op.name,
                 dot_general=_outer if outer else None)(x)  # fmt: skip


def _pool(pool_fn: Callable) -> Callable[[Op, Array], Array]:
    def apply(op: Op, x: Array) -> Array:
        return pool_fn(x, (op.kernel, op.kernel), strides=(op.stride, op.stride), padding="VALID")

    return apply


_APPLY: dict[str, Callable[[Op, Array], Array]] = {
    "conv": _conv,
    "dense": _dense,
    "dwconv": _dwconv,
    "expand": lambda op, x: _weights(Expand, op)(op.features, op.stride, name=op.name)(x),
    # on a flattened map (a user's model flattens before its dense layer): rows p * C + c
    "gap": lambda op, x: (
        x.mean(axis=(1, 2)) if x.ndim == 4 else x.reshape(len(x), -1, op.features).mean(axis=1)
    ),
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


def apply_op(op: Op, params: dict, x: Array) -> Array:
    """One op of a model as a pure function (``params``: the whole model's params)."""
    variables = {"params": {op.name: params[op.name]}} if op.kind in PARAMETRIC else {}
    return SequentialNet((op,)).apply(variables, x)


def run_ops(
    ops: Sequence[Op],
    params: dict,
    x: Array,
    hook: Callable[[Op, Array], Array | None] | None = None,
) -> Array:
    """:class:`SequentialNet` (inference form) as a plain function, where ``hook(op, x)`` may
    replace any op's output (the environment swaps in compressed layers this way)."""
    saved: list[Array] = []
    for op in ops:
        if op.kind == "save":
            saved.append(x)
            continue
        if op.kind == "add":
            x = x + shortcut(saved.pop(), x.shape)
            continue
        y = hook(op, x) if hook is not None else None
        x = apply_op(op, params, x) if y is None else y
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
    if op.kind in ("conv", "dwconv", "expand"):
        h, w, c = shape
        sh, sw = op.strides
        features = op.features or c if op.kind == "dwconv" else op.features
        if op.padding is not None:
            (pt, pb), (pl, pr) = op.padding
            kh, kw = op.kernel_hw
            return ((h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1, features)
        return (math.ceil(h / sh), math.ceil(w / sw), features)
    if op.kind == "gap":
        return (op.features or shape[-1],)
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
