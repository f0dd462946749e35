"""W3: magnitude (unstructured) weight pruning, Han et al. 2015 (Deep Compression).

Zeroes the ``ratio`` share of the layer's weights with the smallest magnitude. Parameters count
the non-zeros, storage a bitmask plus the non-zero values. A dense mobile runtime (TFLite's
CONV_2D/FULLY_CONNECTED) still runs every multiply, so the deployed op, MACs and latency are the
dense layer's: sparsity buys size, not speed, unless a sparse kernel is used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.techniques.base import (
    Materialized,
    Technique,
    fits_weighted,
    magnitude_mask,
    same_layer_ops,
    slice_rows,
)


def make_magnitude() -> Technique:
    def prepare(layer, params, ctx):
        # Sorted magnitudes: the threshold for any ratio is one lookup under jit.
        return {"sorted_abs": jnp.sort(jnp.abs(jnp.ravel(params["kernel"])))}

    def mask(kernel, aux, ratio):
        return magnitude_mask(kernel, aux["sorted_abs"], ratio)

    def simulate(params, aux, ratio):
        kernel = params["kernel"]
        return {**params, "kernel": jnp.where(mask(kernel, aux, ratio), kernel, 0.0)}

    def materialize(layer, params, aux, ratio, in_rows):
        ratio = jnp.float32(ratio)
        full_mask = np.asarray(jax.jit(mask)(params["kernel"], aux, ratio))
        keep_mask = slice_rows(layer, full_mask, in_rows)
        kernel = slice_rows(layer, np.asarray(params["kernel"]), in_rows) * keep_mask
        density = float(keep_mask.mean())
        new = {"kernel": kernel.astype(np.float32), "bias": np.asarray(params["bias"])}
        ops = same_layer_ops(layer, len(in_rows), layer.features, density)
        return Materialized(
            ops, {layer.name: new}, {layer.name: keep_mask}, np.arange(layer.features)
        )

    def ops(layer, ratio, in_channels):
        return same_layer_ops(layer, in_channels, layer.features, 1.0 - float(ratio))

    return Technique(
        name="magnitude",
        family="W3",
        quantizable=True,
        fits=fits_weighted,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
