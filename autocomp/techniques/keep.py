"""Keep: the layer stays as it is (every layer can choose it)."""

from __future__ import annotations

import numpy as np

from autocomp.techniques.base import (
    Materialized,
    Technique,
    fits_weighted,
    same_layer_ops,
    slice_rows,
)


def make_keep() -> Technique:
    def prepare(layer, params, ctx):
        return {}

    def simulate(params, aux, ratio):
        return params

    def materialize(layer, params, aux, ratio, in_rows):
        kernel = slice_rows(layer, np.asarray(params["kernel"]), in_rows)
        new = {"kernel": kernel, "bias": np.asarray(params["bias"])}
        ops = same_layer_ops(layer, len(in_rows), layer.features)
        return Materialized(ops, {layer.name: new}, {}, np.arange(layer.features))

    def ops(layer, ratio, in_channels):
        return same_layer_ops(layer, in_channels, layer.features)

    return Technique(
        name="keep",
        identity=True,
        quantizable=True,
        fits=fits_weighted,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
