"""W1/C1: truncated-SVD low-rank factorization (Denton et al. 2014; Jaderberg et al. 2014).

The kernel viewed as a (fan_in, out) matrix W (for a conv, the (k*k*C_in, C_out) reshape) is
replaced by its best rank-r approximation U_r S_r V_r^T, r = rank kept at the ratio. Deployed as
two layers: dense fan_in->r then r->out, or conv k x k C_in->r then conv 1x1 r->out. Parameters
r*(fan_in + out) (+ bias); it only saves when r < fan_in*out/(fan_in+out).
"""

from __future__ import annotations

from dataclasses import replace

import jax.numpy as jnp
import numpy as np

from autocomp.models.ops import Op
from autocomp.techniques.base import (
    Materialized,
    Technique,
    fits_weighted,
    kept,
    truncate_spectrum,
)


def _fits(layer):
    if min(layer.fan_in, layer.features) < 2:
        return "a rank-1 kernel cannot be factorized further"
    return fits_weighted(layer)


def _rank(layer, ratio) -> int:
    return kept(min(layer.fan_in, layer.features), ratio)


def make_svd() -> Technique:
    def prepare(layer, params, ctx):
        u, s, vt = jnp.linalg.svd(params["kernel"].reshape(layer.fan_in, -1), full_matrices=False)
        return {"u": u, "s": s, "vt": vt}

    def simulate(params, aux, ratio):
        s = truncate_spectrum(aux["s"], ratio)
        kernel = ((aux["u"] * s) @ aux["vt"]).reshape(params["kernel"].shape)
        return {**params, "kernel": kernel}

    def ops(layer, ratio, in_channels):
        r = _rank(layer, ratio)
        first = replace(layer.op, name=f"{layer.name}_u", features=r, use_bias=False)
        if layer.kind == "conv":
            second = Op("conv", f"{layer.name}_v", layer.features, 1, 1)
        else:
            second = Op("dense", f"{layer.name}_v", layer.features)
        return (first, second)

    def materialize(layer, params, aux, ratio, in_rows):
        r = _rank(layer, ratio)
        root = np.sqrt(np.asarray(aux["s"][:r]))
        u = (np.asarray(aux["u"][:, :r]) * root).astype(np.float32)
        v = (root[:, None] * np.asarray(aux["vt"][:r])).astype(np.float32)
        if layer.kind == "conv":
            k, c_in = layer.kernel, layer.in_shape[-1]
            u_kernel = u.reshape(k, k, c_in, r)[:, :, in_rows, :]
            v_kernel = v.reshape(1, 1, r, layer.features)
        else:
            u_kernel, v_kernel = u[in_rows], v
        first, second = ops(layer, ratio, len(in_rows))
        new = {
            first.name: {"kernel": u_kernel},
            second.name: {"kernel": v_kernel, "bias": np.asarray(params["bias"])},
        }
        return Materialized((first, second), new, {}, np.arange(layer.features))

    return Technique(
        name="svd",
        family="W1/C1",
        fits=_fits,
        prepare=prepare,
        simulate=simulate,
        materialize=materialize,
        ops=ops,
        out_channels=lambda layer, ratio: layer.features,
    )
