"""A user's own linen model from config (``model._target_``): build it, load its orbax
checkpoint or train it, and hand it to :func:`autocomp.run.compress_config`."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from autocomp.cluster import barrier, is_writer
from autocomp.config import ModelConfig, TrainConfig
from autocomp.data import Dataset
from autocomp.io import writes_here
from autocomp.models.discovery import ModelError
from autocomp.models.linen import LinenNetwork
from autocomp.sharding import shard_env_params

log = logging.getLogger(__name__)


def import_target(path: str) -> Callable:
    """The object at ``package.module.Name``; a clear error where it cannot be imported."""
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ModelError(
            f"model._target_={path!r} cannot be imported ({err}); give the import path of your "
            "nn.Module class, e.g. model._target_=my_pkg.nets.ResNet18, with my_pkg importable "
            "(installed, or on PYTHONPATH)"
        ) from err


def build_model(cfg: ModelConfig):
    model = import_target(cfg._target_)(**dict(cfg.kwargs))
    if not hasattr(model, "apply") or not hasattr(model, "init"):
        raise ModelError(
            f"model._target_={cfg._target_!r} gave a {type(model).__name__}, not a flax.linen "
            "Module; point it at the module class (or a function returning one)"
        )
    return model


def output_fn(cfg: ModelConfig) -> Callable | None:
    """The logits out of the model's output, by ``model.output`` (attribute or key)."""
    if not cfg.output:
        return None
    name = cfg.output

    def pick(out):
        return out[name] if isinstance(out, Mapping) else getattr(out, name)

    return pick


def template(model, cfg: ModelConfig, example: np.ndarray) -> dict:
    """The variables' shapes, as ``model.init`` makes them (nothing computed)."""
    return jax.eval_shape(
        lambda k, x: model.init(k, x, **dict(cfg.apply_kwargs)), jax.random.key(0), example
    )


def load_checkpoint(path: str, like: dict) -> dict:
    """Variables from an orbax checkpoint, checked leaf by leaf against the model's."""
    import orbax.checkpoint as ocp

    where = Path(path).expanduser().resolve()
    if not where.exists():
        raise ModelError(f"model.checkpoint={path!r} does not exist; give the orbax checkpoint dir")
    try:
        restored = ocp.StandardCheckpointer().restore(where)
    except Exception as err:  # orbax raises many types on a directory that is not its own
        raise ModelError(f"model.checkpoint={path!r} is not an orbax checkpoint ({err})") from err
    want = {jax.tree_util.keystr(p): a.shape for p, a in jax.tree_util.tree_leaves_with_path(like)}
    got = {
        jax.tree_util.keystr(p): np.shape(a)
        for p, a in jax.tree_util.tree_leaves_with_path(restored)
    }
    for key, shape in want.items():
        if key not in got:
            raise ModelError(f"model.checkpoint={path!r} has no {key}: it is of another model")
        if tuple(got[key]) != tuple(shape):
            raise ModelError(
                f"model.checkpoint={path!r}: {key} has shape {tuple(got[key])}, the model "
                f"wants {tuple(shape)}; the checkpoint is of another configuration"
            )
    return jax.tree.map(np.asarray, restored)


