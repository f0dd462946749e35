"""W2: sparse-coding factorization of dense layers (SparseSep, Bhattacharya & Lane 2016).

The weight matrix W (n_in x n_out) becomes a dictionary D of k basis vectors (n_in x k) and sparse
codes C (k x n_out) with s non-zeros per column: W ~ D C. The dictionary is W's top-k left
singular basis (K-SVD's usual start); with an orthonormal dictionary, orthogonal matching
pursuit selects exactly the s largest coefficients of each column of D^T W, so the codes here
are OMP's solution, computed in closed form on the host. k = kept(min(n_in, n_out), ratio) and
s = kept(k, ratio): both shrink with the ratio, and the error never decreases (nested supports).

Deployed as two dense layers, n_in -> k (no bias) and a sparse k -> n_out. Params (non-zeros)
n_in*k + s*n_out + n_out; storage counts the codes in bitmask-sparse form. MACs on a dense
runtime n_in*k + k*n_out (sparsity buys size, not speed, without a sparse kernel); intermediate
feature size k.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.models.ops import Op
from autocomp.techniques.base import Materialized, Technique, kept


def _fits(layer):
    if layer.kind != "dense":
        return "sparse-coding factorization applies to dense layers"
    if min(layer.fan_in, layer.features) < 2:
        return "a rank-1 kernel cannot be factorized further"
    return None


def _sizes(p, ratio):
    """(atoms k, non-zeros s) under jit; ``kept`` gives the same on the host."""
    r = jnp.asarray(ratio, jnp.float32)
    k = jnp.maximum(p - jnp.floor(r * p + 0.5).astype(jnp.int32), 1)
    s = jnp.maximum(k - jnp.floor(r * k.astype(jnp.float32) + 0.5).astype(jnp.int32), 1)
    return k, s


def _code_mask(codes, ratio):
    p = codes.shape[0]
    k, s = _sizes(p, ratio)
    in_dict = (jnp.arange(p) < k)[:, None]
    mag = jnp.where(in_dict, jnp.abs(codes), -1.0)
    threshold = -jnp.sort(-mag, axis=0)[s - 1]
    return in_dict & (mag >= threshold[None, :])


def make_sparse_code() -> Technique:
    def prepare(layer, params, ctx):
        u, s, vt = jnp.linalg.svd(params["kernel"], full_matrices=False)
        return {"dictionary": u, "codes": s[:, None] * vt}

    def simulate(params, aux, ratio):
        codes = jnp.where(_code_mask(aux["codes"], ratio), aux["codes"], 0.0)
        return {**params, "kernel": aux["dictionary"] @ codes}

    def ops(layer, ratio, in_channels):
        k = kept(min(layer.fan_in, layer.features), ratio)
        s = kept(k, ratio)
        return (
            Op("dense", f"{layer.name}_d", k, use_bias=False),
            Op("dense", f"{layer.name}_c", layer.features, density=s / k),
        )

    def materialize(layer, params, aux, ratio, in_rows):
        k = kept(min(layer.fan_in, layer.features), ratio)
        mask = np.asarray(jax.jit(_code_mask)(aux["codes"], jnp.float32(ratio)))[:k]
        codes = np.asarray(aux["codes"])[:k] * mask
        first, second = ops(layer, ratio, len(in_rows))
        new = {
            first.name: {"kernel": np.asarray(aux["dictionary"])[in_rows, :k].astype(np.float32)},
            second.name: {"kernel": codes.astype(np.float32), "bias": np.asarray(params["bias"])},
        }
        return Materialized((first, second), new, {second.name: mask}, np.arange(layer.features))

    return Technique(
        name="sparse_code",
        family="W2",
        fits=_fits,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
