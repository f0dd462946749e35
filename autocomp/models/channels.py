"""Channel dependencies of a traced model: which layers must lose the same channels together.

Structured pruning removes output channels of a layer; it is only correct where every consumer of
those channels shrinks with them. Residual adds tie the channels of several producers, batch
norm and depthwise convs pass channels through (their params are sliced), a flatten maps a
channel to many rows of the next dense layer, and a reduction over channels (softmax, layer
norm), an unknown primitive or the model output forbids pruning altogether.

:func:`analyze` walks the jaxpr of the model, in which every compressible layer is one named
``jit`` call, and gives every channel of every value a *slot*; a union-find over slots joins the
slots that must be kept or removed together. Unknown primitives pin what they touch (fail
closed: Torch-Pruning's DepGraph assumes unknown ops are elementwise, which is wrong on custom
ops; AIMET's mask propagator stops, as this does). Where the channel axis *is* is tracked
through transpose, reshape and squeeze, so a model that transposes a hidden state to NCHW for
an auxiliary output does not pin a stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from jax.extend import core as jcore

LAYER_PREFIX = "autocomp_layer_"

ELEMENTWISE = frozenset(
    """add sub mul div max min pow atan2 rem and or xor not neg exp exp2 log log1p expm1 tanh
    logistic sqrt rsqrt cbrt abs sign erf erfc erf_inv integer_pow convert_element_type square
    sin cos tan floor ceil round is_finite select_n add_any ne eq gt lt ge le nextafter clamp
    stop_gradient copy copy_p reduce_precision imag real conj""".split()
)
REDUCTIONS = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or".split())
WINDOWED = frozenset(
    "reduce_window_sum reduce_window_max reduce_window_min reduce_window cumsum cummax".split()
)


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
class Info:
    """Where a value's channel axis is and the slot of each entry along it (-1: no slot);
    ``spatial``: for a flattened feature map, its spatial shape (rows are p * C + c)."""

    axis: int
    slots: np.ndarray
    spatial: tuple[int, ...] | None = None


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


class _Walker:
    def __init__(self, trace: Trace):
        self.t = trace
        self.info: dict = {}  # Var -> Info
        self.leaf: dict = {}  # Var -> variable leaf index (params, batch stats)

    # -------------------------------------------------------------- helpers
    def get(self, v) -> Info | None:
        if isinstance(v, jcore.Literal):
            return None
        return self.info.get(v)

    def pin_info(self, info: Info | None, reason: str) -> None:
        if info is not None:
            for s in info.slots:
                if s >= 0:
                    self.t.uf.pin(int(s), reason)

    def pin_all(self, eqn, reason: str) -> None:
        for v in eqn.invars:
            self.pin_info(self.get(v), reason)

    def unify(self, a: np.ndarray, b: np.ndarray, reason: str) -> None:
        for x, y in zip(a, b, strict=True):
            if x >= 0 and y >= 0:
                self.t.uf.union(int(x), int(y))
            elif x >= 0 or y >= 0:
                self.t.uf.pin(int(max(x, y)), reason)

    def leaf_info(self, v, axis: int) -> Info | None:
        """The slots of a variable leaf along ``axis``, made on first use."""
        leaf = self.leaf.get(v)
        if leaf is None:
            return None
        known = self.t.leaf_slots.get(leaf)
        if known is not None:
            if known.axis != axis:
                self.pin_info(known, "a parameter is used along two different axes")
            return known if known.axis == axis else None
        info = Info(axis, self.t.uf.new(v.aval.shape[axis]))
        self.t.leaf_slots[leaf] = info
        self.info[v] = info
        return info

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
            info = self.get(eqn.invars[0])
            if info is not None:
                perm = list(eqn.params["permutation"])
                self.info[eqn.outvars[0]] = Info(perm.index(info.axis), info.slots)
        elif name == "squeeze":
            info = self.get(eqn.invars[0])
            if info is not None:
                dims = eqn.params["dimensions"]
                if info.axis in dims:
                    self.pin_info(info, "squeeze of the channel axis")
                else:
                    axis = info.axis - sum(d < info.axis for d in dims)
                    self.info[eqn.outvars[0]] = Info(axis, info.slots)
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

    def elementwise(self, eqn) -> None:
        out = eqn.outvars[0]
        shape = out.aval.shape
        infos = [(v, self.get(v)) for v in eqn.invars]
        axes = {i.axis for _, i in infos if i is not None}
        if not axes:
            return
        if len(axes) > 1:
            self.pin_all(eqn, f"{eqn.primitive.name!r} combines channels on different axes")
            return
        axis = axes.pop()
        size = shape[axis]
        slots, spatial = None, None
        for v, info in infos:
            if info is None and not isinstance(v, jcore.Literal) and v.aval.ndim == len(shape):
                if v.aval.shape[axis] == size and size > 1:
                    info = self.leaf_info(v, axis)
                    if info is None:  # a computed per-channel array that nobody can slice
                        self.pin_all(eqn, "a per-channel constant that is not a parameter")
                        return
            if info is None:
                continue
            if len(info.slots) != size:
                continue  # broadcast from size 1
            if slots is None:
                slots, spatial = info.slots, info.spatial
            else:
                self.unify(slots, info.slots, "an elementwise op with unprunable channels")
        if slots is not None:
            for o in eqn.outvars:
                self.info[o] = Info(axis, slots, spatial)

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

    def broadcast(self, eqn) -> None:
        info = self.get(eqn.invars[0])
        if info is None:
            return
        dims = eqn.params["broadcast_dimensions"]
        out = eqn.outvars[0]
        axis = dims[info.axis]
        if out.aval.shape[axis] != len(info.slots):
            return
        self.info[out] = Info(axis, info.slots)

    def reduce(self, eqn) -> None:
        info = self.get(eqn.invars[0])
        if info is None:
            return
        axes = eqn.params["axes"]
        if info.axis in axes:
            self.pin_info(info, f"a reduction over channels ({eqn.primitive.name})")
            return
        self.info[eqn.outvars[0]] = Info(info.axis - sum(a < info.axis for a in axes), info.slots)

    def reshape(self, eqn) -> None:
        info = self.get(eqn.invars[0])
        if info is None:
            return
        src, dst = eqn.invars[0].aval.shape, tuple(eqn.params["new_sizes"])
        c = len(info.slots)
        out = eqn.outvars[0]
        before = math.prod(src[: info.axis])
        after = math.prod(src[info.axis + 1 :])
        # the channel axis keeps its size with the same total size before it
        for axis, size in enumerate(dst):
            if (
                size == c
                and math.prod(dst[:axis]) == before
                and math.prod(dst[axis + 1 :]) == after
            ):
                self.info[out] = Info(axis, info.slots)
                return
        # flatten of (..., positions..., C) into one trailing axis: row p * C + c
        if info.axis == len(src) - 1 and dst[-1] % c == 0:
            positions = dst[-1] // c
            lead = math.prod(dst[:-1])
            if lead * positions * c == math.prod(src) and math.prod(src[:-1]) % lead == 0:
                spatial = tuple(src[len(dst) - 1 : -1])  # the axes flattened with C
                spatial = spatial if math.prod(spatial) == positions else None
                self.info[out] = Info(len(dst) - 1, np.tile(info.slots, positions), spatial)
                return
        self.pin_info(info, f"a reshape {src} -> {dst} that moves channels")

    def concatenate(self, eqn) -> None:
        infos = [self.get(v) for v in eqn.invars]
        axes = {i.axis for i in infos if i is not None}
        if not axes:
            return
        if len(axes) > 1:
            self.pin_all(eqn, "a concatenation that mixes channel axes")
            return
        axis, dim = axes.pop(), eqn.params["dimension"]
        if axis != dim:  # along another axis: every operand must lose the same channels
            if any(i is None for i in infos):
                self.pin_all(eqn, "a concatenation with a tensor whose channels cannot be pruned")
                return
            for info in infos[1:]:
                self.unify(infos[0].slots, info.slots, "a concatenation along another axis")
            self.info[eqn.outvars[0]] = Info(axis, infos[0].slots)
            return
        parts = [
            i.slots if i is not None else np.full(v.aval.shape[dim], -1)
            for v, i in zip(eqn.invars, infos, strict=True)
        ]
        self.info[eqn.outvars[0]] = Info(dim, np.concatenate(parts))

    def along(self, eqn) -> None:
        """Pools, pads and slices: fine unless they act on the channel axis."""
        info = self.get(eqn.invars[0])
        for v in eqn.invars[1:]:
            self.pin_info(self.get(v), f"channels used as an index by {eqn.primitive.name}")
        if info is None:
            return
        c, a, p = len(info.slots), info.axis, eqn.params
        name = eqn.primitive.name
        acts = {
            "pad": lambda: tuple(p["padding_config"][a]) != (0, 0, 0),
            "slice": lambda: (
                p["start_indices"][a] != 0
                or p["limit_indices"][a] != c
                or (p.get("strides") or [1] * (a + 1))[a] != 1
            ),
            "dynamic_slice": lambda: p["slice_sizes"][a] != c,
            "rev": lambda: a in p["dimensions"],
            "cumsum": lambda: p["axis"] == a,
            "cummax": lambda: p["axis"] == a,
        }.get(name, lambda: p["window_dimensions"][a] != 1)
        if acts():
            self.pin_info(info, f"{name} acts on the channel axis")
            return
        self.info[eqn.outvars[0]] = Info(a, info.slots)

    def conv(self, eqn) -> None:
        """A conv that is not a compressible layer: only a depthwise one passes channels."""
        x, kernel = eqn.invars[:2]
        info = self.get(x)
        dn = eqn.params["dimension_numbers"]
        groups = eqn.params["feature_group_count"]
        out = eqn.outvars[0]
        c_in = x.aval.shape[dn.lhs_spec[1]]
        c_out = out.aval.shape[dn.out_spec[1]]
        depthwise = groups == c_in == c_out and eqn.params["batch_group_count"] == 1
        k_info = self.get(kernel) or (self.leaf_info(kernel, dn.rhs_spec[0]) if depthwise else None)
        if not depthwise or info is None or info.axis != dn.lhs_spec[1] or k_info is None:
            self.pin_info(info, "a convolution that is not a compressible layer")
            self.pin_info(k_info, "a convolution that is not a compressible layer")
            return
        self.unify(info.slots, k_info.slots, "a depthwise convolution")
        self.info[out] = Info(dn.out_spec[1], info.slots)


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


# ---------------------------------------------------------------------------- groups
@dataclass(frozen=True)
class Group:
    """Channels that are kept or removed together.

    Attributes:
        index: group id.
        producers: layers whose output channels are the group's, in call order; the first is
            the root, whose technique decides which channels survive.
        consumers: layers that read the group's channels.
        size: channels in the group.
        order: per producer, the group channel of each of its output channels.
        leaves: variable leaf index -> (axis, group channel of each entry along it): batch norm
            scales, biases and statistics, depthwise kernels, to slice with the group.
        pinned: why the group cannot be pruned (``None``: it can).
    """

    index: int
    producers: tuple[int, ...]
    consumers: tuple[int, ...]
    size: int
    order: dict[int, np.ndarray]
    leaves: dict[int, tuple[int, np.ndarray]]
    pinned: str | None


@dataclass(frozen=True)
class LayerWiring:
    """How one layer's input and output channels are tied to groups.

    ``in_group``: the prunable group its input channels come from (-1: none); ``in_positions``:
    rows per channel of its input (a dense layer after a flatten), ``in_spatial`` the spatial
    shape that flatten took; ``out_group``: the group of
    its output channels (-1: none); ``root``: it decides its group's channels;
    ``reason``: why it cannot remove output channels, or ``None``.
    """

    in_group: int = -1
    in_positions: int = 1
    out_group: int = -1
    root: bool = False
    reason: str | None = None
    in_spatial: tuple[int, ...] | None = None


def build_groups(trace: Trace, n_layers: int) -> tuple[tuple[Group, ...], tuple[LayerWiring, ...]]:
    """Groups of channels from a trace, failing closed wherever the channels do not line up."""
    uf = trace.uf
    # layers that produce any channel of the same class form one group
    layer_sets = UnionFind()
    layer_sets.new(n_layers)
    first_with: dict[int, int] = {}  # channel class -> the first layer producing it
    for layer in sorted(trace.produced):
        for s in trace.produced[layer]:
            layer_sets.union(first_with.setdefault(uf.find(int(s)), layer), layer)
    members: dict[int, list[int]] = {}
    for layer in sorted(trace.produced):
        members.setdefault(layer_sets.find(layer), []).append(layer)
    groups: list[Group] = []
    group_of_class: dict[int, tuple[int, int]] = {}
    for producers in members.values():
        g = len(groups)
        root = producers[0]
        classes = [uf.find(int(s)) for s in trace.produced[root]]
        pinned = next((uf.reason(int(s)) for s in trace.produced[root] if uf.reason(int(s))), None)
        index = {c: j for j, c in enumerate(classes)}
        order = {}
        if len(index) != len(classes):
            pinned = pinned or "a layer's output channels are tied to each other"
        for p in producers:
            mine = [uf.find(int(s)) for s in trace.produced[p]]
            pinned = pinned or next(
                (uf.reason(int(s)) for s in trace.produced[p] if uf.reason(int(s))), None
            )
            if sorted(mine) != sorted(classes) or len(set(mine)) != len(mine):
                pinned = pinned or "producers' channels do not line up one to one"
                order[p] = np.arange(len(mine))
            else:
                order[p] = np.array([index[c] for c in mine])
        for c, j in index.items():
            group_of_class[c] = (g, j)
        groups.append(Group(g, tuple(producers), (), len(classes), order, {}, pinned))
    groups = _attach(trace, groups, group_of_class, n_layers)
    return _wiring(trace, groups, group_of_class, n_layers)


def _attach(trace, groups, group_of_class, n_layers):
    """Consumers and variable leaves of each group; a mismatch pins the group."""
    uf = trace.uf
    consumers: dict[int, list[int]] = {g.index: [] for g in groups}
    pins: dict[int, str] = {}
    for layer in range(n_layers):
        info = trace.consumed.get(layer)
        if info is None:
            continue
        hit = {
            group_of_class[uf.find(int(s))][0]
            for s in info.slots
            if s >= 0 and uf.find(int(s)) in group_of_class
        }
        for g in hit:
            consumers[g].append(layer)
        if len(hit) > 1:
            for g in hit:
                pins.setdefault(g, f"layer {layer} reads channels of several groups (a concat)")
    leaves: dict[int, dict] = {g.index: {} for g in groups}
    for leaf, info in trace.leaf_slots.items():
        where = [group_of_class.get(uf.find(int(s))) for s in info.slots]
        hit = {w[0] for w in where if w is not None}
        if len(hit) == 1 and all(w is not None for w in where):
            g = hit.pop()
            leaves[g][leaf] = (info.axis, np.array([w[1] for w in where]))
        else:
            for g in hit:
                pins.setdefault(g, "a parameter spans channels of several groups")
    return [
        Group(
            g.index,
            g.producers,
            tuple(consumers[g.index]),
            g.size,
            g.order,
            leaves[g.index],
            g.pinned or pins.get(g.index),
        )
        for g in groups
    ]


def _wiring(trace, groups, group_of_class, n_layers):
    uf = trace.uf
    groups = list(groups)
    wiring: dict[int, dict] = {layer: {} for layer in range(n_layers)}
    for layer in range(n_layers):
        info = trace.consumed.get(layer)
        if info is None or not len(info.slots):
            continue
        where = [group_of_class.get(uf.find(int(s))) if s >= 0 else None for s in info.slots]
        hit = {w[0] for w in where if w is not None}
        if not hit:
            continue
        if len(hit) > 1 or any(w is None for w in where):
            for g in hit:
                groups[g] = pin_group(groups[g], f"layer {layer} reads these channels with others")
            continue
        g = where[0][0]
        if any(w[0] != g for w in where):
            continue
        group = groups[g]
        channels = np.array([w[1] for w in where])
        positions = len(channels) // group.size
        if positions * group.size != len(channels) or not np.array_equal(
            channels, np.tile(np.arange(group.size), positions)
        ):
            groups[g] = pin_group(
                group, f"layer {layer} reads the group's channels in another order"
            )
            continue
        spatial = info.spatial if positions > 1 else None
        wiring[layer] = {"in_group": g, "in_positions": positions, "in_spatial": spatial}
    out = []
    for layer in range(n_layers):
        group = next((g for g in groups if layer in g.producers), None)
        w = wiring[layer]
        if group is None:
            out.append(LayerWiring(**w, reason="its outputs are not traced to any consumer"))
            continue
        root = group.producers[0] == layer
        reason = group.pinned
        if reason is None and not root:
            reason = f"its channels follow the root of their group (layer {group.producers[0]})"
        if reason is None and not np.array_equal(group.order[layer], np.arange(group.size)):
            reason = "its channels are permuted against the group's"
        out.append(
            LayerWiring(
                in_group=w["in_group"] if w and groups[w["in_group"]].pinned is None else -1,
                in_positions=w.get("in_positions", 1),
                in_spatial=w.get("in_spatial"),
                out_group=group.index,
                root=root and group.pinned is None,
                reason=reason,
            )
        )
    return tuple(groups), tuple(out)


def pin_group(group: Group, reason: str) -> Group:
    return Group(
        group.index,
        group.producers,
        group.consumers,
        group.size,
        group.order,
        group.leaves,
        group.pinned or reason,
    )
