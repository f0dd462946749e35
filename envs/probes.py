"""What the environment measures of every (layer, technique, ratio) on real layer inputs before
a search: the relative output error (the agent's sensitivity observation) and, for the
output-statistics correction of a simulated plan (``env.stat_correction``), the per-channel
affine map that gives the compressed layer's output the original layer's mean and standard
deviation.

The correction is the idea behind EagleEye's adaptive batch-norm evaluation (Li et al., ECCV
2020: a pruned network scored after re-estimating its batch-norm statistics ranks candidates
closer to their fine-tuned accuracy), precomputed per layer on the base model's inputs so that
it stays an array lookup inside the compiled evaluation. It costs a pass of every technique at
every ratio over ``STATS_EXAMPLES`` images per layer, so it is computed only where it is used."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autocomp.models.layers import layer_inputs
from autocomp.models.ops import apply_op
from autocomp.techniques import Technique, layer_forward

_EPS = 1e-6
STATS_EXAMPLES = 256  # training images whose layer inputs fit the correction


def channel_correction(y: jax.Array, y_t: jax.Array) -> jax.Array:
    """float[2, C] (scale, shift) mapping ``y_t``'s per-channel mean and standard deviation
    (over every axis but the last) onto ``y``'s; the identity for a channel ``y_t`` holds
    constant (a pruned filter: removed downstream anyway)."""
    axes = tuple(range(y.ndim - 1))
    mu, sd = jnp.mean(y, axes), jnp.std(y, axes)
    mu_t, sd_t = jnp.mean(y_t, axes), jnp.std(y_t, axes)
    valid = sd_t > _EPS * jnp.maximum(sd, _EPS)
    scale = jnp.where(valid, sd / jnp.where(valid, sd_t, 1.0), 1.0)
    shift = jnp.where(valid, mu - scale * mu_t, 0.0)
    return jnp.stack([scale, shift])


def affine(y: jax.Array, correction: jax.Array) -> jax.Array:
    """``y`` (channels last) times ``correction[0]`` plus ``correction[1]``, per channel."""
    return y * correction[0].astype(y.dtype) + correction[1].astype(y.dtype)


def adaptive_logits(env, plan, params, x, x_stats):
    """The simulated plan's logits on ``x`` with each layer's output statistics re-estimated
    under the plan itself (EagleEye's procedure): one pass of the base model over ``x_stats``
    records every layer's per-channel output mean and standard deviation, one pass of the plan
    over ``x_stats`` maps each layer's output onto them in order (so a layer sees its already
    corrected inputs), and the maps found there are applied on ``x``. Inside jit."""
    base: dict[int, jax.Array] = {}

    def record(layer, h):
        p = env.network.layer_params(params.base_params, layer)
        base[layer.index] = y = apply_op(layer.op, {layer.name: p}, h)
        return y

    env.network.forward(params.base_params, x_stats, record)
    found: dict[int, jax.Array] = {}

    def fit(layer, y, t, r):
        found[layer.index] = channel_correction(base[layer.index], y)
        return affine(y, found[layer.index])

    env.logits(plan, params, x_stats, post=fit)
    return env.logits(plan, params, x, post=lambda layer, y, t, r: affine(y, found[layer.index]))


def relative_error(y: jax.Array, y_t: jax.Array) -> jax.Array:
    """||y_t - y|| / ||y||: the sensitivity observation."""
    return jnp.linalg.norm(y_t - y) / (jnp.linalg.norm(y) + 1e-12)


def identity_correction(layers: Sequence, n_t: int, n_r: int) -> tuple[np.ndarray, ...]:
    """Per layer float[T, R, 2, features] of scale 1 and shift 0."""
    return tuple(
        np.broadcast_to(
            np.stack([np.ones(layer.features), np.zeros(layer.features)]).astype(np.float32),
            (n_t, n_r, 2, layer.features),
        ).copy()
        for layer in layers
    )


def probe(
    network,
    layers: Sequence,
    techniques: Sequence[Technique],
    ratios: Sequence[float],
    base_params: dict,
    aux: tuple[dict, ...],
    x: np.ndarray,
    metric: Callable[[jax.Array, jax.Array], jax.Array],
    fill: Sequence[np.ndarray],
) -> list[np.ndarray]:
    """Per layer, ``metric(original output, compressed output)`` of every fitting technique at
    every ratio on the layer's inputs from images ``x`` through the base model, written into a
    copy of ``fill[layer]`` (float[T, R, ...]: its value where a technique does not fit)."""
    inputs = layer_inputs(network, layers, base_params, np.asarray(x))
    bins = jnp.asarray(ratios, jnp.float32)
    out = []
    for layer in layers:
        fitting = [t for t, tech in enumerate(techniques) if tech.name in aux[layer.index]]

        @jax.jit
        def measure(p, a, x, layer=layer, fitting=fitting):
            y = apply_op(layer.op, {layer.name: p}, x)
            rows = []
            for t in fitting:
                tech = techniques[t]

                def one(ratio, tech=tech):
                    return metric(y, layer_forward(tech, layer, p, a[tech.name], ratio, x))

                rows.append(jax.lax.map(one, bins))
            return jnp.stack(rows)

        p = jax.tree.map(jnp.asarray, network.layer_params(base_params, layer))
        values = np.array(fill[layer.index], dtype=np.float32)
        values[fitting] = np.asarray(measure(p, aux[layer.index], inputs[layer.index]))
        out.append(values)
    return out


def with_correction(env, params, x_stats: np.ndarray):
    """``params`` of ``env`` (a ``CompressionEnv``) with the output-statistics correction
    fitted on the first ``STATS_EXAMPLES`` images of ``x_stats`` (the training split)."""
    n_t, n_r = len(env.techniques), len(env.space.ratios)
    correction = probe(
        env.network, env.layers, env.techniques, env.space.ratios, params.base_params,
        params.aux, np.asarray(x_stats[:STATS_EXAMPLES]), channel_correction,
        identity_correction(env.layers, n_t, n_r),
    )  # fmt: skip
    return params._replace(correction=tuple(jnp.asarray(c) for c in correction))
