"""The technique interface: a technique is a value (a named tuple of pure functions), like an optax
transformation. Adding a technique is adding one module that returns one of these.

A *ratio* is the fraction of the layer's capacity removed, in [0, 1): 0 is the identity where the
technique has one. A ``ratio_free`` technique (a fixed replacement such as global average
pooling) ignores it.

- ``fits(layer)``: ``None`` if the technique applies to the layer, else the reason it does not.
- ``prepare(layer, params, ctx)``: host-side precomputation on the trained weights (an SVD, a
  ranking, or replacement layers distilled from the original on ``ctx.inputs`` for every ratio
  bin in ``ctx.ratios``), returned as a pytree of arrays with shapes fixed by the layer; it
  travels in the env params.
- ``simulate(params, aux, ratio)``: inside jit, the layer's params with the *same shapes* but the
  compression applied (masks, masked singular values, an equivalent kernel). ``ratio`` may be
  traced. ``None`` for a technique whose replacement is not one linear layer (it has
  ``forward``).
- ``forward(layer, params, aux, ratio, x, in_keep)``: optional; inside jit, the replaced layer's
  output for input ``x`` (same shape as the original's), where ``in_keep`` bool[C_in] says which
  input channels the previous layer kept. Without it, the layer op runs on ``simulate``'s params.
- ``out_mask(aux, ratio)``: optional; bool[features] output channels kept (structured pruning).
- ``materialize(layer, params, aux, ratio, in_rows)``: on the host, the real smaller ops and their
  params for this layer, given the input rows that survive the previous layer's pruning. Returns a
  :class:`Materialized`.
- ``ops(layer, ratio, in_channels)``: the deployed ops of the layer for a ratio and a number of
  input channels kept, without weights: what the cost table is keyed by.
- ``out_channels(layer, ratio)``: how many output channels survive (structured pruning only
  shrinks it).

What the rest of the code asks of a technique is a field of it, never its name:

- ``identity``: the technique leaves the layer as it is (``keep``): every layer can choose it,
  only at ratio 0, and it is the uncompressed model's choice. Exactly one registered technique
  is the identity, and every list of techniques the search uses must include it.
- ``family``: the survey's code of the technique (``W3``, ``C1``, ``L2``; ``""``: none).
- ``quantizable``: its deployed form is the layer's own op whose kernel is ``simulate``'s
  kernel, so it composes with k-bit weight quantization as ``<name>+q<bits>``.
- ``pooled_input``: its replacement takes the layer's feature map before the flatten in front
  of it (a pooled head): that flatten goes from the deployed model, and the replacement is
  priced on the (H, W, C) map rather than on the flattened vector.

Each module's docstring gives the parameter count, MACs and largest intermediate feature map of
its deployed form; ``tests/test_techniques.py`` checks the counted ones against the formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.config import DistillConfig
from autocomp.models.layers import LayerInfo
from autocomp.models.ops import Op, apply_op

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


@dataclass(frozen=True)
class PrepareContext:
    """What ``prepare`` may use besides the layer's weights.

    Attributes:
        ratios: the ratio bins the search can ask for (distilled replacements are made per bin).
        inputs: a sample of this layer's inputs in the trained base model (training images),
            or ``None`` where no data is at hand (techniques that need it raise).
        distill: layer-wise distillation settings.
        cache_dir: where distilled layers are cached (``None``: no cache).
        seed: random seed of the distillation.
    """

    ratios: tuple[float, ...] = (0.0,)
    inputs: np.ndarray | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    cache_dir: Path | None = None
    seed: int = 0


class Technique(NamedTuple):
    name: str
    fits: Callable[[LayerInfo], str | None]
    prepare: Callable[[LayerInfo, Params, PrepareContext], Params]
    simulate: Callable[[Params, Params, Any], Params] | None
    materialize: Callable[[LayerInfo, Params, Params, float, np.ndarray], Materialized]
    ops: Callable[[LayerInfo, float, int], tuple[Op, ...]]
    out_channels: Callable[[LayerInfo, float], int]
    forward: Callable[..., Any] | None = None
    out_mask: Callable[[Params, Any], Any] | None = None
    ratio_free: bool = False
    identity: bool = False
    family: str = ""
    quantizable: bool = False
    pooled_input: bool = False


def layer_forward(tech: Technique, layer: LayerInfo, params, aux, ratio, x, in_keep=None):
    """The compressed layer's output on ``x`` inside jit (the environment's simulation)."""
    if tech.forward is not None:
        if in_keep is None:
            in_keep = jnp.ones(layer.in_channels, bool)
        return tech.forward(layer, params, aux, ratio, x, in_keep)
    return apply_op(layer.op, {layer.name: tech.simulate(params, aux, ratio)}, x)


def layer_out_mask(tech: Technique, layer: LayerInfo, aux, ratio):
    """bool[features]: the output channels the technique keeps (all but for pruning)."""
    if tech.out_mask is None:
        return jnp.ones(layer.features, bool)
    return tech.out_mask(aux, ratio)


def bin_index(bins, ratio):
    """Index of the ratio bin nearest to ``ratio`` (jit-safe): distilled techniques store one
    replacement per bin of the search's ratio grid."""
    xp = jnp if isinstance(ratio, jax.Array) or isinstance(bins, jax.Array) else np
    return xp.argmin(xp.abs(xp.asarray(bins) - ratio))