def train_base(model, cfg: ModelConfig, data: Dataset, train: TrainConfig, seed: int,
               checkpoint: Path | None = None) -> dict:  # fmt: skip
    """Train the user's model from scratch when no checkpoint is given, as a built-in one
    trains (``base``: the optimizer of :func:`autocomp.training.loop.make_optimizer`,
    cross-entropy, ``base.augment``, batch statistics updated where the model has them) in
    :func:`autocomp.training.loop.train_loop`; with ``checkpoint``, resumable per epoch."""
    from autocomp.training.loop import make_optimizer, train_loop

    variables = model.init(jax.random.key(seed), data.x_train[:1], **dict(cfg.apply_kwargs))
    stats = {k: v for k, v in variables.items() if k != "params"}
    batch = min(train.batch_size, len(data.x_train))
    steps = max(1, train.epochs * (len(data.x_train) // batch))
    tx = make_optimizer(train.optimizer, train.learning_rate, train.weight_decay, steps)
    kwargs = dict(cfg.train_kwargs) or dict(cfg.apply_kwargs)
    pick = output_fn(cfg) or (lambda out: out)

    def apply(p, stats, x):
        if not stats:
            return pick(model.apply({"params": p}, x, **kwargs)), stats
        out, new = model.apply({"params": p, **stats}, x, **kwargs, mutable=list(stats))
        return pick(out), {**stats, **new}

    def on_epoch(epoch: int, loss: float) -> None:
        log.info("base model epoch %d/%d: loss %.4f", epoch + 1, train.epochs, loss)

    params, stats = train_loop(apply, variables["params"], stats, data, tx, epochs=train.epochs,
                               batch_size=batch, seed=seed, augment=train.augment,
                               checkpoint=checkpoint, on_epoch=on_epoch)  # fmt: skip
    return {"params": params, **stats}


def network(model, variables, example, apply_kwargs=None, output_fn=None, name=None):
    """The front end that fits ``model``: NNX for an ``nnx.Module``, else linen."""
    from flax import nnx

    if isinstance(model, nnx.Module):
        from autocomp.models.nnx import NnxNetwork

        return NnxNetwork(model, example, dict(apply_kwargs or {}), output_fn, name or "")
    return LinenNetwork(model, variables, example, apply_kwargs or {}, output_fn, name or "")


def compressed_model(net, aux, techniques, plan):
    """A plan materialized on a user's model (:class:`autocomp.models.materialized.Compressed`)."""
    if isinstance(net, LinenNetwork):
        from autocomp.models.linen import compressed

        return compressed(net, aux, techniques, plan)
    from autocomp.models.nnx import compressed

    return compressed(net, aux, techniques, plan)


@dataclass
class SearchSetup:
    """What a search of a user's model runs on (see :func:`search_setup`)."""

    space: object
    aux: dict
    env: object
    env_params: object
    base_val: float


def search_setup(net, data: Dataset, config, profile, techniques, ctx, env_cls) -> SearchSetup:
    """The priced search space of ``net`` (its layers and every op between them), the
    techniques' precomputations, and the environment (``env_cls``, the entry point's
    ``CompressionEnv``: the core does not import the environment) with its params on the
    validation split."""
    from autocomp.search.plan import prepare_aux
    from autocomp.search.reward import make_reward_params
    from autocomp.search.space import build_search_space

    shape = data.x_train.shape[1:]
    space = build_search_space((), net.layers, techniques, tuple(config.env.ratios), profile,
                               shape, net.graph_priced(), net.num_groups)  # fmt: skip
    base_params = net.base_params()
    aux = prepare_aux(net.layers, base_params, techniques, ctx, net, data.x_train)
    n_val = config.env.val_examples or len(data.x_val)
    x_val, y_val = data.x_val[:n_val], data.y_val[:n_val]
    base_val = accuracy(net.forward, base_params, x_val, y_val)
    reward = make_reward_params(config.reward, tuple(space.base[:3]), base_val)
    env = env_cls(net, space, config.env.race.spec, config.env.stat_correction)
    params = env.make_params(base_params, aux, x_val, y_val, reward, data.x_train)
    env_params = shard_env_params(params)
    return SearchSetup(space, aux, env, env_params, base_val)


def random_network(config, data: Dataset | None = None):
    """The configured model (``model._target_``) with random weights, as autocomp sees it,
    and its data: what latency depends on (profiling, cost checks), without training."""
    from autocomp.data import load_dataset

    data = data if data is not None else load_dataset(config.data)
    model = build_model(config.model)
    example = data.x_train[:1]
    variables = model.init(jax.random.key(config.seed), example, **dict(config.model.apply_kwargs))
    kwargs = dict(config.model.apply_kwargs)
    net = network(model, variables, example, kwargs, output_fn(config.model), config.model.name)
    return net, data


def trained_network(config, data: Dataset | None = None):
    """:func:`random_network` with the trained weights a run would compress (``model.checkpoint``,
    or the cached base model, trained first where there is none)."""
    from autocomp.data import load_dataset

    data = data if data is not None else load_dataset(config.data)
    model, variables, _ = base_variables(config, data, None)
    m = config.model
    net = network(model, variables, data.x_train[:1], dict(m.apply_kwargs), output_fn(m), m.name)
    return net, data


def load_or_train(model, cfg: ModelConfig, data: Dataset, train: TrainConfig, seed: int,
                  checkpoint: Path | None = None) -> dict:  # fmt: skip
    if cfg.checkpoint:
        return load_checkpoint(cfg.checkpoint, template(model, cfg, data.x_train[:1]))
    log.info(
        "model.checkpoint is empty: training %s for %d epochs first", cfg._target_, train.epochs
    )
    return train_base(model, cfg, data, train, seed, checkpoint)


def save_checkpoint(path: Path, variables: dict) -> None:
    """An orbax checkpoint of ``variables``, complete or absent (written beside, then moved)."""
    import shutil

    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    partial = path.with_name(path.name + ".partial")
    primary = writes_here(path) and is_writer()  # process 0, orbax's primary host, writes it
    if primary:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(partial, variables)  # every process takes part
    checkpointer.wait_until_finished()
    if primary:
        partial.rename(path)
    barrier("base checkpoint saved")


def cached_base(config, data: Dataset) -> Path:
    """Where a base model trained by autocomp is cached, shared by every run of the same
    model, data, seed and ``base`` settings (as a built-in model's)."""
    from autocomp.training.loop import base_cache_path

    name = config.model.name or config.model._target_.rpartition(".")[2]
    return base_cache_path(config.model, data, config.seed, config.base, name)


def _convert_op_list_base(config, data: Dataset, like: dict, cache: Path) -> None:
    """A built-in model's base trained by an older autocomp as an op list (``model.layers``,
    cached under another key) becomes this cache entry, where its params fit the module's
    (the sequential models without batch norm; folded batch norms do not, and train again)."""
    import dataclasses

    from autocomp.training.loop import base_cache_path

    if not config.model.layers:
        return
    op_list = dataclasses.replace(config.model, _target_="", kwargs={})
    old = base_cache_path(op_list, data, config.seed, config.base)
    if not old.is_dir() or set(like) != {"params"}:
        return
    try:
        params = load_checkpoint(str(old), like["params"])
    except ModelError as err:
        log.info("the op-list base model %s does not fit %s (%s): training it", old,
                 config.model._target_, err)  # fmt: skip
        return
    log.info("converting the cached op-list base model %s once, to %s", old, cache)
    save_checkpoint(cache, {"params": params})


def base_variables(config, data: Dataset, run_dir: Path | None) -> tuple[object, dict, str]:
    """(model, trained variables, checkpoint they are in): ``model.checkpoint``, else the base
    model this run directory holds (a resumed run), else the cached one of an earlier run
    with the same settings (:func:`cached_base`), else one trained now (resumable per
    epoch) and cached; the last two are kept in ``<run_dir>/base_checkpoint`` too (where
    ``run_dir`` is given), so the run directory stands on its own."""
    model = build_model(config.model)
    if config.model.checkpoint:
        variables = load_or_train(model, config.model, data, config.base, config.seed)
        return model, variables, str(Path(config.model.checkpoint).expanduser().resolve())
    cache = cached_base(config, data)
    saved = Path(run_dir) / "base_checkpoint" if run_dir is not None else None
    like = template(model, config.model, data.x_train[:1])
    if saved is not None and saved.is_dir():
        log.info("reusing the base model this run trained (%s)", saved)
        return model, load_checkpoint(str(saved), like), str(saved.resolve())
    if not cache.is_dir():
        _convert_op_list_base(config, data, like, cache)
    if cache.is_dir():
        log.info("loading cached base model %s", cache)
        variables = load_checkpoint(str(cache), like)
    else:
        training = cache.with_name(cache.name + ".training.msgpack")
        variables = load_or_train(model, config.model, data, config.base, config.seed, training)
        save_checkpoint(cache, variables)
        if is_writer():
            training.unlink(missing_ok=True)
        log.info("cached base model at %s", cache)
    if saved is None:
        return model, variables, str(cache.resolve())
    save_checkpoint(saved, variables)
    return model, variables, str(saved.resolve())


def predict(fn: Callable, params, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """``fn(params, x)`` over ``x`` in batches, as numpy."""
    from autocomp.training.loop import predict_with

    return predict_with(jax.jit(fn), params, x, batch)


def accuracy(fn: Callable, params, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of :func:`predict` on ``x`` against labels ``y``."""
    return float(np.mean(predict(fn, params, x).argmax(-1) == y))


def finetune(net, cmp, data: Dataset, cfg, seed: int, base_params, on_epoch=None,
             checkpoint=None):  # fmt: skip
    """Knowledge distillation from the original model into the compressed one (Hinton et
    al., 2015) in :func:`autocomp.training.loop.train_loop`; batch statistics stay as they
    are, sparsity masks are kept; ``on_epoch(epoch, loss)`` after each epoch; with
    ``checkpoint``, resumable after every epoch. Returns the trained params."""
    import jax.numpy as jnp

    from autocomp.models.materialized import keep_masks
    from autocomp.training.loop import make_optimizer, train_loop

    if cfg.epochs == 0:
        return cmp.params
    batch = min(cfg.batch_size, len(data.x_train))
    tx = make_optimizer("adamw", cfg.learning_rate, 0.0,
                        cfg.epochs * max(1, len(data.x_train) // batch))  # fmt: skip
    masks = {k: jnp.asarray(m) for k, m in cmp.masks.items()}
    params, _ = train_loop(
        lambda p, stats, x: (cmp.logits(p, x), stats), cmp.params, {}, data, tx,
        epochs=cfg.epochs, batch_size=batch, seed=seed, augment=cfg.augment,
        teacher=(net.forward, base_params), temperature=cfg.temperature, alpha=cfg.alpha,
        keep=lambda p: keep_masks(p, masks), checkpoint=checkpoint, on_epoch=on_epoch,
    )  # fmt: skip
    return params
