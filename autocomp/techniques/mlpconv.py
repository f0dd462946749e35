"""L3: mlpconv replacing a conv (Lin et al., "Network in Network", 2014).

A k x k conv C_in -> C_out becomes a k x k conv C_in -> h, a ReLU, and a 1 x 1 conv h -> C_out:
a small multilayer perceptron over each receptive field. h = 2r with r = kept(min(k*k*C_in,
C_out), ratio). Initialization is exact where it can be: the rank-r SVD U_r S_r V_r of the
kernel split into a positive and a negative half, [U_r, -U_r] then [V_r; -V_r], computes
relu(z) - relu(-z) = z, i.e. the truncated SVD (and the original layer at ratio 0). Layer-wise
distillation on training inputs then refits the 1 x 1 conv by least squares to the original
layer's outputs and trains both by Adam, using the nonlinearity (``env.distill``).

For an H x W input (H' x W' output): params k*k*C_in*h + h + h*C_out + C_out; MACs
H'*W'*(k*k*C_in*h + h*C_out); intermediate feature map H' x W' x h.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.models.convs import conv_nhwc
from autocomp.models.ops import Op, apply_op
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
    if layer.kind != "conv":
        return "mlpconv replaces a convolution"
    if min(layer.fan_in, layer.features) < 2:
        return "a rank-1 kernel cannot be factorized further"
    return None


def _full(layer) -> int:
    return min(layer.fan_in, layer.features)


def _rank(layer, ratio) -> int:
    return kept(_full(layer), ratio)


def _apply(layer, pb, x):
    h = jax.nn.relu(
        conv_nhwc(x, pb["kernel1"], layer.op.strides, padding=layer.op.padding) + pb["bias1"]
    )
    return conv_nhwc(h, pb["kernel2"]) + pb["bias"]


def make_mlpconv() -> Technique:
    def prepare(layer, params, ctx):
        k, c, o = layer.kernel, layer.in_shape[-1], layer.features
        p, n = _full(layer), len(ctx.ratios)
        w = np.asarray(params["kernel"], np.float64).reshape(layer.fan_in, o)
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        first = u * np.sqrt(s)
        second = np.sqrt(s)[:, None] * vt
        one = {
            "kernel1": np.concatenate([first, -first], axis=1).reshape(k, k, c, 2 * p),
            "bias1": np.zeros(2 * p),
            "kernel2": np.concatenate([second, -second], axis=0)[None, None],
            "bias": np.asarray(params["bias"]),
        }
        on = np.stack([np.arange(p) < _rank(layer, r) for r in ctx.ratios])
        on = np.concatenate([on, on], axis=1).astype(np.float32)  # both halves
        masks = {
            "kernel1": np.broadcast_to(on[:, None, None, None, :], (n, k, k, c, 2 * p)),
            "bias1": on,
            "kernel2": np.broadcast_to(on[:, None, None, :, None], (n, 1, 1, 2 * p, o)),
            "bias": np.ones((n, o)),
        }
        init = jax.tree.map(lambda a, m: np.asarray(a)[None] * m, one, masks)
        inputs = need_inputs("mlpconv", layer, ctx)
        x = jnp.asarray(refit_sample(inputs, layer))
        y = apply_op(layer.op, {layer.name: params}, x)
        for b, ratio in enumerate(ctx.ratios):
            if _rank(layer, ratio) == p:  # full rank: the initialization is exact
                continue
            kernel1 = jnp.asarray(init["kernel1"][b])
            hidden = jax.nn.relu(conv_nhwc(x, kernel1, layer.op.strides, padding=layer.op.padding))
            init["kernel2"][b], init["bias"][b] = least_squares_conv(hidden, y, 1)
        fitted = distill(
            f"mlpconv/{layer.name}",
            lambda x: apply_op(layer.op, {layer.name: params}, x),
            lambda pb, x: _apply(layer, pb, x),
            init,
            masks,
            inputs,
            ctx.distill,
            ctx.seed,
            ctx.cache_dir,
            exact=[_rank(layer, r) == p for r in ctx.ratios],
        )
        return {"bins": np.asarray(ctx.ratios, np.float32), **fitted}

    def forward(layer, params, aux, ratio, x, in_keep):
        return _apply(layer, bin_params(aux, bin_index(aux["bins"], ratio)), x)

    def ops(layer, ratio, in_channels):
        h = 2 * _rank(layer, ratio)
        return (
            replace(layer.op, name=f"{layer.name}_mlp1", features=h),
            Op("relu"),
            Op("conv", f"{layer.name}_mlp2", layer.features, 1, 1),
        )

    def materialize(layer, params, aux, ratio, in_rows):
        r, p = _rank(layer, ratio), _full(layer)
        b = distilled_bin(layer, "mlpconv", aux, ratio)
        a = jax.tree.map(lambda v: np.asarray(v, np.float32), bin_params(aux, b))
        hidden = np.concatenate([np.arange(r), p + np.arange(r)])
        deployed = ops(layer, ratio, len(in_rows))
        first, _, second = deployed
        new = {
            first.name: {"kernel": a["kernel1"][:, :, in_rows][..., hidden],
                         "bias": a["bias1"][hidden]},
            second.name: {"kernel": a["kernel2"][:, :, hidden], "bias": a["bias"]},
        }  # fmt: skip
        return Materialized(deployed, new, {}, np.arange(layer.features))

    return Technique(
        name="mlpconv",
        family="L3",
        fits=_fits,
        prepare=prepare,
        simulate=None,
        forward=forward,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
