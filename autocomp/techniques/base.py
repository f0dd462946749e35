"""The technique interface: a technique is a value (a named tuple of pure functions), like an optax
transformation. Adding a technique is adding one module that returns one of these.

A *ratio* is the fraction of the layer's capacity removed, in [0, 1): 0 is the identity.

- ``fits(layer)``: ``None`` if the technique applies to the layer, else the reason it does not.
- ``prepare(layer, params)``: host-side precomputation on the trained weights (an SVD, a ranking),
  returned as a pytree of arrays with shapes fixed by the layer; it travels in the env params.
- ``simulate(params, aux, ratio)``: inside jit, the layer's params with the *same shapes* but the
  compression applied (masks, masked singular values). ``ratio`` may be traced.
- ``materialize(layer, params, aux, ratio, in_rows)``: on the host, the real smaller ops and their
  params for this layer, given the input rows that survive the previous layer's pruning. Returns a
  :class:`Materialized`.
- ``ops(layer, ratio, in_channels)``: the deployed ops of the layer for a ratio and a number of
  input channels kept, without weights: what the cost table is keyed by.
- ``out_channels(layer, ratio)``: how many output channels survive (structured pruning only
  shrinks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.layers import LayerInfo
from autocomp.models import Op

Params = dict[str, Any]


class Materialized(NamedTuple):
    """A layer made really smaller.

    Attributes:
        ops: the weighted ops replacing the layer (one, or two for a factorization).
        params: op name -> {"kernel", "bias"} numpy arrays.
        masks: op name -> kernel mask that fine-tuning must keep (unstructured sparsity).
        out_keep: indices of the base layer's output channels that survive.
    """

    ops: tuple[Op, ...]
    params: dict[str, Params]
    masks: dict[str, np.ndarray]
    out_keep: np.ndarray


class Technique(NamedTuple):
    name: str
    fits: Callable[[LayerInfo], str | None]
    prepare: Callable[[LayerInfo, Params], Params]
    simulate: Callable[[Params, Params, Any], Params]
    materialize: Callable[[LayerInfo, Params, Params, float, np.ndarray], Materialized]
    ops: Callable[[LayerInfo, float, int], tuple[Op, ...]]
    out_channels: Callable[[LayerInfo, float], int]


class TechniqueError(ValueError):
    """A technique used where it does not apply; the message names layer and technique."""


def removed(n, ratio):
    """How many of ``n`` units a ratio removes, identically in numpy and under jit.

    Rounds half up on float32 so host materialization and traced simulation agree exactly.
    """
    xp = jnp if isinstance(ratio, jax.Array) else np
    r = xp.asarray(ratio, dtype=xp.float32)
    return xp.floor(r * xp.float32(n) + xp.float32(0.5)).astype(xp.int32)


def kept(n: int, ratio) -> int:
    """Units of ``n`` kept at ``ratio`` (at least one), as a host int."""
    return max(1, int(n) - int(removed(n, float(ratio))))


def slice_rows(layer: LayerInfo, kernel: np.ndarray, in_rows: np.ndarray) -> np.ndarray:
    """Keep only the surviving input rows (dense) or input channels (conv) of a kernel."""
    if layer.kind == "conv":
        return kernel[:, :, in_rows, :]
    return kernel[in_rows, :]


def fits_weighted(layer: LayerInfo) -> str | None:
    return None if layer.kind in ("conv", "dense") else f"{layer.kind} has no weights"


def check_ratio(technique: str, layer: LayerInfo, ratio: float) -> None:
    """Raise a :class:`TechniqueError` for a ratio outside [0, 1)."""
    if not 0.0 <= float(ratio) < 1.0:
        raise TechniqueError(
            f"technique {technique!r} on layer {layer.name!r}: ratio {ratio} is out of range "
            "[0, 1) (the fraction removed)"
        )


def same_layer_ops(layer: LayerInfo, in_channels: int, features: int, density: float = 1.0):
    """The layer's own op with fewer inputs/outputs (the deployed form of most techniques)."""
    del in_channels  # input width is implied by the shape walk
    return (Op(layer.kind, layer.name, features, layer.kernel, layer.op.stride, True, density),)
