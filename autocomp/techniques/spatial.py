"""C1 (spatial form): spatially separable low-rank convolution, Jaderberg et al. 2014 (scheme 2).

A k x k conv C_in -> C_out becomes a vertical k x 1 conv C_in -> r followed by a horizontal
1 x k conv r -> C_out. With the kernel arranged as the (k*C_in, k*C_out) matrix
M[(i, c), (j, o)] = W[i, j, c, o], the pair computes the rank-r matrix A B, so the best pair in
weight space is M's truncated SVD (Jaderberg et al.'s closed form); r = rank kept at the ratio
of min(k*C_in, k*C_out). The vertical conv carries the vertical stride, the horizontal conv the
horizontal one, which reproduces the SAME-padded k x k conv exactly at full rank.

For an H x W input (H' x W' output): params r*k*(C_in + C_out) + C_out; MACs
H'*W*k*C_in*r + H'*W'*k*r*C_out; intermediate feature map H' x W x r.
(The channel form of C1, k x k to r filters then 1 x 1 to C_out, is the ``svd`` technique.)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from autocomp.models.ops import Op
from autocomp.techniques.base import Materialized, Technique, kept, truncate_spectrum


def _fits(layer):
    if layer.kind != "conv":
        return "spatial separation applies to convolutions"
    if layer.op.kernel_hw[0] != layer.op.kernel_hw[1] or layer.kernel < 2:
        return "needs a square kernel of size 2 or more"
    return None


def _rank(layer, ratio) -> int:
    k = layer.kernel
    return kept(min(k * layer.in_shape[-1], k * layer.features), ratio)


def make_spatial() -> Technique:
    def prepare(layer, params, ctx):
        k, c, o = layer.kernel, layer.in_shape[-1], layer.features
        m = jnp.transpose(params["kernel"], (0, 2, 1, 3)).reshape(k * c, k * o)
        u, s, vt = jnp.linalg.svd(m, full_matrices=False)
        return {"u": u, "s": s, "vt": vt}

    def simulate(params, aux, ratio):
        k, _, c, o = params["kernel"].shape
        s = truncate_spectrum(aux["s"], ratio)
        m = (aux["u"] * s) @ aux["vt"]
        return {**params, "kernel": jnp.transpose(m.reshape(k, c, k, o), (0, 2, 1, 3))}

    def ops(layer, ratio, in_channels):
        r, k, s = _rank(layer, ratio), layer.kernel, layer.op.stride
        pad = layer.op.padding
        v_pad, h_pad = (None, None) if pad is None else ((pad[0], (0, 0)), ((0, 0), pad[1]))
        vertical = Op(
            "conv", f"{layer.name}_v", r, k, s, False, kernel_w=1, stride_w=1, padding=v_pad
        )
        horizontal = Op(
            "conv", f"{layer.name}_h", layer.features, 1, 1, kernel_w=k, stride_w=s, padding=h_pad
        )
        return (vertical, horizontal)

    def materialize(layer, params, aux, ratio, in_rows):
        r, k = _rank(layer, ratio), layer.kernel
        c, o = layer.in_shape[-1], layer.features
        root = np.sqrt(np.asarray(aux["s"][:r]))
        a = (np.asarray(aux["u"][:, :r]) * root).reshape(k, c, r)[:, in_rows, :]
        b = (root[:, None] * np.asarray(aux["vt"][:r])).reshape(r, k, o).transpose(1, 0, 2)
        vertical, horizontal = ops(layer, ratio, len(in_rows))
        new = {
            vertical.name: {"kernel": a[:, None].astype(np.float32)},
            horizontal.name: {
                "kernel": b[None].astype(np.float32),
                "bias": np.asarray(params["bias"]),
            },
        }
        return Materialized((vertical, horizontal), new, {}, np.arange(o))

    return Technique(
        name="spatial",
        family="C1",
        fits=_fits,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
