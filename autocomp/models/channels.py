"""Channel dependencies of a traced model: which layers must lose the same channels together.

Structured pruning removes output channels of a layer; it is only correct where every consumer of
those channels shrinks with them. Residual adds tie the channels of several producers, batch
norm and depthwise convs pass channels through (their params are sliced), a flatten maps a
channel to many rows of the next dense layer, and a reduction over channels (softmax, layer
norm), an unknown primitive or the model output forbids pruning altogether.


:func:`trace_channels` walks the jaxpr of the model, in which every compressible layer is one
named ``jit`` call, and gives every channel of every value a *slot*; a union-find over slots
joins the slots that must be kept or removed together (what each primitive does to them:
:mod:`autocomp.models.channel_rules`). Unknown primitives pin what they touch (fail closed:
Torch-Pruning's DepGraph assumes unknown ops are elementwise, which is wrong on custom ops;
AIMET's mask propagator stops, as this does). Where the channel axis *is* is tracked through
transpose, reshape and squeeze, so a model that transposes a hidden state to NCHW for an
auxiliary output does not pin a stage. :mod:`autocomp.models.channel_groups` turns the trace
into channel groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from jax.extend import core as jcore

from autocomp.models.channel_rules import ELEMENTWISE, REDUCTIONS, WINDOWED, ChannelRules, Info

LAYER_PREFIX = "autocomp_layer_"


class UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.pinned: dict[int, str] = {}

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[max(ra, rb)] = min(ra, rb)
        reason = self.pinned.pop(max(ra, rb), None)
        if reason is not None:
            self.pinned.setdefault(min(ra, rb), reason)

    def pin(self, a: int, reason: str) -> None:
        self.pinned.setdefault(self.find(a), reason)

    def reason(self, a: int) -> str | None:
        return self.pinned.get(self.find(a))


@dataclass
class Trace:
    """What the walk over the jaxpr recorded."""

    uf: UnionFind = field(default_factory=UnionFind)
    produced: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> its output slots
    consumed: dict[int, Info | None] = field(default_factory=dict)  # layer -> its input's info
    leaf_slots: dict[int, Info] = field(default_factory=dict)  # variable leaf -> its slots
    # per equation (by id), each visit's Var -> Info of its operands and results, in visit
    # order (an inner jaxpr is visited once per call), for graph_costs
    visits: dict[int, list[dict]] = field(default_factory=dict)


class _Walker(ChannelRules):
    def __init__(self, trace: Trace):
        self.t = trace
        self.info: dict = {}  # Var -> Info
        self.leaf: dict = {}  # Var -> variable leaf index (params, batch stats)

    # ------------------------------------------------------------------ walk
    def walk(self, jaxpr, in_infos: Sequence[Info | None], in_leaves: Sequence[int | None]):
        # A jitted function called twice with the same shapes (``nn.relu``) has one inner
        # jaxpr, its variables the same objects at every call: what an earlier call left on
        # them is cleared, so no call sees another's channels.
        for v, info, leaf in zip(jaxpr.invars, in_infos, in_leaves, strict=True):
            _set(self.info, v, info)
            _set(self.leaf, v, leaf)
        for eqn in jaxpr.eqns:
            for o in eqn.outvars:
                self.info.pop(o, None)
                self.leaf.pop(o, None)
            self.eqn(eqn)
            seen = {v: self.info[v] for v in (*eqn.invars, *eqn.outvars)
                    if not isinstance(v, jcore.Literal) and v in self.info}  # fmt: skip
            self.t.visits.setdefault(id(eqn), []).append(seen)
        return [self.get(v) for v in jaxpr.outvars]

    def eqn(self, eqn) -> None:
        name = eqn.primitive.name
        if name in ("jit", "pjit") and str(eqn.params.get("name", "")).startswith(LAYER_PREFIX):
            self.layer(eqn)
        elif name in ELEMENTWISE:
            self.elementwise(eqn)
        elif _sub_jaxpr(eqn) is not None:
            self.call(eqn)
        elif name == "broadcast_in_dim":
            self.broadcast(eqn)
        elif name in REDUCTIONS or name in ("argmax", "argmin"):
            self.reduce(eqn)
        elif name == "reshape":
            self.reshape(eqn)
        elif name == "transpose":
            self.transpose(eqn)
        elif name == "squeeze":
            self.squeeze(eqn)
        elif name == "concatenate":
            self.concatenate(eqn)
        elif name in WINDOWED or name in ("pad", "slice", "dynamic_slice", "rev"):
            self.along(eqn)
        elif name == "conv_general_dilated":
            self.conv(eqn)
        elif any(self.get(v) is not None for v in eqn.invars):
            self.pin_all(eqn, f"channels reach {name!r}, which the analysis does not know")

    def layer(self, eqn) -> None:
        index = int(str(eqn.params["name"])[len(LAYER_PREFIX) :])
        self.t.consumed[index] = self.get(eqn.invars[0])
        out = eqn.outvars[0]
        slots = self.t.uf.new(out.aval.shape[-1])
        self.t.produced[index] = slots
        self.info[out] = Info(out.aval.ndim - 1, slots)

    def call(self, eqn) -> None:
        inner = _sub_jaxpr(eqn)
        closed = inner if hasattr(inner, "jaxpr") else None
        jaxpr = closed.jaxpr if closed is not None else inner
        n_const = len(eqn.invars) - len(jaxpr.invars)
        args = eqn.invars[n_const:] if n_const > 0 else eqn.invars
        outs = self.walk(
            jaxpr,
            [self.get(v) for v in args],
            [None if isinstance(v, jcore.Literal) else self.leaf.get(v) for v in args],
        )
        for o, info in zip(eqn.outvars, outs, strict=False):
            if info is not None:
                self.info[o] = info


def _set(table: dict, key, value) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = eqn.params.get(key)
        if inner is not None and (hasattr(inner, "eqns") or hasattr(inner, "jaxpr")):
            return inner
    return None


def trace_channels(closed_jaxpr, n_leaves: int) -> Trace:
    """Walk a model's jaxpr whose first ``n_leaves`` inputs are its variables' leaves and whose
    layers are ``jit`` calls named ``autocomp_layer_<index>``; the outputs are pinned."""
    trace = Trace()
    walker = _Walker(trace)
    jaxpr = closed_jaxpr.jaxpr
    leaves = [i if i < n_leaves else None for i in range(len(jaxpr.invars))]
    infos: list[Info | None] = [None] * len(jaxpr.invars)
    for i, v in enumerate(jaxpr.invars[:n_leaves]):
        # Vectors (biases, batch-norm scales and statistics) have one axis: their slots are
        # made now, so that reshapes and broadcasts on the way to their use keep them.
        if v.aval.ndim == 1 and v.aval.shape[0] > 1:
            infos[i] = Info(0, trace.uf.new(v.aval.shape[0]))
            trace.leaf_slots[i] = infos[i]
    outs = walker.walk(jaxpr, infos, leaves)
    for info in outs:
        walker.pin_info(info, "its channels reach the model output")
    return trace
