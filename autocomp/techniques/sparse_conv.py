"""C2: sparse convolution decomposition (Liu et al., "Sparse Convolutional Neural Networks",
CVPR 2015).

The conv kernel W (k x k x C_in x C_out) is rewritten in a channel basis P (C_in x m, from the SVD
of W's (C_in, k*k*C_out) unfolding, m = min(C_in, k*k*C_out)) followed by kernels Q
(k x k x m x C_out) in that basis: W = P Q exactly. Because the basis concentrates the energy of
W in few channels, Q is pruned much further than W for the same error; ``ratio`` is the share of
Q's weights zeroed by magnitude (Liu et al. learn the sparsity; the SVD basis is their
initialization). P is orthonormal, so the error is exactly the pruned mass of Q and never
decreases with the ratio.

Deployed as a 1 x 1 conv C_in -> m (no bias) and a sparse k x k conv m -> C_out. For an H x W
input (H' x W' output): params C_in*m + nnz(Q) + C_out with nnz(Q) the kept share of
k*k*m*C_out; MACs on a dense runtime H*W*C_in*m + H'*W'*k*k*m*C_out (a sparse kernel is what
makes it fast, as for magnitude pruning); intermediate feature map H x W x m.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.models.ops import Op
from autocomp.techniques.base import Materialized, Technique, magnitude_mask, removed


def _fits(layer):
    if layer.kind != "conv" or layer.kernel < 2:
        return "sparse decomposition applies to convolutions with a kernel of 2 or more"
    return None


def _basis(layer) -> int:
    return min(layer.in_shape[-1], layer.kernel * layer.kernel * layer.features)


def _mask(aux, ratio):
    return magnitude_mask(aux["q"], aux["sorted_abs"], ratio)


def make_sparse_conv() -> Technique:
    def prepare(layer, params, ctx):
        k, c, o = layer.kernel, layer.in_shape[-1], layer.features
        unfolded = jnp.transpose(params["kernel"], (2, 0, 1, 3)).reshape(c, k * k * o)
        u, s, vt = jnp.linalg.svd(unfolded, full_matrices=False)
        q = jnp.transpose((s[:, None] * vt).reshape(-1, k, k, o), (1, 2, 0, 3))
        return {"p": u, "q": q, "sorted_abs": jnp.sort(jnp.abs(q).ravel())}

    def simulate(params, aux, ratio):
        q = jnp.where(_mask(aux, ratio), aux["q"], 0.0)
        return {**params, "kernel": jnp.einsum("cm,ijmo->ijco", aux["p"], q)}

    def ops(layer, ratio, in_channels):
        density = 1.0 - float(removed(aux_size(layer), float(ratio))) / aux_size(layer)
        return (
            Op("conv", f"{layer.name}_p", _basis(layer), 1, 1, use_bias=False),
            Op("conv", f"{layer.name}_q", layer.features, layer.kernel, layer.op.stride,
               density=density, padding=layer.op.padding),
        )  # fmt: skip

    def aux_size(layer) -> int:
        return layer.kernel * layer.kernel * _basis(layer) * layer.features

    def materialize(layer, params, aux, ratio, in_rows):
        mask = np.asarray(jax.jit(_mask)(aux, jnp.float32(ratio)))
        first, second = ops(layer, ratio, len(in_rows))
        p = np.asarray(aux["p"])[in_rows][None, None].astype(np.float32)
        q = (np.asarray(aux["q"]) * mask).astype(np.float32)
        new = {
            first.name: {"kernel": p},
            second.name: {"kernel": q, "bias": np.asarray(params["bias"])},
        }
        return Materialized((first, second), new, {second.name: mask}, np.arange(layer.features))

    return Technique(
        name="sparse_conv",
        family="C2",
        fits=_fits,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
