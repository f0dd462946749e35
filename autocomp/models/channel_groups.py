"""Channel groups from a channel trace (:func:`autocomp.models.channels.trace_channels`).

Layers whose output channels share slots form one group, whose first producer (the root)
decides which channels survive; its consumers and the variable leaves sliced with it
(batch-norm scales, biases and statistics, depthwise kernels) are attached, and
:class:`LayerWiring` says how each layer's input and output channels are tied to groups.
Wherever the channels do not line up one to one, the group is pinned (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autocomp.models.channels import Trace, UnionFind


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