def distilled_bin(layer: LayerInfo, technique: str, aux, ratio: float) -> int:
    """The bin of a distilled replacement for ``ratio`` on the host; it must be one of them."""
    bins = np.asarray(aux["bins"])
    b = int(bin_index(bins, float(ratio)))
    if abs(float(bins[b]) - float(ratio)) > 1e-6:
        raise TechniqueError(
            f"technique {technique!r} on layer {layer.name!r}: no distilled replacement for "
            f"ratio {ratio}; it was prepared for {[float(r) for r in bins]}"
        )
    return b


def bin_params(aux: Params, b) -> Params:
    """One ratio bin's replacement params out of a distilled technique's stacked ``aux``."""
    return {k: v[b] for k, v in aux.items() if k != "bins"}


def need_inputs(technique: str, layer: LayerInfo, ctx: PrepareContext) -> np.ndarray:
    if ctx.inputs is None:
        raise TechniqueError(
            f"technique {technique!r} on layer {layer.name!r} is fitted to the layer's inputs on "
            "training data (layer-wise distillation), but none were given; pass the data "
            "(autocomp.apply_plan(..., x_train=...)) or choose another technique"
        )
    return ctx.inputs


class TechniqueError(ValueError):
    """A technique used where it does not apply; the message names layer and technique."""


def removed(n, ratio):
    """How many of ``n`` units a ratio removes, identically in numpy and under jit.

    Rounds half up on float32 so host materialization and traced simulation agree exactly.
    """
    xp = jnp if isinstance(ratio, jax.Array) else np
    r = xp.asarray(ratio, dtype=xp.float32)
    return xp.floor(r * xp.float32(n) + xp.float32(0.5)).astype(xp.int32)


def magnitude_mask(values, sorted_abs, ratio):
    """bool mask keeping all but the ``ratio`` share of ``values`` with the smallest
    magnitude (``sorted_abs``: their magnitudes, sorted once on the host); jit-safe."""
    n_removed = removed(sorted_abs.shape[0], ratio)
    threshold = jnp.where(n_removed > 0, sorted_abs[jnp.maximum(n_removed - 1, 0)], -jnp.inf)
    return jnp.abs(values) > threshold


def truncate_spectrum(s, ratio):
    """Singular values ``s`` with all but the kept rank zeroed (at least one kept); jit-safe."""
    p = s.shape[0]
    return jnp.where(jnp.arange(p) < jnp.maximum(p - removed(p, ratio), 1), s, 0.0)


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


def technique_fits(tech: Technique, layer: LayerInfo) -> str | None:
    """``tech.fits(layer)``, and where the layer's outputs follow its group's root (a residual
    block's last conv), also that the technique's last op can lose output channels."""
    reason = tech.fits(layer)
    if reason is not None or layer.follows < 0:
        return reason
    last = tech.ops(layer, 0.5, layer.in_channels)[-1]
    if last.kind not in ("conv", "dense") or last.groups != 1 or last.features != layer.features:
        return (
            "its output channels are pruned with its group's root, and this technique's last "
            f"op ({last.kind}) cannot lose output channels"
        )
    return None


def slice_outputs(out: Materialized, keep: np.ndarray) -> Materialized:
    """A materialized layer keeping only the output channels ``keep`` of its last op."""
    last = out.ops[-1]
    params = dict(out.params)
    p = params[last.name]
    params[last.name] = {k: np.asarray(v)[..., keep] for k, v in p.items()}
    masks = dict(out.masks)
    if last.name in masks:
        masks[last.name] = np.asarray(masks[last.name])[..., keep]
    ops = (*out.ops[:-1], replace(last, features=len(keep)))
    return Materialized(ops, params, masks, np.asarray(keep))


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
    return (replace(layer.op, features=features, use_bias=True, density=density),)
