"""What each primitive does to channel slots: the rules of :mod:`autocomp.models.channels`' walk.

Elementwise ops tie the slots of their operands (a per-channel parameter gets slots of its own,
to slice with the group), broadcasts, reductions, reshapes, transposes and squeezes move the
channel axis or pin it, concatenations join or stack slots, pools, pads and slices pass channels
unless they act on the channel axis, and a conv that is not a compressible layer passes them
only when it is depthwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from jax.extend import core as jcore

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


@dataclass
class Info:
    """Where a value's channel axis is and the slot of each entry along it (-1: no slot);
    ``spatial``: for a flattened feature map, its spatial shape (rows are p * C + c)."""

    axis: int
    slots: np.ndarray
    spatial: tuple[int, ...] | None = None


class ChannelRules:
    """The per-primitive rules, mixed into the walker: ``t`` is the walk's
    :class:`~autocomp.models.channels.Trace`, ``info`` maps each ``Var`` to its :class:`Info`,
    ``leaf`` maps each ``Var`` of a variable leaf to the leaf's index."""

    t: Any
    info: dict
    leaf: dict

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

    def transpose(self, eqn) -> None:
        info = self.get(eqn.invars[0])
        if info is not None:
            perm = list(eqn.params["permutation"])
            self.info[eqn.outvars[0]] = Info(perm.index(info.axis), info.slots)

    def squeeze(self, eqn) -> None:
        info = self.get(eqn.invars[0])
        if info is None:
            return
        dims = eqn.params["dimensions"]
        if info.axis in dims:
            self.pin_info(info, "squeeze of the channel axis")
        else:
            axis = info.axis - sum(d < info.axis for d in dims)
            self.info[eqn.outvars[0]] = Info(axis, info.slots)
