"""Layer-wise distillation: fit a replacement layer to the original layer's outputs.

Replacements without a closed form from the original weights (SqueezeNet fire modules, mlpconv,
depthwise-separable convs, as the survey and AdaDeep apply them) start from an initialization
(exact where one exists, e.g. the SVD) and then learn to reproduce the original layer's
pre-activation outputs on its inputs from training images. All ratio bins of one layer train at
once (``vmap``), in one compiled loop, and the result is cached on disk per layer, technique,
weights, inputs and settings, so a search that comes back finds it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from autocomp.config import DistillConfig
from autocomp.io import atomic_write_bytes

log = logging.getLogger(__name__)


def _fingerprint(*arrays, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:20]


def distill(
    label: str,
    target: Callable[[jax.Array], jax.Array],
    student: Callable[[dict, jax.Array], jax.Array],
    init: dict,
    masks: dict,
    inputs: np.ndarray,
    cfg: DistillConfig,
    seed: int = 0,
    cache_dir: Path | None = None,
    exact: np.ndarray | None = None,
) -> dict:
    """Train ``student(params_b * masks_b, x)`` to match ``target(x)`` for every bin ``b``.

    Args:
        label: what is distilled, for the log and the cache file name ("fire/conv2").
        target: the original layer, a pure function of a batch of inputs.
        student: the replacement for one bin's params.
        init: params with a leading bin axis [R, ...] (zero-padded to the largest bin).
        masks: same structure as ``init``; 1 where a bin's params exist, 0 for its padding.
        inputs: the layer's inputs on training images, [N, ...].
        cfg: steps, batch size, learning rate, crop.
        exact: bool[R], bins whose ``init`` already is the original layer; they are kept as
            they are (Adam's first steps would move them by about the learning rate).

    Returns:
        The distilled params [R, ...] (numpy), masked.
    """
    init = jax.tree.map(lambda a: np.asarray(a, np.float32), init)
    masks = jax.tree.map(lambda a: np.asarray(a, np.float32), masks)
    path = None
    if cache_dir is not None:
        key = _fingerprint(
            inputs,
            *jax.tree.leaves(init),
            *jax.tree.leaves(masks),
            extra=f"{label}|{cfg}|{seed}|{exact}",
        )
        path = Path(cache_dir) / f"{label.replace('/', '-')}-{key}.msgpack"
        if path.is_file():
            try:
                return serialization.from_bytes(init, path.read_bytes())
            except Exception as err:  # a corrupt cache entry is recomputed, never trusted
                log.warning("ignoring unreadable distillation cache %s (%s)", path, err)
    if cfg.steps == 0:
        return jax.tree.map(lambda p, m: p * m, init, masks)
    start = time.perf_counter()
    n_bins = len(jax.tree.leaves(init)[0])
    exact = np.zeros(n_bins, bool) if exact is None else np.asarray(exact, bool)
    out, errors = _train(target, student, init, masks, jnp.asarray(inputs), cfg, seed, exact)
    out = jax.tree.map(np.asarray, out)
    log.info(
        "distilled %s: %d bins, %d steps, relative output error %s (%.1f s)",
        label,
        len(errors),
        cfg.steps,
        " ".join(f"{e:.3f}" for e in errors),
        time.perf_counter() - start,
    )
    if path is not None:
        atomic_write_bytes(path, serialization.to_bytes(out))
    return out


MAX_ROWS = 8192  # positions sampled for a least-squares fit (>= 7x the unknowns of a 3x3x128 conv)
RIDGE = 1e-4


def least_squares_conv(
    hidden: jax.Array, target: jax.Array, kernel: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The k x k conv (SAME, stride 1) and bias that best map ``hidden`` [N, H, W, c] to
    ``target`` [N, H, W, o] in least squares (ridge ``RIDGE`` times the mean diagonal of the
    Gram matrix, bias not shrunk), on at most ``MAX_ROWS`` sampled positions: the exact
    distillation of a replacement's last linear stage. Returns (kernel [k, k, c, o], bias [o]).
    Zero input channels (padding of a smaller bin) get zero weights."""
    c, o = hidden.shape[-1], target.shape[-1]
    patches = jax.lax.conv_general_dilated_patches(
        hidden, (kernel, kernel), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ).reshape(-1, c * kernel * kernel)  # features ordered (c, kh, kw)
    y = target.reshape(-1, o)
    if len(y) > MAX_ROWS:
        rows = np.random.default_rng(seed).choice(len(y), MAX_ROWS, replace=False)
        patches, y = patches[rows], y[rows]
    weights, bias = ridge_fit(np.asarray(patches), np.asarray(y))
    return weights.reshape(c, kernel, kernel, o).transpose(1, 2, 0, 3), bias


def ridge_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``y ~ x @ w + b`` (float64) with a ridge of ``RIDGE`` times the mean
    diagonal of the Gram matrix on ``w`` only. Returns float32 (w, b)."""
    design = np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], axis=1)
    gram = design.T @ design
    ridge = RIDGE * np.trace(gram) / len(gram) * np.eye(len(gram))
    ridge[-1, -1] = 0.0  # the bias is not shrunk
    solution = np.linalg.solve(gram + ridge, design.T @ np.asarray(y, np.float64))
    return solution[:-1].astype(np.float32), solution[-1].astype(np.float32)


def refit_sample(inputs: np.ndarray, layer) -> np.ndarray:
    """Enough of a layer's inputs for a least-squares fit (about 4 * ``MAX_ROWS`` positions)."""
    positions = max(1, int(np.prod(layer.in_shape[:-1])) // (layer.op.stride**2))
    return inputs[: max(1, min(len(inputs), 4 * MAX_ROWS // positions))]


def _crop(x: jax.Array, key: jax.Array, size: int) -> jax.Array:
    """Random ``size`` x ``size`` patches of a batch of feature maps (one offset per map)."""
    if x.ndim != 4 or size <= 0 or (x.shape[1] <= size and x.shape[2] <= size):
        return x
    h, w = min(size, x.shape[1]), min(size, x.shape[2])
    ky, kx = jax.random.split(key)
    oy = jax.random.randint(ky, (x.shape[0],), 0, x.shape[1] - h + 1)
    ox = jax.random.randint(kx, (x.shape[0],), 0, x.shape[2] - w + 1)
    return jax.vmap(
        lambda img, y, x_: jax.lax.dynamic_slice(img, (y, x_, 0), (h, w, img.shape[-1]))
    )(x, oy, ox)


def _train(target, student, init, masks, inputs, cfg: DistillConfig, seed: int, exact):
    """Adam on each bin in turn (``lax.map``: one compiled loop; vmapped convolutions over
    different weights are slow on XLA:CPU)."""
    # Warm-up: Adam's first steps move every weight by about the step size, which would undo
    # the closed-form start; cosine decay to settle.
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, max(1, cfg.steps // 5), max(2, cfg.steps)
    )
    tx = optax.adam(schedule)

    @jax.jit
    def run(init, masks, exact, key, inputs):  # inputs as an argument: no constant folding
        def batch(key):
            ki, kc = jax.random.split(key)
            idx = jax.random.randint(ki, (cfg.batch_size,), 0, inputs.shape[0])
            x = _crop(inputs[idx], kc, cfg.crop)
            return x, target(x)

        held = inputs[: min(256, inputs.shape[0])]  # whole maps, for the reported error
        y_held = target(held)
        var = jnp.var(y_held) + 1e-8

        def loss(p, m, x, y):
            return jnp.mean((student(jax.tree.map(jnp.multiply, p, m), x) - y) ** 2) / var

        def one_bin(pme):
            p0, m, frozen = pme

            def step(i, carry):
                p, s = carry
                x, y = batch(jax.random.fold_in(key, i))
                grads = jax.grad(loss)(p, m, x, y)
                updates, s = tx.update(grads, s, p)
                return optax.apply_updates(p, updates), s

            p, _ = jax.lax.fori_loop(0, cfg.steps, step, (p0, tx.init(p0)))
            p = jax.tree.map(lambda a, b: jnp.where(frozen, a, b), p0, p)
            error = jnp.sqrt(loss(p, m, held, y_held) * var / (jnp.mean(y_held**2) + 1e-12))
            return jax.tree.map(jnp.multiply, p, m), error

        return jax.lax.map(one_bin, (init, masks, exact))

    params, errors = run(init, masks, jnp.asarray(exact), jax.random.key(seed), inputs)
    return params, [float(e) for e in np.asarray(errors)]
