"""C3: depthwise-separable replacement of a conv (MobileNet, Howard et al. 2017).

A k x k conv C_in -> C_out becomes a depthwise k x k conv with depth multiplier m (m filters per
input channel) and a 1 x 1 conv C_in*m -> C_out. m = kept(min(k*k, C_out), ratio), so the highest
ratios give MobileNet's m = 1 and ratio 0 the full-rank (exact) form. Initialization is the
closed-form best pair in weight space (for each input channel, the rank-m SVD of its k*k x C_out
slice of the kernel); then layer-wise distillation on training inputs refines every ratio bin:
the pointwise conv is refitted by least squares to the original layer's outputs (its exact
optimum given the depthwise filters), then all of it by Adam (``env.distill``). Within the
search the pair is its equivalent k x k kernel.

For an H x W input (H' x W' output): params k*k*C_in*m + C_in*m*C_out + C_out; MACs
H'*W'*(k*k*C_in*m + C_in*m*C_out); intermediate feature map H' x W' x C_in*m.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from autocomp.models.convs import conv_nhwc
from autocomp.models.ops import Op, apply_op
from autocomp.techniques.base import (
    Materialized,
    Technique,
    bin_index,
    distilled_bin,
    kept,
    need_inputs,
)
from autocomp.training.distill import distill, least_squares_conv, refit_sample


def _fits(layer):
    if layer.kind != "conv" or layer.kernel < 2:
        return "a depthwise-separable pair replaces a convolution with a kernel of 2 or more"
    return None


def _full(layer) -> int:
    return min(layer.kernel * layer.kernel, layer.features)


def _multiplier(layer, ratio) -> int:
    return kept(_full(layer), ratio)


def _kernel(d, p):
    return jnp.einsum("ijcm,cmo->ijco", d, p)


def make_dwsep() -> Technique:
    def prepare(layer, params, ctx):
        k, c, o = layer.kernel, layer.in_shape[-1], layer.features
        q = _full(layer)
        w = np.asarray(params["kernel"], np.float64).transpose(2, 0, 1, 3).reshape(c, k * k, o)
        u, s, vt = np.linalg.svd(w, full_matrices=False)  # per input channel
        root = np.sqrt(s)[:, None, :]
        d = (u * root).reshape(c, k, k, q).transpose(1, 2, 0, 3)  # [k, k, c, q]
        p = vt * np.sqrt(s)[:, :, None]  # [c, q, o]
        ratios = np.asarray(ctx.ratios, np.float32)
        n = len(ratios)
        on = np.stack([np.arange(q) < _multiplier(layer, r) for r in ratios]).astype(np.float32)
        init = {
            "d": np.broadcast_to(d, (n, *d.shape)) * on[:, None, None, None, :],
            "p": np.broadcast_to(p, (n, *p.shape)) * on[:, None, :, None],
            "bias": np.broadcast_to(np.asarray(params["bias"], np.float64), (n, o)).copy(),
        }
        masks = {
            "d": np.broadcast_to(on[:, None, None, None, :], init["d"].shape),
            "p": np.broadcast_to(on[:, None, :, None], init["p"].shape),
            "bias": np.ones((n, o)),
        }
        strides = layer.op.strides
        inputs = need_inputs("dwsep", layer, ctx)
        x = jnp.asarray(refit_sample(inputs, layer))
        y = apply_op(layer.op, {layer.name: params}, x)
        for b, ratio in enumerate(ratios):
            m = _multiplier(layer, ratio)
            if m == q:  # full rank: the closed form is exact
                continue
            dw = jnp.asarray(init["d"][b, :, :, :, :m].reshape(k, k, 1, c * m))
            hidden = conv_nhwc(x, dw, strides, groups=c, padding=layer.op.padding)
            pw, bias = least_squares_conv(hidden, y, 1)
            init["p"][b] = 0.0
            init["p"][b, :, :m] = pw.reshape(c, m, o)
            init["bias"][b] = bias
        fitted = distill(
            f"dwsep/{layer.name}",
            lambda x: apply_op(layer.op, {layer.name: params}, x),
            lambda pb, x: (
                conv_nhwc(x, _kernel(pb["d"], pb["p"]), strides, padding=layer.op.padding)
                + pb["bias"]
            ),
            init,
            masks,
            inputs,
            ctx.distill,
            ctx.seed,
            ctx.cache_dir,
            exact=[_multiplier(layer, r) == q for r in ctx.ratios],
        )
        return {"bins": ratios, **fitted}

    def simulate(params, aux, ratio):
        b = bin_index(aux["bins"], ratio)
        return {"kernel": _kernel(aux["d"][b], aux["p"][b]), "bias": aux["bias"][b]}

    def ops(layer, ratio, in_channels):
        m = _multiplier(layer, ratio)
        return (
            Op("dwconv", f"{layer.name}_dw", in_channels * m, layer.kernel, layer.op.stride,
               use_bias=False, padding=layer.op.padding),
            Op("conv", f"{layer.name}_pw", layer.features, 1, 1),
        )  # fmt: skip

    def materialize(layer, params, aux, ratio, in_rows):
        m = _multiplier(layer, ratio)
        b = distilled_bin(layer, "dwsep", aux, ratio)
        d = np.asarray(aux["d"][b])[:, :, in_rows, :m]  # [k, k, c, m]
        p = np.asarray(aux["p"][b])[in_rows, :m]  # [c, m, o]
        k, c = layer.kernel, len(in_rows)
        dw, pw = ops(layer, ratio, c)
        new = {
            dw.name: {"kernel": d.reshape(k, k, 1, c * m).astype(np.float32)},
            pw.name: {
                "kernel": p.reshape(1, 1, c * m, layer.features).astype(np.float32),
                "bias": np.asarray(aux["bias"][b], np.float32),
            },
        }
        return Materialized((dw, pw), new, {}, np.arange(layer.features))

    return Technique(
        name="dwsep",
        family="C3",
        fits=_fits,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
