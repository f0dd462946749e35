"""L1: SqueezeNet fire module replacing a conv (Iandola et al. 2016).

A k x k conv C_in -> C_out (k >= 3) becomes a 1 x 1 "squeeze" conv C_in -> s with a ReLU, then an
"expand" layer: a 1 x 1 conv s -> e1 and a 3 x 3 conv s -> e3 side by side, concatenated
(e1 = C_out // 2, e3 = C_out - e1, as in SqueezeNet). The squeeze width is
s = kept(C_out, ratio) (SqueezeNet's squeeze ratio s / C_out = 1 - ratio); the squeeze conv
carries the stride. No closed form exists, so every ratio bin is distilled layer-wise from the
original layer on training inputs: the squeeze starts as the inputs' principal directions, the
expand convs are fitted to the original layer's outputs by least squares (their exact optimum
given the squeeze), then all of it trains by Adam (``env.distill``).

For an H x W input (H' x W' output): params C_in*s + s + s*e1 + 9*s*e3 + C_out; MACs
H'*W'*(C_in*s + s*e1 + 9*s*e3); intermediate feature map H' x W' x s.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.models.convs import conv_nhwc
from autocomp.models.ops import Op, apply_op, out_shape
from autocomp.techniques.base import (
    Materialized,
    Technique,
    bin_index,
    bin_params,
    distilled_bin,
    kept,
    need_inputs,
)
from autocomp.training.distill import distill, least_squares_conv, refit_sample


def _fits(layer):
    if layer.kind != "conv" or layer.kernel < 3:
        return "a fire module replaces a convolution with a kernel of 3 or more"
    if layer.features < 2:
        return "a fire module needs at least two output channels"
    same = replace(layer.op, padding=None)
    if out_shape(layer.op, layer.in_shape) != out_shape(same, layer.in_shape):
        return "its explicit padding gives another output size than the fire module's SAME"
    return None


def _squeeze(layer, ratio) -> int:
    return kept(layer.features, ratio)


def _apply(layer, pb, x):
    h = jax.nn.relu(conv_nhwc(x, pb["squeeze"], layer.op.strides) + pb["squeeze_bias"])
    y = jnp.concatenate([conv_nhwc(h, pb["kernel1"]), conv_nhwc(h, pb["kernel3"])], axis=-1)
    return y + pb["bias"]


def _init(layer, params, inputs, s, seed) -> dict:
    """A start close to the original layer: the squeeze keeps the top s // 2 principal
    directions of the input channels in a positive and a negative half (relu(z) - relu(-z) = z),
    the 3 x 3 expand is the original kernel's centre 3 x 3 in that basis, the 1 x 1 expand its
    centre tap; channels beyond get a small random start."""
    c, o = layer.in_shape[-1], layer.features
    e1, k = o // 2, layer.kernel
    rng = np.random.default_rng(seed)
    small = lambda *shape: rng.normal(0, 0.01, shape)  # noqa: E731
    out = {
        "squeeze": small(1, 1, c, o),
        "squeeze_bias": np.zeros(o),
        "kernel1": small(1, 1, o, e1),
        "kernel3": small(3, 3, o, o - e1),
        "bias": np.asarray(params["bias"], np.float64),
    }
    q = min(s // 2, c)
    if q == 0:
        return out
    flat = np.asarray(inputs, np.float64).reshape(-1, c)
    _, vecs = np.linalg.eigh(flat.T @ flat)
    basis = vecs[:, ::-1][:, :q]  # [c, q]
    out["squeeze"][0, 0, :, :q] = basis
    out["squeeze"][0, 0, :, q : 2 * q] = -basis
    w = np.asarray(params["kernel"], np.float64)
    lo = (k - 3) // 2
    centre3 = w[lo : lo + 3, lo : lo + 3]
    w3 = np.einsum("ijco,cm->ijmo", centre3[..., e1:], basis)
    w1 = np.einsum("co,cm->mo", w[k // 2, k // 2, :, :e1], basis)
    out["kernel3"][:, :, :q] = w3
    out["kernel3"][:, :, q : 2 * q] = -w3
    out["kernel1"][0, 0, :q] = w1
    out["kernel1"][0, 0, q : 2 * q] = -w1
    return out


def make_fire() -> Technique:
    def prepare(layer, params, ctx):
        inputs = need_inputs("fire", layer, ctx)
        n = len(ctx.ratios)
        per_bin = [_init(layer, params, inputs, _squeeze(layer, r), ctx.seed) for r in ctx.ratios]
        init = {k: np.stack([one[k] for one in per_bin]) for k in per_bin[0]}
        on = np.stack([np.arange(layer.features) < _squeeze(layer, r) for r in ctx.ratios])
        on = on.astype(np.float32)
        masks = {
            "squeeze": np.broadcast_to(on[:, None, None, None, :], init["squeeze"].shape),
            "squeeze_bias": on,
            "kernel1": np.broadcast_to(on[:, None, None, :, None], init["kernel1"].shape),
            "kernel3": np.broadcast_to(on[:, None, None, :, None], init["kernel3"].shape),
            "bias": np.ones((n, layer.features)),
        }
        init = jax.tree.map(np.multiply, init, masks)
        x = jnp.asarray(refit_sample(inputs, layer))
        y = apply_op(layer.op, {layer.name: params}, x)
        e1 = layer.features // 2
        for b in range(n):
            squeeze = jnp.asarray(init["squeeze"][b])
            hidden = jax.nn.relu(conv_nhwc(x, squeeze, layer.op.strides))
            init["kernel1"][b], bias1 = least_squares_conv(hidden, y[..., :e1], 1)
            init["kernel3"][b], bias3 = least_squares_conv(hidden, y[..., e1:], 3)
            init["bias"][b] = np.concatenate([bias1, bias3])
        fitted = distill(
            f"fire/{layer.name}",
            lambda x: apply_op(layer.op, {layer.name: params}, x),
            lambda pb, x: _apply(layer, pb, x),
            init,
            masks,
            need_inputs("fire", layer, ctx),
            ctx.distill,
            ctx.seed,
            ctx.cache_dir,
        )
        return {"bins": np.asarray(ctx.ratios, np.float32), **fitted}

    def forward(layer, params, aux, ratio, x, in_keep):
        return _apply(layer, bin_params(aux, bin_index(aux["bins"], ratio)), x)

    def ops(layer, ratio, in_channels):
        s = _squeeze(layer, ratio)
        return (
            Op("conv", f"{layer.name}_squeeze", s, 1, layer.op.stride),
            Op("relu"),
            Op("expand", f"{layer.name}_expand", layer.features, 3, 1),
        )

    def materialize(layer, params, aux, ratio, in_rows):
        s = _squeeze(layer, ratio)
        b = distilled_bin(layer, "fire", aux, ratio)
        a = jax.tree.map(lambda v: np.asarray(v, np.float32), bin_params(aux, b))
        deployed = ops(layer, ratio, len(in_rows))
        squeeze, _, expand = deployed
        new = {
            squeeze.name: {
                "kernel": a["squeeze"][:, :, in_rows, :s],
                "bias": a["squeeze_bias"][:s],
            },
            expand.name: {
                "kernel1": a["kernel1"][:, :, :s],
                "kernel3": a["kernel3"][:, :, :s],
                "bias": a["bias"],
            },
        }
        return Materialized(deployed, new, {}, np.arange(layer.features))

    return Technique(
        name="fire",
        family="L1",
        fits=_fits,
        prepare=prepare,
        simulate=None,
        forward=forward,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
