"""Training of the base model (cached) and distillation fine-tuning of a compressed one."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from autocomp.config import FinetuneConfig, ModelConfig, TrainConfig
from autocomp.data import Dataset
from autocomp.io import atomic_write_bytes
from autocomp.models.ops import (
    Op,
    SequentialNet,
    base_ops,
    fold_batchnorm,
    init_variables,
    param_shapes,
)
from autocomp.sharding import batch_sharding, put_batch

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the way out."""


def predict(ops: tuple[Op, ...], params: dict, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits of ``x`` under the model ``ops`` (batched, one compiled function per shape)."""
    return predict_with(_apply_fn(ops), params, x, batch_size)


def accuracy(ops: tuple[Op, ...], params: dict, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict(ops, params, x).argmax(-1) == y))


@functools.lru_cache(maxsize=64)
def _apply_fn(ops: tuple[Op, ...]) -> Callable:
    """One jitted apply per architecture, so repeated predictions do not recompile."""
    model = SequentialNet(ops)
    return jax.jit(lambda p, x: model.apply({"params": p}, x))


def _kd_loss(logits, labels, teacher_logits, temperature, alpha):
    hard = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    if teacher_logits is None:
        return hard
    t = temperature
    soft = optax.softmax_cross_entropy(logits / t, jax.nn.softmax(teacher_logits / t)).mean()
    return alpha * hard + (1.0 - alpha) * (t * t) * soft


def augment_batch(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
    """Random horizontal flips and crops of a zero-padded batch (inside jit, no Python loop)."""
    n, h, w, c = x.shape
    k_flip, k_y, k_x = jax.random.split(key, 3)
    flip = jax.random.bernoulli(k_flip, 0.5, (n,))
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = jax.random.randint(k_y, (n,), 0, 2 * pad + 1)
    dx = jax.random.randint(k_x, (n,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda img, i, j: jax.lax.dynamic_slice(img, (i, j, 0), (h, w, c)))
    return crop(padded, dy, dx)


def make_optimizer(name: str, learning_rate: float, weight_decay: float, steps: int):
    """AdamW or Nesterov SGD with a linear warm-up (5% of steps, at most 500) and cosine decay."""
    warmup = min(500, steps // 20)
    if warmup:
        schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, steps)
    else:
        schedule = optax.cosine_decay_schedule(learning_rate, steps)
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.sgd(schedule, momentum=0.9, nesterov=True),
        )
    return optax.adamw(schedule, weight_decay=weight_decay)


def train_loop(
    apply: Callable,
    params,
    stats,
    data: Dataset,
    tx: optax.GradientTransformation,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    augment: bool = False,
    teacher: tuple[Callable, object] | None = None,
    temperature: float = 1.0,
    alpha: float = 1.0,
    keep: Callable = lambda p: p,
    checkpoint: Path | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
):
    """The one training loop, for every model (built-in op lists, users' linen and NNX models);
    returns (params, stats). ``apply(params, stats, x) -> (logits, new stats)``: the model in
    training mode (``stats``: its mutable collections, ``{}`` if none). Loss: cross-entropy,
    plus distillation from ``teacher = (fn, params)`` (``fn(params, x) -> logits``; with
    ``augment`` on the student's flipped and cropped batch, else computed once). ``keep`` runs
    after every update (sparsity masks). Batches are drawn per (seed, epoch) and split over the
    devices; with ``checkpoint``, saved atomically after every epoch and resumed from."""
    batch_size = min(batch_size, len(data.x_train))
    steps_per_epoch = max(1, len(data.x_train) // batch_size)
    aug_key = jax.random.key(seed + 1)
    t_fn, t_params = teacher if teacher is not None else (None, None)

    @jax.jit
    def step(p, stats, s, x, y, t_logits, i, t_params):
        if augment:
            x = augment_batch(jax.random.fold_in(aug_key, i), x)
            if t_fn is not None:
                t_logits = t_fn(t_params, x)

        def loss_fn(p):
            logits, new_stats = apply(p, stats, x)
            return _kd_loss(logits, y, t_logits, temperature, alpha), new_stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, s = tx.update(grads, s, p)
        return keep(optax.apply_updates(p, updates)), stats, s, loss

    params = keep(jax.tree.map(jnp.asarray, params))
    stats = jax.tree.map(jnp.asarray, stats)
    t_params = jax.tree.map(jnp.asarray, t_params)
    opt_state = tx.init(params)
    first_epoch = 0
    if checkpoint is not None and checkpoint.is_file():
        state = _load_state(checkpoint, {"epoch": 0, "params": params, "stats": stats,
                                         "opt": opt_state})  # fmt: skip
        first_epoch, params, stats, opt_state = (
            int(state["epoch"]), state["params"], state["stats"], state["opt"]
        )  # fmt: skip
        log.info("resuming training from %s at epoch %d", checkpoint, first_epoch)
    teacher_train = None
    if t_fn is not None and not augment:  # precomputed once; augmented: inside the step
        teacher_train = predict_with(jax.jit(t_fn), t_params, data.x_train)
    split = batch_sharding(batch_size)  # data-parallel over the devices (or None)
    for epoch in range(first_epoch, epochs):
        losses = []
        idx = np.random.default_rng([seed, epoch]).permutation(len(data.x_train))
        for b in range(steps_per_epoch):
            sel = idx[b * batch_size : (b + 1) * batch_size]
            t_logits = teacher_train[sel] if teacher_train is not None else None
            x, y, t_logits = put_batch(split, data.x_train[sel], data.y_train[sel], t_logits)
            params, stats, opt_state, loss = step(
                params, stats, opt_state, x, y, t_logits, epoch * steps_per_epoch + b, t_params
            )
            losses.append(loss)
        if checkpoint is not None and epoch + 1 < epochs:
            state = {"epoch": epoch + 1, "params": params, "stats": stats, "opt": opt_state}
            atomic_write_bytes(checkpoint, serialization.to_bytes(state))
        if on_epoch is not None:
            on_epoch(epoch, float(np.mean(jax.device_get(losses))))
    return jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, stats)


def predict_with(fn: Callable, params, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``fn(params, x)`` (jitted: one compilation per batch shape) over ``x`` in batches."""
    return np.concatenate(
        [np.asarray(fn(params, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    )


def fit(
    ops: tuple[Op, ...],
    params: dict,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
    optimizer: str = "adamw",
    augment: bool = False,
    batch_stats: dict | None = None,
    teacher: tuple[tuple[Op, ...], dict] | None = None,
    temperature: float = 1.0,
    alpha: float = 1.0,
    masks: dict[str, np.ndarray] | None = None,
    checkpoint: Path | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[dict, dict]:
    """:func:`train_loop` for a built-in model ``ops`` from ``params``; returns (params,
    batch_stats). ``teacher``: its ops and params; ``masks``: op name -> kernel mask, kept by
    every update; the optimizer of :func:`make_optimizer`."""
    model = SequentialNet(ops)
    steps = max(1, epochs * (len(data.x_train) // min(batch_size, len(data.x_train))))
    tx = make_optimizer(optimizer, learning_rate, weight_decay, steps)
    mask_tree = {name: jnp.asarray(m) for name, m in (masks or {}).items()}

    def keep(p):
        return {
            k: ({**v, "kernel": v["kernel"] * mask_tree[k]} if k in mask_tree else v)
            for k, v in p.items()
        }

    def apply(p, stats, x):
        if not stats:
            return model.apply({"params": p}, x), stats
        logits, updated = model.apply(
            {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return logits, updated["batch_stats"]

    t_fn = None
    if teacher is not None:
        t_model = SequentialNet(teacher[0])
        t_fn = (lambda tp, x: t_model.apply({"params": tp}, x), teacher[1])  # noqa: E731
    return train_loop(apply, params, batch_stats or {}, data, tx, epochs=epochs,
                      batch_size=batch_size, seed=seed, augment=augment, teacher=t_fn,
                      temperature=temperature, alpha=alpha, keep=keep, checkpoint=checkpoint,
                      on_epoch=on_epoch)  # fmt: skip


def _load_state(path: Path, template: dict) -> dict:
    try:
        return serialization.from_bytes(template, path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types on corrupt input
        raise CheckpointError(
            f"training checkpoint {str(path)!r} is corrupt or from other settings ({err}); "
            "delete it to start the training over"
        ) from err


def base_cache_key(model: ModelConfig, data: Dataset, seed: int, train: TrainConfig) -> str:
    """Cache key of a trained base model: model, data, seed and training settings."""
    train_fields = {k: v for k, v in dataclasses.asdict(train).items() if k != "cache_dir"}
    blob = json.dumps(
        {
            "model": dataclasses.asdict(model),
            "data": data.fingerprint(),
            "seed": seed,
            "train": train_fields,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_params(path: Path, template: dict) -> dict:
    """Read params saved as flax msgpack into the structure of ``template``."""
    try:
        restored = serialization.from_bytes(template, path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types on corrupt input
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or belongs to another architecture ({err}); "
            "delete it to retrain, or point the run at another cache dir"
        ) from err
    _check_shapes(path, restored, template)
    return jax.tree.map(np.asarray, restored)


def _check_shapes(path: Path, restored: dict, template: dict) -> None:
    shapes_ok = jax.tree.map(lambda a, b: np.shape(a) == np.shape(b), restored, template)
    if not all(jax.tree.leaves(shapes_ok)):
        raise CheckpointError(f"checkpoint {str(path)!r} has params of other shapes; delete it")


def save_base(path: Path, params: dict) -> None:
    """Write base params as an orbax checkpoint (orbax commits it atomically by renaming)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path.absolute(), jax.tree.map(np.asarray, params))
        checkpointer.wait_until_finished()


def load_base(path: Path, template: dict) -> dict:
    """Read base params written by :func:`save_base` into ``template`` (a pytree of
    ``jax.ShapeDtypeStruct``, see :func:`~autocomp.models.ops.param_shapes`)."""
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(path.absolute(), template)
    except Exception as err:  # orbax raises several unrelated types on bad input
        raise CheckpointError(
            f"base-model checkpoint {str(path)!r} is corrupt or belongs to another "
            f"architecture ({type(err).__name__}: {str(err)[:200]}); delete the folder to "
            "retrain, or point the run at another cache dir (base.cache_dir=...)"
        ) from err
    _check_shapes(path, restored, template)
    return jax.tree.map(np.asarray, restored)


def cache_root(train: TrainConfig) -> Path:
    """Where base models are cached (``base.cache_dir``, ``$AUTOCOMP_CACHE``, or ~/.cache)."""
    root = train.cache_dir or os.environ.get("AUTOCOMP_CACHE") or "~/.cache/autocomp"
    return Path(root).expanduser()


def base_cache_path(
    model: ModelConfig, data: Dataset, seed: int, train: TrainConfig, name: str = ""
) -> Path:
    """``<cache root>/base/<name>-<key>``: where the base model of these settings is cached
    (``name``: the model's, unless given)."""
    key = base_cache_key(model, data, seed, train)
    return cache_root(train) / "base" / f"{name or model.name}-{key}"


def train_base(
    model: ModelConfig,
    ops: tuple[Op, ...],
    data: Dataset,
    train: TrainConfig,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[dict, bool]:
    """Train the base model or load it from the cache. Returns (params, loaded_from_cache).

    ``ops`` is the inference model; when the config asks for batch norm, the model trains with
    it (:func:`~autocomp.models.ops.base_ops` with ``train=True``) and the cached params are the
    folded ones, saved as an orbax checkpoint ``<cache>/base/<model>-<key>/``. An interrupted
    training resumes from ``<model>-<key>.partial`` (written after every epoch) at the last
    epoch.
    """
    path = base_cache_path(model, data, seed, train)
    template = param_shapes(ops, data.x_train.shape[1:])
    if path.is_dir():
        log.info("loading cached base model %s", path)
        return load_base(path, template), True
    legacy = path.with_name(path.name + ".msgpack")  # caches written before orbax
    if legacy.is_file():
        log.info("converting cached base model %s to an orbax checkpoint", legacy)
        params = load_params(legacy, template)
        save_base(path, params)
        return params, True
    partial = path.with_name(path.name + ".partial")
    train_ops = base_ops(model, train=True)
    variables = init_variables(train_ops, data.x_train.shape[1:], jax.random.key(seed))
    params, stats = fit(
        train_ops,
        variables["params"],
        data,
        epochs=train.epochs,
        batch_size=train.batch_size,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        seed=seed,
        optimizer=train.optimizer,
        augment=train.augment,
        batch_stats=variables.get("batch_stats"),
        checkpoint=partial,
        on_epoch=on_epoch,
    )
    if stats:
        params = jax.tree.map(np.asarray, fold_batchnorm(train_ops, params, stats))
    save_base(path, params)
    partial.unlink(missing_ok=True)
    log.info("cached base model at %s", path)
    return params, False


def finetune(
    ops: tuple[Op, ...],
    params: dict,
    masks: dict[str, np.ndarray],
    data: Dataset,
    cfg: FinetuneConfig,
    teacher: tuple[tuple[Op, ...], dict],
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    checkpoint: Path | None = None,
) -> dict:
    """Distil the base model (``teacher``: its ops and params) into the compressed one, keeping
    sparsity masks; with ``checkpoint``, resumable after every epoch (see :func:`fit`)."""
    return fit(
        ops,
        params,
        data,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=0.0,
        seed=seed,
        augment=cfg.augment,
        teacher=teacher,
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        masks=masks,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
    )[0]
