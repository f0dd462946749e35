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
from autocomp.models import Op, SequentialNet, init_params

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the way out."""


def predict(ops: tuple[Op, ...], params: dict, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits of ``x`` under the model ``ops`` (batched, one compiled function per shape)."""
    apply = _apply_fn(ops)
    return np.concatenate(
        [np.asarray(apply(params, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    )


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
    teacher: Callable[[np.ndarray], np.ndarray] | None = None,
    temperature: float = 1.0,
    alpha: float = 1.0,
    masks: dict[str, np.ndarray] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Adam(W) training with a cosine schedule; optional distillation from ``teacher`` logits and
    fixed sparsity ``masks`` (op name -> kernel mask) that every update keeps."""
    model = SequentialNet(ops)
    steps = max(1, epochs * (len(data.x_train) // batch_size))
    tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=weight_decay)
    opt_state = tx.init(params)
    mask_tree = {name: {"kernel": jnp.asarray(m)} for name, m in (masks or {}).items()}

    def apply_masks(p):
        return {
            k: ({**v, **{"kernel": v["kernel"] * mask_tree[k]["kernel"]}} if k in mask_tree else v)
            for k, v in p.items()
        }

    @jax.jit
    def step(p, s, x, y, t_logits):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return _kd_loss(logits, y, t_logits, temperature, alpha)

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return apply_masks(optax.apply_updates(p, updates)), s, loss

    teacher_train = teacher(data.x_train) if teacher is not None else None
    rng = np.random.default_rng(seed)
    params = apply_masks(jax.tree.map(jnp.asarray, params))
    for epoch in range(epochs):
        losses = []
        idx = rng.permutation(len(data.x_train))
        for start in range(0, len(idx) - batch_size + 1, batch_size):
            sel = idx[start : start + batch_size]
            t_logits = teacher_train[sel] if teacher_train is not None else None
            params, opt_state, loss = step(
                params, opt_state, data.x_train[sel], data.y_train[sel], t_logits
            )
            losses.append(loss)
        if on_epoch is not None:
            on_epoch(epoch, float(np.mean(jax.device_get(losses))))
    return jax.tree.map(np.asarray, params)


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
    """Read msgpack params into the structure of ``template``."""
    try:
        restored = serialization.from_bytes(template, path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types on corrupt input
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or belongs to another architecture ({err}); "
            "delete it to retrain, or point the run at another cache dir"
        ) from err
    shapes_ok = jax.tree.map(lambda a, b: np.shape(a) == np.shape(b), restored, template)
    if not all(jax.tree.leaves(shapes_ok)):
        raise CheckpointError(f"checkpoint {str(path)!r} has params of other shapes; delete it")
    return jax.tree.map(np.asarray, restored)


def cache_root(train: TrainConfig) -> Path:
    """Where base models are cached (``base.cache_dir``, ``$AUTOCOMP_CACHE``, or ~/.cache)."""
    root = train.cache_dir or os.environ.get("AUTOCOMP_CACHE") or "~/.cache/autocomp"
    return Path(root).expanduser()


def train_base(
    model: ModelConfig,
    ops: tuple[Op, ...],
    data: Dataset,
    train: TrainConfig,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[dict, bool]:
    """Train the base model or load it from the cache. Returns (params, loaded_from_cache)."""
    cache = cache_root(train) / "base"
    path = cache / f"{model.name}-{base_cache_key(model, data, seed, train)}.msgpack"
    template = init_params(ops, data.x_train.shape[1:], jax.random.key(seed))
    if path.is_file():
        log.info("loading cached base model %s", path)
        return load_params(path, template), True
    params = fit(
        ops,
        template,
        data,
        epochs=train.epochs,
        batch_size=train.batch_size,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        seed=seed,
        on_epoch=on_epoch,
    )
    atomic_write_bytes(path, serialization.to_bytes(params))
    log.info("cached base model at %s", path)
    return params, False


def finetune(
    ops: tuple[Op, ...],
    params: dict,
    masks: dict[str, np.ndarray],
    data: Dataset,
    cfg: FinetuneConfig,
    teacher: Callable[[np.ndarray], np.ndarray],
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict:
    """Distil the base model into the compressed one, keeping sparsity masks."""
    return fit(
        ops,
        params,
        data,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        weight_decay=0.0,
        seed=seed,
        teacher=teacher,
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        masks=masks,
        on_epoch=on_epoch,
    )
