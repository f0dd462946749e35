"""``autocomp.inspect``: what autocomp sees in a user's model, as a table."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence

from autocomp.devices.opkeys import op_counts
from autocomp.models.linen import LinenNetwork
from autocomp.techniques import REGISTRY, make_technique, technique_fits

BASE_TECHNIQUES = tuple(name for name in REGISTRY if "+q" not in name)


def inspect_network(net: LinenNetwork, techniques: Sequence[str] = BASE_TECHNIQUES) -> str:
    """A table of every layer with params: path, kind, shapes, params, MACs, the channel group,
    the techniques that fit and, for layers that stay as they are, why."""
    from rich.console import Console
    from rich.table import Table

    techs = [make_technique(name) for name in techniques]
    prunable = sum(g.pinned is None for g in net.groups)
    title = f"{net.name}: {len(net.layers)} compressible layers, {net.num_groups} channel groups"
    table = Table(title=f"{title} ({prunable} prunable)")
    for column in ("layer", "kind", "in -> out", "params", "MACs", "group", "techniques / why not"):
        table.add_column(column, overflow="fold")
    by_path = net.by_path
    for found in net.found:
        layer = by_path.get(found.path)
        shapes = f"{'x'.join(map(str, found.in_shape))} -> {'x'.join(map(str, found.out_shape))}"
        if layer is None:
            table.add_row(found.name, found.kind, shapes, f"{found.params:,}", "", "", found.reason)
            continue
        macs = op_counts(layer.op, layer.in_shape)[0]
        fits = [t.name for t in techs if technique_fits(t, layer) is None]
        note = ", ".join(fits)
        if layer.out_reason:
            note += f" (no channel pruning: {layer.out_reason})"
        if layer.out_group >= 0:
            group = f"{layer.out_group} root"
        else:
            group = f"{layer.follows} follows" if layer.follows >= 0 else ""
        kind = f"{found.kind} {layer.op.kernel}x{layer.op.kernel}/{layer.op.stride}" if (
            layer.kind == "conv") else found.kind  # fmt: skip
        table.add_row(found.name, kind, shapes, f"{found.params:,}", f"{macs:,}", group, note)
    out = io.StringIO()
    Console(file=out, width=160, force_terminal=False).print(table)
    return out.getvalue()


def inspect(
    model,
    variables: Mapping,
    example,
    apply_kwargs: Mapping | None = None,
    output_fn: Callable | None = None,
) -> str:
    """What autocomp sees in a linen ``model`` with its ``variables``, run on ``example``
    inputs: every layer with params, the compressible ones with the techniques that fit
    them, the channel groups that structured pruning acts on, and why the others stay."""
    net = LinenNetwork(model, variables, example, apply_kwargs or {}, output_fn)
    return inspect_network(net)
