"""L2: global average pooling instead of a dense head (Lin et al., "Network in Network", 2014).

A dense layer over a flattened H x W x C map (H*W*C*n_out weights) becomes a global average pool
followed by a dense C -> n_out. The pooled layer cannot reproduce the original in general, so it
is distilled layer-wise: its weights are the least-squares fit (``distill.ridge_fit``: ridge
1e-4 of the mean square of the inputs) of the original layer's outputs from the pooled inputs on
training images, which for a linear layer is the exact optimum of the distillation loss. Within
the search it is the same dense layer with the fitted weights spread evenly over the positions,
which computes the same function. Ratio-free: the replacement is fixed.

Params C*n_out + n_out; MACs C*n_out (plus H*W*C additions in the pool); intermediate feature
size C.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from autocomp.models.ops import Op
from autocomp.techniques.base import Materialized, Technique, need_inputs
from autocomp.training.distill import ridge_fit


def _fits(layer):
    if layer.kind != "dense" or layer.pre_flatten is None or len(layer.pre_flatten) != 3:
        return "global average pooling replaces a dense layer over a flattened feature map"
    if layer.in_positions < 2:
        return "the flattened map has one position: pooling would change nothing"
    return None


def make_gap() -> Technique:
    def prepare(layer, params, ctx):
        x = need_inputs("gap", layer, ctx).astype(np.float64)
        y = x @ np.asarray(params["kernel"], np.float64) + np.asarray(params["bias"])
        pooled = x.reshape(len(x), layer.in_positions, layer.in_channels).mean(axis=1)
        kernel, bias = ridge_fit(pooled, y)
        return {"kernel": kernel, "bias": bias}

    def simulate(params, aux, ratio):
        positions = params["kernel"].shape[0] // aux["kernel"].shape[0]
        kernel = jnp.tile(aux["kernel"] / positions, (positions, 1))
        return {"kernel": kernel, "bias": aux["bias"]}

    def ops(layer, ratio, in_channels):
        return (Op("gap", features=in_channels), Op("dense", layer.name, layer.features))

    def materialize(layer, params, aux, ratio, in_rows):
        channels = np.asarray(in_rows)[: len(in_rows) // layer.in_positions]
        new = {
            "kernel": np.asarray(aux["kernel"])[channels],
            "bias": np.asarray(aux["bias"]),
        }
        return Materialized(ops(layer, ratio, len(channels)), {layer.name: new}, {},
                            np.arange(layer.features))  # fmt: skip

    return Technique(
        name="gap",
        family="L2",
        fits=_fits,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
        ratio_free=True,
        pooled_input=True,
    )
