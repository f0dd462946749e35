"""The search space of a model: every (layer, technique, ratio, input width) and what it costs.

Latency and energy come from the device table for each layer's *materialized* configuration
(the ops the technique deploys, at the input width left by the previous layer), so the search
sees what the phone would run, not what a mask simulates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from autocomp.devices.costs import OpCost, price_op, price_ops, sum_costs
from autocomp.devices.tables import DeviceProfile
from autocomp.models.graph_costs import GraphOp, at_width
from autocomp.models.layers import LayerInfo
from autocomp.models.ops import WEIGHTED, Op, Shape
from autocomp.techniques import Technique, identity_index, kept, technique_fits

# Cost channels of the table, in order. The first three are the reward's resources.
CHANNELS = ("latency_ms", "energy_mj", "bytes", "params", "macs")


@dataclass(frozen=True)
class SearchSpace:
    """Static facts of a search space, as numpy arrays.

    Attributes:
        costs: float64[L, T, R, W, 5] cost of layer l under (t, r) at width index
            w = r_in + R * r_follow: its input group kept the channels of ratio bin r_in and,
            for a layer whose outputs follow a group's root (a residual block's last conv), the
            root kept those of bin r_follow (W = R on a model without such layers). Inf where
            the technique does not fit. A group root's cells include the ops outside the
            layers whose width its group decides (adds, gates, pools, depthwise convs).
        out_bin: int32[L, T, R] ratio bin of this layer's kept outputs (0: all kept).
        allowed: bool[L, T, R] actions that exist (fitting technique; the identity (``keep``)
            and ratio-free techniques only at ratio 0, the others only at ratios > 0, where they
            differ from the identity).
        fixed: float64[5] cost of ops outside every layer's span whose width no plan changes,
            with the table's per-model call overhead.
        base: float64[5] cost of the uncompressed model.
        cost_sources: how many priced ops each lookup source answered (``costs.SOURCES``).
        in_group: int[L] channel group of each layer's input (``num_groups``: none).
        root_group: int[L] group whose channels each layer decides (``num_groups``: none).
        follow_group: int[L] group whose root decides each layer's output width
            (``num_groups``: none).
        num_groups: channel groups of the model.
        chain: each group feeds only the next layer (a sequential model), so the cheapest
            completion of a plan is exact; otherwise it is a lower bound.
    """

    layers: tuple[LayerInfo, ...]
    techniques: tuple[Technique, ...]
    ratios: tuple[float, ...]
    costs: np.ndarray
    out_bin: np.ndarray
    allowed: np.ndarray
    fixed: np.ndarray
    base: np.ndarray
    cost_sources: dict[str, int]
    in_group: np.ndarray
    root_group: np.ndarray
    follow_group: np.ndarray
    num_groups: int
    chain: bool


def layer_ops(
    layer: LayerInfo, ops: Sequence[Op], in_channels: int, pooled_input: bool = False
) -> tuple[tuple, Shape]:
    """A layer's deployed ops plus its trailing ops (pool, flatten), and their input shape at
    an input width; ``pooled_input``: the technique's ops take the feature map before the
    flatten (``Technique.pooled_input``)."""
    if layer.kind == "conv":
        in_shape = (*layer.in_shape[:-1], in_channels)
    elif pooled_input:
        in_shape = (*layer.pre_flatten[:-1], in_channels)
    else:
        in_shape = (layer.in_positions * in_channels,)
    return (*ops, *layer.trailing), in_shape


def fixed_ops(base_ops: Sequence[Op]) -> tuple[Op, ...]:
    """The ops before the first compressible layer: deployed as they are by every plan."""
    first = next(i for i, op in enumerate(base_ops) if op.kind in WEIGHTED)
    return tuple(base_ops[:first])


def cells(layers: Sequence[LayerInfo], techniques: Sequence[Technique], ratios: Sequence[float]):
    """Every (layer, technique, ratio bin, width index) of the space with its deployed ops and
    their input shape (see :class:`SearchSpace`); the first layer sees the full input only."""
    n_r = len(ratios)
    for l, layer in enumerate(layers):
        for t, tech in enumerate(techniques):
            if technique_fits(tech, layer) is not None:
                continue
            for r, ratio in enumerate(ratios):
                for r_in, in_ratio in enumerate(ratios if layer.in_group >= 0 else ratios[:1]):
                    c_in = kept(layer.in_channels, in_ratio)
                    ops = tech.ops(layer, ratio, c_in)
                    follow = ratios if layer.follows >= 0 else ratios[:1]
                    for r_out, out_ratio in enumerate(follow):
                        if r_out:  # the root removed these outputs
                            last = replace(ops[-1], features=kept(layer.features, out_ratio))
                            deployed, shape = layer_ops(
                                layer, (*ops[:-1], last), c_in, tech.pooled_input
                            )
                        else:
                            deployed, shape = layer_ops(layer, ops, c_in, tech.pooled_input)
                        yield l, t, r, r_in + n_r * r_out, deployed, shape


def _out_bin(layer: LayerInfo, out_channels: int, ratios: Sequence[float]) -> int:
    if out_channels == layer.features:
        return 0
    for b, ratio in enumerate(ratios):
        if kept(layer.features, ratio) == out_channels:
            return b
    raise ValueError(f"layer {layer.name}: {out_channels} outputs match no ratio bin")


def build_search_space(
    base_ops: tuple[Op, ...],
    layers: tuple[LayerInfo, ...],
    techniques: tuple[Technique, ...],
    ratios: Sequence[float],
    profile: DeviceProfile,
    input_shape: Sequence[int],
    graph: Sequence[tuple[int, GraphOp]] | None = None,
    num_groups: int | None = None,
) -> SearchSpace:
    """Enumerate and price every configuration the search can produce.

    ``graph``: for a model that is not an op tuple, every op it runs outside the compressible
    layers with the channel group that decides its width (-1: none; see
    :mod:`autocomp.models.graph_costs`); default: the ops of ``base_ops`` before its first layer.
    """
    n_l, n_t, n_r = len(layers), len(techniques), len(ratios)
    n_w = n_r * (n_r if any(la.follows >= 0 for la in layers) else 1)
    costs = np.full((n_l, n_t, n_r, n_w, len(CHANNELS)), np.inf)
    out_bin = np.zeros((n_l, n_t, n_r), np.int32)
    allowed = np.zeros((n_l, n_t, n_r), bool)
    sources: Counter = Counter()
    for l, t, r, w, ops, shape in cells(layers, techniques, ratios):
        layer, tech = layers[l], techniques[t]
        allowed[l, t, r] = (r == 0) == (tech.identity or tech.ratio_free)
        out_bin[l, t, r] = _out_bin(layer, tech.out_channels(layer, ratio=ratios[r]), ratios)
        total = price_ops(profile, ops, shape, strict=False)
        costs[l, t, r, w] = [getattr(total, c) for c in CHANNELS]
        sources.update(total.sources)
    if graph is None:
        fixed_total = price_ops(profile, fixed_ops(base_ops), input_shape, strict=False)
    else:
        fixed_total, by_group = _graph_costs(graph, layers, ratios, profile, sources)
        for root in (la for la in layers if la.out_group in by_group):
            # the group's ops at the width the root's action leaves
            costs[root.index] += by_group[root.out_group][out_bin[root.index]][:, :, None, :]
    fixed = np.array([getattr(fixed_total, c) for c in CHANNELS], np.float64)
    fixed[CHANNELS.index("latency_ms")] += profile.invoke_overhead_ms  # once per model
    base = fixed + costs[:, identity_index(techniques), 0, 0].sum(axis=0)
    sources.update(fixed_total.sources)
    n_g = len(layers) if num_groups is None else num_groups

    def group_ids(values) -> np.ndarray:
        return np.array([g if g >= 0 else n_g for g in values], np.int32)

    in_group = group_ids(la.in_group for la in layers)
    root_group = group_ids(la.out_group for la in layers)
    follow_group = group_ids(la.follows for la in layers)
    chain = (
        n_w == n_r
        and all(
            la.in_group < 0 or (l > 0 and root_group[l - 1] == la.in_group)
            for l, la in enumerate(layers)
        )
        and all(sum(other.in_group == g for other in layers) <= 1 for g in set(root_group) - {n_g})
    )
    return SearchSpace(
        layers, techniques, tuple(ratios), costs, out_bin, allowed, fixed, base, dict(sources),
        in_group, root_group, follow_group, n_g, chain,
    )  # fmt: skip


def _graph_costs(graph, layers, ratios, profile, sources: Counter):
    """The cost of the ops outside the layers: a total for those of fixed width, and per
    prunable group float64[R, 5] at each ratio bin of its root (``sources`` counts each op
    once, at full width)."""
    roots = {la.out_group: la for la in layers if la.out_group >= 0}
    fixed, by_group = [], {}
    for g, gop in graph:
        root = roots.get(g)
        if root is None:
            fixed.append(_scaled(price_op(profile, gop.op, gop.shape), gop.count))
            continue
        rows = by_group.setdefault(g, np.zeros((len(ratios), len(CHANNELS))))
        for r, ratio in enumerate(ratios):
            op, shape = at_width(gop, root.features, kept(root.features, ratio))
            cost = _scaled(price_op(profile, op, shape), gop.count)
            rows[r] += [getattr(cost, c) for c in CHANNELS]
            if r == 0:
                sources[cost.source] += 1
    return sum_costs(fixed), by_group


def _scaled(cost: OpCost, count: int) -> OpCost:
    """An op run ``count`` times per example (its weights stored once)."""
    if count == 1:
        return cost
    return replace(cost, latency_ms=cost.latency_ms * count, energy_mj=cost.energy_mj * count,
                   macs=cost.macs * count)  # fmt: skip


def plan_bins(space: SearchSpace, indices: np.ndarray) -> list[int]:
    """The width index (see :class:`SearchSpace`) of every layer under a plan (int[L, 2])."""
    n_r = len(space.ratios)
    group_bin = np.zeros(space.num_groups + 1, np.int64)
    bins = []
    for l, (t, r) in enumerate(np.asarray(indices)):
        follow = group_bin[space.follow_group[l]]
        bins.append(int(group_bin[space.in_group[l]] + n_r * follow))
        if space.root_group[l] < space.num_groups:
            group_bin[space.root_group[l]] = space.out_bin[l, t, r]
    return bins


def plan_cost(space: SearchSpace, indices: np.ndarray) -> np.ndarray:
    """Cost channels of a plan given as int[L, 2] (technique, ratio bin) indices."""
    total = space.fixed.copy()
    bins = plan_bins(space, indices)
    for l, (t, r) in enumerate(np.asarray(indices)):
        total += space.costs[l, t, r, bins[l]]
    return total


def min_rest(space: SearchSpace) -> np.ndarray:
    """float64[L+1, R_in, 5]: cheapest cost of layers l.. given input bin, per channel.

    A backward dynamic programme over the layers; on a chain (each layer's outputs feed the
    next layer) it is the exact minimum per channel, so a single budget is enforced exactly by
    masking (AMC's action wall, without editing actions). Where groups branch (residual
    networks), a layer's input width is not fixed by the layer before it, and each layer's
    cheapest cost over every input width gives a lower bound: no feasible action is masked.
    """
    n_l, _, n_r = space.out_bin.shape
    rest = np.zeros((n_l + 1, n_r, len(CHANNELS)))
    for l in range(n_l - 1, -1, -1):
        allowed = space.allowed[l][:, :, None, None]
        if space.chain:  # W == R: the width index is the input bin
            total = space.costs[l] + rest[l + 1][space.out_bin[l]][:, :, None, :]
            rest[l] = np.where(allowed, total, np.inf).min(axis=(0, 1))
        else:  # the cheapest cell at any width, the same for every input bin
            total = np.where(allowed, space.costs[l], np.inf).min(axis=(0, 1, 2))
            rest[l] = total + rest[l + 1][0]
    return rest
