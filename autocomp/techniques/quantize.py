"""k-bit weight quantization, composed with a technique whose deployed form is the layer's own
op (a ``quantizable`` one: ``keep``, ``magnitude``, ``filter``): ``<technique>+q<bits>``, e.g.
``magnitude+q8``.

Weights are quantized symmetrically per output channel (:func:`autocomp.models.ops.fake_quant`,
TFLite's per-channel int8 scheme) after the inner technique has pruned them, so the action's
ratio is the inner technique's. Simulation and the materialized model run the same fake-quant
(the materialized op carries ``bits``, so fine-tuning it is quantization-aware training with a
straight-through gradient); the export converts the quantized values.

Params and MACs are the inner technique's; storage is ``bits`` per non-zero weight plus one
float32 scale per output channel (``autocomp.devices.opkeys.op_counts``); no intermediate feature
map.
The device table prices an 8-bit conv or dense op as ``model_mixed.tflite`` runs it: its float
key's int8 latency and the QUANTIZE/DEQUANTIZE around it (:func:`autocomp.devices.costs.price_op`);
other bit widths as the float op.
"""

from __future__ import annotations

import dataclasses
import re

import jax.numpy as jnp

from autocomp.models.ops import apply_op, fake_quant
from autocomp.techniques.base import Materialized, Technique, TechniqueError

BITS = range(2, 17)
_NAME = re.compile(r"^(?P<base>[a-z_]+)\+q(?P<bits>\d+)$")


def parse_name(name: str) -> tuple[str, int] | None:
    """``(base technique, bits)`` of a composed name such as ``magnitude+q8``, else ``None``.

    Which techniques compose (``Technique.quantizable``) is checked where the name is built.

    Raises:
        TechniqueError: for a composed name with a bit width that cannot compose.
    """
    match = _NAME.match(name)
    if match is None:
        return None
    base, bits = match["base"], int(match["bits"])
    if bits not in BITS:
        raise TechniqueError(
            f"technique {name!r}: {bits}-bit weights are out of range; use 2 to 16 bits"
        )
    return base, bits


def make_quantized(base: Technique, bits: int) -> Technique:
    """``base`` followed by ``bits``-bit per-channel weight quantization."""

    def forward(layer, params, aux, ratio, x, in_keep):
        p = base.simulate(params, aux, ratio)
        # Channels the previous layer removed are not in the deployed kernel, so they must not
        # set its per-channel scale either.
        rows = jnp.tile(in_keep, layer.in_positions)
        row_mask = rows[None, None, :, None] if layer.kind == "conv" else rows[:, None]
        kernel = fake_quant(p["kernel"] * row_mask, bits)
        return apply_op(layer.op, {layer.name: {**p, "kernel": kernel}}, x)

    def quantized_ops(ops):
        return tuple(dataclasses.replace(op, bits=bits) for op in ops)

    def materialize(layer, params, aux, ratio, in_rows):
        m = base.materialize(layer, params, aux, ratio, in_rows)
        return Materialized(quantized_ops(m.ops), m.params, m.masks, m.out_keep)

    def ops(layer, ratio, in_channels):
        return quantized_ops(base.ops(layer, ratio, in_channels))

    return Technique(
        name=f"{base.name}+q{bits}",
        fits=base.fits,
        prepare=base.prepare,
        simulate=None,
        forward=forward,
        materialize=materialize,
        ops=ops,
        out_channels=base.out_channels,
        out_mask=base.out_mask,
        # identity+q<bits> has nothing to remove: one action, like the other ratio-free ones.
        ratio_free=base.ratio_free or base.identity,
        family="+".join(f for f in (base.family, "Q") if f),
        pooled_input=base.pooled_input,
    )
