"""Op keys and exact counts: the table key of a deployed op (:func:`op_key`, read back by
:func:`parse_key`), the family its latency is interpolated in, and its exact MACs, parameters,
storage and bytes moved (:func:`op_counts`)."""

from __future__ import annotations

import math

from autocomp.models.ops import PARAMETRIC, Op, Shape, out_shape

BYTES_PER_FLOAT = 4
FREE_OPS = ("flatten", "relu", "save")  # fused or free in TFLite: priced as nothing


def _parse_dims(text: str) -> tuple[int, int]:
    a, _, b = text.partition("x")
    return int(a), int(b or a)


def parse_key(key: str) -> tuple[Op, Shape]:
    """The op and input shape a table key describes (the inverse of :func:`op_key`).

    Raises:
        ValueError: for a string that is not an op key.
    """
    parts = key.split("|")
    if len(parts) != 7:
        raise ValueError("expected kind|in=..|out=..|k=..|s=..|g=..|dtype")
    kind, *fields, dtype = parts
    values = dict(f.split("=", 1) for f in fields)
    if set(values) != {"in", "out", "k", "s", "g"}:
        raise ValueError("expected the fields in, out, k, s, g")
    shape = tuple(int(d) for d in values["in"].split("x"))
    (kh, kw), (sh, sw) = _parse_dims(values["k"]), _parse_dims(values["s"])
    if dtype == "float32":
        bits = 32
    elif dtype.startswith("int") and dtype[3:].isdigit():
        bits = int(dtype[3:])
    else:
        raise ValueError(f"unknown dtype {dtype!r}")
    groups = int(values["g"])
    op = Op(
        kind,
        "op" if kind in PARAMETRIC else None,
        int(values["out"]) if kind in (*PARAMETRIC,) else 0,
        kh,
        sh,
        kernel_w=kw if kw != kh else 0,
        stride_w=sw if sw != sh else 0,
        groups=1 if kind == "dwconv" else groups,
        bits=bits,
    )
    return op, shape


def op_family(op: Op, in_shape: Shape) -> tuple:
    """Ops whose latency is interpolated along their size: same kind, spatial input, kernel,
    stride, grouping and dtype."""
    grouping = "depthwise" if op.kind == "dwconv" else op.groups
    return (op.kind, tuple(in_shape[:-1]), op.kernel_hw, op.strides, grouping, op.bits)


def op_size(op: Op, in_shape: Shape) -> float:
    macs, _, _, weight_read, act_bytes = op_counts(op, in_shape)
    return float(macs) if macs else float(weight_read + act_bytes)


def _dims(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}x{b}"


def op_out_channels(op: Op, in_shape: Shape) -> int:
    if op.kind in ("conv", "dense", "expand") or (op.kind == "dwconv" and op.features):
        return op.features
    return in_shape[-1]


def op_key(op: Op, in_shape: Shape) -> str:
    """The table key of a deployed op: kind, input shape, outputs, kernel, stride, groups,
    weight dtype (``k``/``s`` read ``3x1`` for a non-square kernel or stride)."""
    shape = "x".join(str(d) for d in in_shape)
    groups = in_shape[-1] if op.kind == "dwconv" else op.groups
    dtype = "float32" if op.bits >= 32 else f"int{op.bits}"
    return (
        f"{op.kind}|in={shape}|out={op_out_channels(op, in_shape)}|k={_dims(*op.kernel_hw)}"
        f"|s={_dims(*op.strides)}|g={groups}|{dtype}"
    )


def op_counts(op: Op, in_shape: Shape) -> tuple[int, int, int, int, int]:
    """(MACs, params, storage bytes, weight bytes read, activation bytes) of one op, exactly.

    Storage of a sparse op (``density`` < 1) is a bitmask plus the non-zero values; weights of
    ``bits`` < 32 take ``bits`` each plus one float32 scale per output channel.
    """
    out = out_shape(op, in_shape)
    act_bytes = BYTES_PER_FLOAT * (math.prod(in_shape) + math.prod(out))
    if op.kind == "add":  # reads both operands
        act_bytes += BYTES_PER_FLOAT * math.prod(in_shape)
    if op.kind not in PARAMETRIC:
        return 0, 0, 0, 0, act_bytes
    kh, kw = op.kernel_hw
    features = op_out_channels(op, in_shape)
    if op.kind == "dwconv":  # m k x k filters per input channel
        weights = kh * kw * features
    elif op.kind == "expand":  # 1x1 to features // 2, 3x3 to the rest
        half = features // 2
        weights = in_shape[-1] * (half + 9 * (features - half))
    elif op.kind == "conv":
        weights = kh * kw * (in_shape[-1] // op.groups) * features
    else:
        weights = in_shape[0] * features
    positions = math.prod(out[:-1]) if op.kind != "dense" else 1
    macs = positions * weights
    bias = features if op.use_bias else 0
    nnz = weights if op.density >= 1.0 else int(round(op.density * weights))
    storage = math.ceil(nnz * op.bits / 8) + BYTES_PER_FLOAT * bias
    if op.bits < 32:
        storage += BYTES_PER_FLOAT * features  # per-channel scales
    if op.density < 1.0:
        storage += math.ceil(weights / 8)
    weight_read = math.ceil(weights * op.bits / 8) + BYTES_PER_FLOAT * bias
    return macs, nnz + bias, storage, weight_read, act_bytes
