"""C4: sparse channel connections (Changpinyo et al., "The Power of Sparsity in Convolutional
Neural Networks", 2017), deployed as a grouped convolution so that the removed connections
really cost nothing.

Input and output channels are split into g contiguous groups and each output channel only sees
the input channels of its group (a block-diagonal kernel); the kept weights are the original
ones inside the blocks (the closest block-diagonal kernel in weight space). g is the largest
power of two with 1 - 1/g <= ratio that divides both the kept input channels and C_out, so the
removed share of connections is 1 - 1/g and a layer whose widths have no common power-of-two
factor stays dense (g = 1). Groups count the input channels the previous layer kept.

For an H x W input (H' x W' output): params k*k*(C_in/g)*C_out + C_out; MACs
H'*W'*k*k*(C_in/g)*C_out; no intermediate feature map.
"""

from __future__ import annotations

import math
from dataclasses import replace

import jax.numpy as jnp
import numpy as np

from autocomp.models.convs import conv_nhwc
from autocomp.techniques.base import Materialized, Technique, slice_rows

MAX_GROUPS = 64


def _fits(layer):
    if layer.kind != "conv":
        return "grouped connections apply to convolutions"
    if math.gcd(layer.in_shape[-1], layer.features) < 2:
        return "input and output channels share no factor of 2, so no grouping exists"
    return None


def groups(ratio: float, in_channels: int, out_channels: int) -> int:
    g = 1
    while (
        2 * g <= MAX_GROUPS
        and 1.0 - 1.0 / (2 * g) <= float(ratio) + 1e-6
        and in_channels % (2 * g) == 0
        and out_channels % (2 * g) == 0
    ):
        g *= 2
    return g


def _groups_traced(ratio, n_in, n_out):
    cands = jnp.array([2**i for i in range(int(math.log2(MAX_GROUPS)) + 1)])
    ok = (1.0 - 1.0 / cands <= ratio + 1e-6) & (n_in % cands == 0) & (n_out % cands == 0)
    # Powers of two: every smaller candidate of a valid one is valid too.
    return jnp.max(jnp.where(jnp.cumprod(ok) > 0, cands, 1))


def block_mask(in_keep, n_out, ratio):
    """bool[C_in, C_out]: connections kept, given the input channels that exist."""
    rank = jnp.cumsum(in_keep) - 1
    n_in = jnp.sum(in_keep)
    g = _groups_traced(ratio, n_in, n_out)
    group_in = rank * g // jnp.maximum(n_in, 1)
    group_out = jnp.arange(n_out) * g // n_out
    return in_keep[:, None] & (group_in[:, None] == group_out[None, :])


def make_group() -> Technique:
    def prepare(layer, params, ctx):
        return {}

    def forward(layer, params, aux, ratio, x, in_keep):
        mask = block_mask(in_keep, layer.features, ratio)
        kernel = params["kernel"] * mask[None, None]
        return conv_nhwc(x, kernel, layer.op.strides, padding=layer.op.padding) + params["bias"]

    def ops(layer, ratio, in_channels):
        g = groups(ratio, in_channels, layer.features)
        op = layer.op
        return (replace(op, groups=g),)

    def materialize(layer, params, aux, ratio, in_rows):
        n, o = len(in_rows), layer.features
        g = groups(ratio, n, o)
        kernel = slice_rows(layer, np.asarray(params["kernel"]), in_rows)
        per_in, per_out = n // g, o // g
        grouped = np.concatenate(
            [
                kernel[:, :, b * per_in : (b + 1) * per_in, b * per_out : (b + 1) * per_out]
                for b in range(g)
            ],
            axis=-1,
        )
        new = {"kernel": grouped, "bias": np.asarray(params["bias"])}
        return Materialized(ops(layer, ratio, n), {layer.name: new}, {}, np.arange(o))

    return Technique(
        name="group",
        family="C4",
        fits=_fits,
        prepare=prepare,
        simulate=None,
        forward=forward,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
