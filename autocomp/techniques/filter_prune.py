"""DeepIoT-style structured pruning of hidden elements (conv filters, dense neurons).

Removes the ``ratio`` share of the layer's output channels with the smallest L1 norm, and with
them the matching input rows of the next layer. DeepIoT learns keep probabilities per element;
here the environment's agent picks the share and the L1 ranking picks which (as AMC does), so a
plan stays a small discrete action. The result is a smaller *dense* layer: real speed-ups on any
runtime. Not applicable to the classifier, whose outputs are the classes.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from autocomp.techniques.base import (
    Materialized,
    Technique,
    fits_weighted,
    kept,
    removed,
    same_layer_ops,
    slice_rows,
)


def _fits(layer):
    if layer.is_classifier:
        return "the classifier's outputs are the classes and cannot be pruned"
    if layer.coupled_out:
        return (
            "its output channels feed a residual shortcut or a depthwise conv, which would "
            "have to lose the same channels"
        )
    return fits_weighted(layer)


def make_filter() -> Technique:
    def prepare(layer, params, ctx):
        kernel = params["kernel"].reshape(-1, layer.features)
        norms = jnp.abs(kernel).sum(axis=0)
        order = jnp.argsort(-norms, stable=True)  # most important first
        return {"rank": jnp.argsort(order, stable=True).astype(jnp.int32)}

    def keep_mask(aux, ratio):
        n = aux["rank"].shape[0]
        n_keep = jnp.maximum(n - removed(n, ratio), 1)
        return aux["rank"] < n_keep

    def simulate(params, aux, ratio):
        m = keep_mask(aux, ratio)
        return {"kernel": params["kernel"] * m, "bias": params["bias"] * m}

    def materialize(layer, params, aux, ratio, in_rows):
        n_keep = kept(layer.features, ratio)
        out_keep = np.sort(np.flatnonzero(np.asarray(aux["rank"]) < n_keep))
        kernel = slice_rows(layer, np.asarray(params["kernel"]), in_rows)[..., out_keep]
        new = {"kernel": kernel, "bias": np.asarray(params["bias"])[out_keep]}
        ops = same_layer_ops(layer, len(in_rows), n_keep)
        return Materialized(ops, {layer.name: new}, {}, out_keep)

    def out_channels(layer, ratio):
        return kept(layer.features, ratio)

    def ops(layer, ratio, in_channels):
        return same_layer_ops(layer, in_channels, out_channels(layer, ratio))

    return Technique(
        name="filter",
        family="DeepIoT",
        quantizable=True,
        fits=_fits,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=out_channels,
        out_mask=keep_mask,
    )
