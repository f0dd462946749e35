"""The search space of a model: every (layer, technique, ratio, input width) and what it costs.

Latency and energy come from the device table for each layer's *materialized* configuration
(the ops the technique deploys, at the input width left by the previous layer), so the search
sees what the phone would run, not what a mask simulates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autocomp.costs import DeviceProfile, price_op, price_ops, sum_costs
from autocomp.layers import LayerInfo
from autocomp.models import WEIGHTED, Op, Shape
from autocomp.techniques import Technique, kept, technique_fits

# Cost channels of the table, in order. The first three are the reward's resources.
CHANNELS = ("latency_ms", "energy_mj", "bytes", "params", "macs")


@dataclass(frozen=True)
class SearchSpace:
    """Static facts of a search space, as numpy arrays.

    Attributes:
        costs: float64[L, T, R, R_in, 5] cost of layer l under (t, r) when the previous layer
            kept the channels of ratio bin r_in (inf where the technique does not fit).
        out_bin: int32[L, T, R] ratio bin of this layer's kept outputs (0: all kept).
        allowed: bool[L, T, R] actions that exist (fitting technique; ``keep`` and ratio-free
            techniques only at ratio 0, the others only at ratios > 0, where they differ from
            ``keep``).
        fixed: float64[5] cost of ops outside every layer's span (before the first layer),
            with the table's per-model call overhead.
        base: float64[5] cost of the uncompressed model.
        cost_sources: how many priced ops each lookup source answered (``costs.SOURCES``).
        in_group: int[L] channel group of each layer's input (``num_groups``: none).
        root_group: int[L] group whose channels each layer decides (``num_groups``: none).
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
    num_groups: int
    chain: bool


def layer_ops(layer: LayerInfo, ops: Sequence[Op], in_channels: int) -> tuple[tuple, Shape]:
    """A layer's deployed ops plus its trailing ops (pool, flatten), and their input shape at
    an input width."""
    if layer.kind == "conv":
        in_shape = (*layer.in_shape[:-1], in_channels)
    elif ops[0].kind == "gap":  # a pooled head takes the feature map before the flatten
        in_shape = (*layer.pre_flatten[:-1], in_channels)
    else:
        in_shape = (layer.in_positions * in_channels,)
    return (*ops, *layer.trailing), in_shape


def fixed_ops(base_ops: Sequence[Op]) -> tuple[Op, ...]:
    """The ops before the first compressible layer: deployed as they are by every plan."""
    first = next(i for i, op in enumerate(base_ops) if op.kind in WEIGHTED)
    return tuple(base_ops[:first])


def cells(layers: Sequence[LayerInfo], techniques: Sequence[Technique], ratios: Sequence[float]):
    """Every (layer, technique, ratio bin, input bin) of the space with its deployed ops and
    their input shape; the first layer sees the full input only."""
    for l, layer in enumerate(layers):
        for t, tech in enumerate(techniques):
            if technique_fits(tech, layer) is not None:
                continue
            for r, ratio in enumerate(ratios):
                for r_in, in_ratio in enumerate(ratios if layer.in_group >= 0 else ratios[:1]):
                    c_in = kept(layer.in_channels, in_ratio)
                    ops, shape = layer_ops(layer, tech.ops(layer, ratio, c_in), c_in)
                    yield l, t, r, r_in, ops, shape


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
    fixed_priced: Sequence[tuple[Op, Shape]] | None = None,
    num_groups: int | None = None,
) -> SearchSpace:
    """Enumerate and price every configuration the search can produce.

    ``fixed_priced``: (op, input shape) of every op outside the compressible layers, for a
    model that is not an op tuple (default: the ops before the first layer of ``base_ops``).
    """
    n_l, n_t, n_r = len(layers), len(techniques), len(ratios)
    costs = np.full((n_l, n_t, n_r, n_r, len(CHANNELS)), np.inf)
    out_bin = np.zeros((n_l, n_t, n_r), np.int32)
    allowed = np.zeros((n_l, n_t, n_r), bool)
    sources: Counter = Counter()
    for l, t, r, r_in, ops, shape in cells(layers, techniques, ratios):
        layer, tech = layers[l], techniques[t]
        allowed[l, t, r] = (r == 0) == (tech.name == "keep" or tech.ratio_free)
        out_bin[l, t, r] = _out_bin(layer, tech.out_channels(layer, ratio=ratios[r]), ratios)
        total = price_ops(profile, ops, shape, strict=False)
        costs[l, t, r, r_in] = [getattr(total, c) for c in CHANNELS]
        sources.update(total.sources)
    if fixed_priced is None:
        fixed_total = price_ops(profile, fixed_ops(base_ops), input_shape, strict=False)
    else:
        fixed_total = sum_costs([price_op(profile, op, shape) for op, shape in fixed_priced])
    fixed = np.array([getattr(fixed_total, c) for c in CHANNELS], np.float64)
    fixed[CHANNELS.index("latency_ms")] += profile.invoke_overhead_ms  # once per model
    keep = [t.name for t in techniques].index("keep")
    base = fixed + costs[:, keep, 0, 0].sum(axis=0)
    sources.update(fixed_total.sources)
    n_g = len(layers) if num_groups is None else num_groups
    in_group = np.array([la.in_group if la.in_group >= 0 else n_g for la in layers], np.int32)
    root_group = np.array([la.out_group if la.out_group >= 0 else n_g for la in layers], np.int32)
    chain = all(
        la.in_group < 0 or (l > 0 and root_group[l - 1] == la.in_group)
        for l, la in enumerate(layers)
    ) and all(sum(other.in_group == g for other in layers) <= 1 for g in set(root_group) - {n_g})
    return SearchSpace(
        layers, techniques, tuple(ratios), costs, out_bin, allowed, fixed, base, dict(sources),
        in_group, root_group, n_g, chain,
    )  # fmt: skip


def plan_bins(space: SearchSpace, indices: np.ndarray) -> list[int]:
    """The input ratio bin of every layer under a plan (int[L, 2] indices)."""
    group_bin = np.zeros(space.num_groups + 1, np.int64)
    bins = []
    for l, (t, r) in enumerate(np.asarray(indices)):
        bins.append(int(group_bin[space.in_group[l]]))
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
    costs = space.costs
    if not space.chain:
        costs = np.broadcast_to(costs.min(axis=3, keepdims=True), costs.shape)
    for l in range(n_l - 1, -1, -1):
        nxt = rest[l + 1][space.out_bin[l]] if space.chain else rest[l + 1][:1][None]
        total = costs[l] + nxt[:, :, None, :]  # [T, R, R_in, 5]
        total = np.where(space.allowed[l][:, :, None, None], total, np.inf)
        rest[l] = total.min(axis=(0, 1))
    return rest
