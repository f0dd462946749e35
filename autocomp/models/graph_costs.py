"""What a traced model runs besides its compressible layers, as ops the cost table prices.

A user's model is not a tuple of ops: between its layers it adds shortcuts, gates channels,
pools, concatenates and applies activations, and its depthwise convs and uncompressible layers
cost time too. :func:`graph_ops` walks the same jaxpr the channel analysis walks (every
compressible layer one named ``jit`` call) and turns every operation on the activations (what
depends on the model input; arithmetic on parameters alone is folded by the converter) into an
:class:`~autocomp.models.ops.Op` with its input shape:

- ``add`` / ``mul``: two activations added (residual) or multiplied (squeeze-excite gate);
- ``maxpool`` / ``avgpool`` (``reduce_window``), ``gap`` (a reduction over the spatial axes);
- ``dwconv`` / ``conv`` / ``dense``: convolutions and matmuls outside the compressible layers;
- ``concat``, ``pad``, ``act`` (sigmoid, tanh, exp, ...), ``affine`` (a scale or shift by a
  constant that the converter cannot fold into the op before it), ``reduce`` and ``other``;
- free: ReLU-style clipping, reshapes, broadcasts, casts, and a scale or shift right after a
  conv, a matmul or a reduction (batch norm at inference, a bias, the division of a mean),
  which TFLite folds.

Each op keeps the channel slots of its input (:class:`~autocomp.models.channel_rules.Info`), so the
search space can price it at the width its channel group keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from jax.extend import core as jcore

from autocomp.models.channel_rules import ELEMENTWISE, Info
from autocomp.models.channels import LAYER_PREFIX, _sub_jaxpr
from autocomp.models.ops import Op, Shape

FOLDABLE = frozenset("add sub mul div add_any".split())  # a scale or shift by a constant
CLIPS = frozenset("max min clamp".split())  # ReLU, ReLU6, clipping: fused by the converter
FREE = frozenset(
    """reshape broadcast_in_dim squeeze expand_dims convert_element_type copy copy_p
    stop_gradient transpose slice dynamic_slice select_n neg reduce_precision""".split()
)
FRESH = frozenset(
    "conv_general_dilated dot_general reduce_sum reduce_max reduce_window_sum".split()
)


@dataclass(frozen=True)
class GraphOp:
    """One op the model runs outside its compressible layers.

    Attributes:
        op: the op the cost table prices.
        shape: its input shape for one example (for ``add``/``mul``/``concat``: the output's).
        info: channel axis (of the batched value) and slots of that input; ``None``: no
            channels that pruning can change.
        count: how many times it runs per example (a matmul over positions).
        primitive: the jaxpr primitive it comes from.
    """

    op: Op
    shape: Shape
    info: Info | None
    count: int = 1
    primitive: str = ""


def graph_ops(closed_jaxpr, n_leaves: int, visits: dict) -> list[GraphOp]:
    """The priced ops of a model's jaxpr whose first ``n_leaves`` inputs are its variables
    (``visits``: what the channel analysis saw at each equation, ``Trace.visits``)."""
    jaxpr = closed_jaxpr.jaxpr
    found: list[GraphOp] = []
    live = [i >= n_leaves for i in range(len(jaxpr.invars))]
    _walk(jaxpr, live, [False] * len(live), _Visits(visits), found)
    return found


class _Visits:
    """The channel analysis' view of each equation, visit by visit (the walks agree)."""

    def __init__(self, visits: dict):
        self.visits, self.count = visits, {}

    def next(self, eqn) -> dict:
        k = self.count.get(id(eqn), 0)
        self.count[id(eqn)] = k + 1
        return self.visits[id(eqn)][k]


def _walk(jaxpr, live_in, fresh_in, visits: _Visits, found) -> tuple[list[bool], list[bool]]:
    live = {v for v, on in zip(jaxpr.invars, live_in, strict=True) if on}
    fresh = {v for v, on in zip(jaxpr.invars, fresh_in, strict=True) if on}

    def is_live(v) -> bool:
        return not isinstance(v, jcore.Literal) and v in live

    for eqn in jaxpr.eqns:
        infos = visits.next(eqn)
        # every call is walked (an inner jaxpr is shared by its calls), the rest only when
        # it computes on activations
        ins = [v for v in eqn.invars if is_live(v)]
        name = eqn.primitive.name
        outs = eqn.outvars
        inner = _sub_jaxpr(eqn)
        if name in ("jit", "pjit") and str(eqn.params.get("name", "")).startswith(LAYER_PREFIX):
            if ins:
                live.update(outs)
                fresh.update(outs)
            continue
        if inner is not None and name not in ELEMENTWISE:
            sub = getattr(inner, "jaxpr", inner)
            args = eqn.invars[len(eqn.invars) - len(sub.invars) :]
            out_live, out_fresh = _walk(
                sub,
                [is_live(v) for v in args],
                [not isinstance(v, jcore.Literal) and v in fresh for v in args],
                visits,
                found,
            )
            live.update(o for o, on in zip(outs, out_live, strict=False) if on)
            fresh.update(o for o, on in zip(outs, out_fresh, strict=False) if on)
            continue
        if not ins:
            continue
        live.update(outs)
        kind = _classify(eqn, ins, fresh)
        if kind == "fold" or (kind == "free" and name in FREE and ins[0] in fresh):
            fresh.update(outs)  # folded into the op before, or a view of its output
        if kind in ("fold", "free"):
            continue
        if name in FRESH:
            fresh.update(outs)
        found.append(_priced(eqn, kind, ins, infos))
    out_live = [is_live(v) for v in jaxpr.outvars]
    out_fresh = [not isinstance(v, jcore.Literal) and v in fresh for v in jaxpr.outvars]
    return out_live, out_fresh


def _classify(eqn, ins, fresh) -> str:
    name = eqn.primitive.name
    if name in FREE:
        return "free"
    if name in ELEMENTWISE:
        if len(ins) >= 2:
            return {"add": "add", "sub": "add", "add_any": "add", "mul": "mul", "div": "mul"}.get(
                name, "other"
            )
        if name in CLIPS:
            return "free"
        if name in FOLDABLE:
            return "fold" if ins[0] in fresh else "affine"
        return "act"
    if name == "reduce_window_max":
        return "maxpool"
    if name == "reduce_window_sum":
        return "avgpool"
    if name in ("reduce_sum", "reduce_max", "reduce_min"):
        shape = ins[0].aval.shape
        return "gap" if len(shape) == 4 and tuple(eqn.params["axes"]) == (1, 2) else "reduce"
    if name == "conv_general_dilated":
        return "conv"
    if name == "dot_general":
        return "dense" if len(ins) == 1 else "other"
    if name == "concatenate":
        return "concat"
    if name == "pad":
        return "pad"
    return "other"


def _priced(eqn, kind: str, ins, infos) -> GraphOp:
    x = ins[0]
    name = eqn.primitive.name
    out = eqn.outvars[0]
    if kind in ("add", "mul", "concat", "other", "act", "affine", "pad", "reduce"):
        value = out if kind in ("add", "mul", "concat") else x
        return GraphOp(Op(kind), value.aval.shape[1:], infos.get(value), 1, name)
    if kind in ("maxpool", "avgpool"):
        window, strides = eqn.params["window_dimensions"], eqn.params["window_strides"]
        op = Op(kind, kernel=int(window[1]), stride=int(strides[1]))
        return GraphOp(op, x.aval.shape[1:], infos.get(x), 1, name)
    if kind == "gap":
        return GraphOp(Op("gap"), x.aval.shape[1:], infos.get(x), 1, name)
    if kind == "conv":
        return _conv(eqn, infos)
    # a matmul by a constant (a layer autocomp does not compress): once per position
    contract, _ = eqn.params["dimension_numbers"]
    k = math.prod(x.aval.shape[a] for a in contract[0 if eqn.invars[0] is x else 1])
    n = math.prod(out.aval.shape[1:])
    positions = max(1, math.prod(x.aval.shape[1:]) // k)
    return GraphOp(Op("dense", "op", n // positions), (k,), None, positions, name)


def _conv(eqn, infos) -> GraphOp:
    x, kernel = eqn.invars[:2]
    p = eqn.params
    dn = p["dimension_numbers"]
    c_in = x.aval.shape[dn.lhs_spec[1]]
    c_out = eqn.outvars[0].aval.shape[dn.out_spec[1]]
    kh, kw = (kernel.aval.shape[d] for d in dn.rhs_spec[2:4])
    sh, sw = p["window_strides"]
    padding = tuple(tuple(int(a) for a in pair) for pair in p["padding"])
    spatial = tuple(x.aval.shape[d] for d in dn.lhs_spec[2:4])
    shape = (*spatial, c_in)
    groups = p["feature_group_count"]
    info = infos.get(x)
    info = Info(3, info.slots) if info is not None and info.axis == dn.lhs_spec[1] else None
    common = dict(kernel=kh, stride=sh, kernel_w=kw if kw != kh else 0,
                  stride_w=sw if sw != sh else 0, padding=padding)  # fmt: skip
    if groups == c_in and c_in > 1:
        op = Op("dwconv", "op", c_out if c_out != c_in else 0, **common)
        return GraphOp(op, shape, info, 1, "conv_general_dilated")
    op = Op("conv", "op", c_out, groups=groups, **common)
    return GraphOp(op, shape, None, 1, "conv_general_dilated")


def at_width(g: GraphOp, group_size: int, kept_channels: int) -> tuple[Op, Shape]:
    """The op and input shape when its channel group keeps ``kept_channels`` of
    ``group_size`` (the channel axis may hold the group several times: a flatten)."""
    if g.info is None:
        return g.op, g.shape
    axis = g.info.axis - 1  # without the batch axis
    width = len(g.info.slots) // group_size * kept_channels
    shape = (*g.shape[:axis], width, *g.shape[axis + 1 :])
    op = g.op
    if op.kind == "dwconv" and op.features:  # a depth multiplier keeps its share
        op = replace(op, features=op.features // g.shape[axis] * width)
    return op, shape
