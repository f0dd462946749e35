"""A run of a user's own Flax model: :func:`compress` from Python, :func:`run_custom` for
``python -m autocomp.train model._target_=...``. Search with the configured agent in the
compression environment, materialize the chosen plan on the user's model, fine-tune it by
distillation from the original, report and (``export=true``) export."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents import AGENTS
from autocomp.config import RootConfig
from autocomp.data import Dataset, load_dataset
from autocomp.devices.costs import format_shares
from autocomp.export import write_model_card
from autocomp.export.verify import summary
from autocomp.io import atomic_write_json, git_sha
from autocomp.models.materialized import Compressed, leaf_names
from autocomp.run.compose import compose
from autocomp.run.result import Result
from autocomp.search.joint import joint_settings, joint_trainer
from autocomp.search.loop import config_fingerprint, run_search
from autocomp.search.plan import LayerChoice, Plan, plan_from_indices
from autocomp.search.reward import budgets_record
from autocomp.search.space import CHANNELS, build_search_space, plan_bins, plan_cost
from autocomp.sharding import host_value
from autocomp.workflow.custom import (
    accuracy,
    base_variables,
    compressed_model,
    finetune,
    network,
    predict,
    search_setup,
)
from autocomp.workflow.custom import output_fn as model_output_fn
from autocomp.workflow.pipeline import (
    device_table_record,
    history_table,
    merge_history,
    prepare_context,
    rerank_plans,
    run_paths,
    select_plans,
    validate,
)
from autocomp.workflow.report import EpochBar, print_report
from autocomp.workflow.tracking import NullTracker, make_tracker, track_run
from envs.compression import CompressionEnv

log = logging.getLogger(__name__)


def compress(
    model,
    variables: Mapping,
    data: Dataset,
    overrides: Sequence[str] = (),
    apply_kwargs: Mapping | None = None,
    output_fn: Callable | None = None,
    name: str | None = None,
    show_progress: bool = False,
) -> Result:
    """Search a per-layer compression plan for a user's trained linen model, materialize it
    into a really smaller linen model and fine-tune it by distillation from the original.

    Args:
        model: the ``flax.linen`` module.
        variables: its trained variables (``{"params": ..., "batch_stats": ...}``).
        data: :func:`autocomp.data.arrays` (or any :class:`autocomp.data.Dataset`).
        overrides: Hydra overrides as for ``python -m autocomp.train`` (``agent.episodes=256``,
            ``reward.max_latency_frac=0.3``, ``device=analytic_cortex_a76``, ...).
        apply_kwargs: keyword arguments of ``model.apply`` at inference (``train=False``).
        output_fn: maps the model's output to logits (``lambda out: out.logits``).
        name: the model's name in the plan.
        show_progress: progress bars for the search and the fine-tuning.
    """
    config = compose(overrides)
    return compress_config(
        model, variables, data, config, apply_kwargs, output_fn, name, show_progress
    )


def compress_config(
    model,
    variables: Mapping,
    data: Dataset,
    config: RootConfig,
    apply_kwargs: Mapping | None = None,
    output_fn: Callable | None = None,
    name: str | None = None,
    show_progress: bool = False,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    tracker: NullTracker | None = None,
) -> Result:
    """:func:`compress` with a composed config (the CLI's path for ``model._target_``);
    ``checkpoint``: where the search saves itself after every chunk and resumes from;
    ``tracker``: where the search logs its progress (wandb in a CLI run)."""
    started = time.perf_counter()
    st = setup(model, variables, data, config, apply_kwargs, output_fn, name)
    state, history, timings = run_search(
        st.trainer, st.env_params, jax.random.key(config.seed), tracker or NullTracker(),
        checkpoint, fingerprint, show_progress,
    )  # fmt: skip
    resume = checkpoint.with_name("finetune.msgpack") if checkpoint is not None else None
    return finish(st, data, config, st.env_params, state, history, timings, show_progress, started,
                  resume)  # fmt: skip


class Setup(NamedTuple):
    """What a search of a user's model and its finish share."""

    net: object
    profile: object
    techniques: tuple
    space: object
    aux: object
    env: CompressionEnv
    env_params: object
    base_val: float
    trainer: object


def setup(model, variables, data, config, apply_kwargs=None, output_fn=None, name=None) -> Setup:
    """The user's model as autocomp sees it, its priced search space, the environment with its
    params on the validation split, and the configured agent's trainer."""
    profile, techniques = validate(config)
    net = network(model, variables, data.x_train[:1], apply_kwargs, output_fn, name)
    s = search_setup(net, data, config, profile, techniques, prepare_context(config),
                     CompressionEnv)  # fmt: skip
    log.info("base model %s: val %.4f", net.name, s.base_val)
    log.info("device table: %s; search space priced by %s", profile.describe(),
             format_shares(s.space.cost_sources))  # fmt: skip
    trainer = search_trainer(config.agent, s.env, s.env_params, net, data)
    return Setup(net, profile, techniques, s.space, s.aux, s.env, s.env_params, s.base_val,
                 trainer)  # fmt: skip


def search_trainer(agent_config, env, env_params, net, data: Dataset):
    """The configured agent's trainer on ``env``, wrapped for DeepIoT's joint fine-tuning of
    the network's weights where ``agent.joint_finetune`` asks for it."""
    trainer = AGENTS[agent_config.name].make_trainer(agent_config, env)
    joint = joint_settings(agent_config)
    if joint is None:
        return trainer
    log.info("joint fine-tuning: %d Adam steps of the weights per chunk (lr %g, batch %d)",
             *joint)  # fmt: skip
    return joint_trainer(trainer, env.logits, env_params.base_params,
                         net.trainable(env_params.base_params), joint, data.x_train,
                         data.y_train)  # fmt: skip


def finish(st: Setup, data, config, env_params, state, history, timings, show_progress,
           started, finetune_checkpoint: Path | None = None) -> Result:  # fmt: skip
    """After the search (``env_params`` carry its reward): the policy's plan scored and added,
    selection, materialization and its check, fine-tuning (resumable with
    ``finetune_checkpoint``), and both models' metrics. After a joint search
    (:mod:`autocomp.search.joint`) the candidates are re-scored under the tuned weights and
    the plan is materialized from them; the teacher is the original model either way."""
    net, space, env, ratios = st.net, st.space, st.env, tuple(config.env.ratios)
    base_params = net.base_params()
    joint = joint_settings(config.agent)
    env_params = st.trainer.scored_params(state, env_params)
    source = (
        net
        if joint is None
        else net.with_base_params(jax.tree.map(host_value, env_params.base_params))
    )
    greedy = st.trainer.policy(state, env_params)
    greedy_hist = jax.device_get(env.evaluate_plans(greedy[None], env_params))
    history = merge_history(history, {k: v[None] for k, v in greedy_hist.items()})
    sel = select_plans(space, history, env.full_scorer(env_params, always=joint is not None))
    reranked = _rerank(st, data, config, sel, source) if config.finetune.rerank > 0 else None
    if reranked:
        sel = reranked[0]
    indices = sel.plans[sel.chosen]
    plan = plan_from_indices(net.name, net.layers, st.techniques, ratios, indices)
    cmp = compressed_model(source, st.aux, st.techniques, plan)
    plan = _annotate(space, plan, indices, cmp, net)
    check = _check(cmp, env, env_params, indices, host_value(env_params.x_val))

    with EpochBar("fine-tune", config.finetune.epochs, show_progress) as bar:
        params = finetune(net, cmp, data, config.finetune, config.seed, base_params, bar.callback,
                          finetune_checkpoint)  # fmt: skip
    small, small_variables = cmp.build(params)
    front = history_table([t.name for t in st.techniques], ratios, sel)
    result = Result(plan, {}, small, small_variables, net, cmp, params, sel, front)
    base_logits = predict(net.forward, base_params, data.x_test)
    base_test = float(np.mean(base_logits.argmax(-1) == data.y_test))
    test = float(np.mean(result.logits(data.x_test).argmax(-1) == data.y_test))
    base = _costs(space.base) | {"test_accuracy": base_test, "val_accuracy": st.base_val,
                                 "stored_scalars": _scalars(base_params)}  # fmt: skip
    compressed = _costs(plan_cost(space, indices)) | {
        "test_accuracy": test,
        "stored_scalars": _scalars(params),
        "val_accuracy_before_finetune": float(sel.accuracy[sel.chosen]),
        "reward": float(sel.reward[sel.chosen]),
    }
    _int8_latency(base, compressed, st.profile, net, st.techniques, ratios, data, indices)
    result.metrics = {
        "model": net.name,
        "base": base,
        "compressed": compressed,
        "ratios": {
            f"{k}_x": base[k] / max(compressed[k], 1e-12)
            for k in ("params", "bytes", "macs", "latency_ms", "energy_mj")
        }
        | {"accuracy_drop_points": 100 * (base_test - test)},
        "materialize_check": check,
        "search": {
            "episodes": int(len(history["reward"])),
            "unique_plans": int(len(sel.plans)),
            **timings,
            "budgets": budgets_record(host_value(env_params.reward.budgets)),
        }
        | ({"joint_finetune": joint._asdict()} if joint is not None else {}),
        "device_table": device_table_record(st.profile, space.cost_sources),
        "wall_time_s": time.perf_counter() - started,
    }
    if reranked:
        result.metrics["search"]["rerank"] = reranked[1]
    return result


def _rerank(st: Setup, data: Dataset, config: RootConfig, sel, source=None):
    """The ``finetune.rerank`` best in-budget plans, each scored by :func:`short_accuracy` on
    the first ``finetune.rerank_examples`` training images, then chosen among by it
    (:func:`autocomp.workflow.pipeline.rerank_plans`)."""
    n = config.finetune.rerank_examples
    return rerank_plans(
        sel, config.finetune.rerank, lambda i: short_accuracy(st, data, config, i, n, source)
    )


def tuned_params(st: Setup, data: Dataset, config: RootConfig, indices, epochs=None, source=None):
    """A plan materialized on the model (``source``: the same network with other weights, a
    joint search's) and distilled from the original (``finetune``, or ``epochs`` of it)."""
    ratios, cfg = tuple(config.env.ratios), config.finetune
    cfg = cfg if epochs is None else dataclasses.replace(cfg, epochs=epochs)
    plan = plan_from_indices(st.net.name, st.net.layers, st.techniques, ratios, indices)
    cmp = compressed_model(source or st.net, st.aux, st.techniques, plan)
    return cmp, finetune(st.net, cmp, data, cfg, config.seed, st.net.base_params())


def short_accuracy(st: Setup, data: Dataset, config: RootConfig, indices, examples: int,
                   source=None) -> float:  # fmt: skip
    """Validation accuracy of a plan after one distillation epoch over the first ``examples``
    training images (the experiment's other fine-tuning settings)."""
    subset = data._replace(x_train=data.x_train[:examples], y_train=data.y_train[:examples])
    cmp, params = tuned_params(st, subset, config, indices, 1, source)
    return accuracy(cmp.logits, params, data.x_val, data.y_val)


def tuned_accuracy(st: Setup, data: Dataset, config: RootConfig, indices, source=None) -> float:
    """Test accuracy of a plan after the experiment's fine-tuning."""
    cmp, params = tuned_params(st, data, config, indices, source=source)
    return accuracy(cmp.logits, params, data.x_test, data.y_test)


def _int8_latency(base, compressed, profile, net, techniques, ratios, data, indices) -> None:
    """``latency_int8_ms`` of both models: the same space priced as ``model_int8.tflite`` runs,
    where the device table has int8 rows."""
    int8 = profile.int8_table
    if int8 is not None:
        shape, graph = data.x_train.shape[1:], net.graph_priced()
        space8 = build_search_space((), net.layers, techniques, ratios, int8, shape, graph,
                                    net.num_groups)  # fmt: skip
        base["latency_int8_ms"] = float(space8.base[0])
        compressed["latency_int8_ms"] = float(plan_cost(space8, indices)[0])


def _annotate(space, plan: Plan, indices, cmp: Compressed, net) -> Plan:
    """Each layer's resulting kernel shapes and cost-table row, as a CLI run's plan has."""
    shapes = {
        leaf_names(path): list(np.shape(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(cmp.params)
    }
    bins = plan_bins(space, indices)
    layers = []
    for layer, choice, (t, r) in zip(net.layers, plan.layers, indices, strict=True):
        row = space.costs[layer.index, t, r, bins[layer.index]]
        path = tuple(map(str, net.by_path_of(layer)))
        kernels = [
            shapes[key]
            for op in cmp.ops[layer.name]
            if (key := (*path, str(op.name), "kernel")) in shapes
        ]
        layers.append(
            LayerChoice(choice.name, choice.technique, choice.ratio, kernels, float(row[0]),
                        float(row[1]), int(row[3]), int(row[2]))
        )  # fmt: skip
    return Plan(plan.model, tuple(layers))


def run_custom(
    config: RootConfig,
    run_dir: Path,
    resolved: dict,
    show_progress: bool = True,
    overrides: Sequence[str] = (),
):
    """``python -m autocomp.train model._target_=...``: the user's model from config, its
    checkpoint (or one trained here and kept in the run directory), compressed; the run
    directory as :meth:`Result.save` and ``run.json``; the export with ``export=true``. A
    killed run resumes its search (``resume=true``) and reuses the base model it trained.
    With ``sweep.*``, one search for every reward and a run directory for each
    (:func:`autocomp.run.sweep.run_custom_sweep`)."""
    data = load_dataset(config.data)
    model, variables, base_checkpoint = base_variables(config, data, run_dir)
    checkpoint = run_paths(run_dir)["checkpoint"] if config.resume else None
    args = (model, variables, data, config, config.model.apply_kwargs,
            model_output_fn(config.model), config.model.name)  # fmt: skip
    tracker = make_tracker(config.logger, run_dir, resolved, f"{config.name}-seed{config.seed}")
    saved = Saved(data, resolved, tuple(overrides), base_checkpoint)
    if config.sweep.variants(config.reward):
        from autocomp.run.sweep import run_custom_sweep

        return run_custom_sweep(setup(*args), config, run_dir, saved, show_progress, checkpoint,
                                config_fingerprint(resolved), tracker)  # fmt: skip
    result = compress_config(*args, show_progress, checkpoint, config_fingerprint(resolved),
                             tracker)  # fmt: skip
    return save_run(result, config, run_dir, saved, tracker)


class Saved(NamedTuple):
    """What a run directory of a user's model records besides the result."""

    data: Dataset
    resolved: dict
    overrides: tuple[str, ...]
    base_checkpoint: str


def save_run(result: Result, config: RootConfig, run_dir: Path, saved: Saved,
             tracker: NullTracker | None = None) -> dict:  # fmt: skip
    """The run directory (:meth:`Result.save`, ``run.json``, with ``export=true`` the export and
    its model card), the tracker's tables, image and summary, and the report; returns the
    metrics."""
    data = saved.data
    result.save(run_dir)
    record = {
        "git_sha": git_sha(),
        "seed": config.seed,
        "overrides": list(saved.overrides),
        "cwd": os.getcwd(),  # relative paths in the config are relative to it
        "config": saved.resolved,
        "base_checkpoint": saved.base_checkpoint,
        "input_shape": list(data.x_train.shape[1:]),
        "num_classes": int(np.max(data.y_train)) + 1,
    }
    atomic_write_json(run_dir / "run.json", record)
    m = result.metrics
    track_run(tracker or NullTracker(), result.plan.layers, result.front, run_dir / "pareto.png",
              m["base"], m["compressed"])  # fmt: skip
    if config.export:
        result.metrics["export"] = result.export(run_dir / "export", data)
        log.info(summary(run_dir, result.metrics["export"]))
        atomic_write_json(run_dir / "metrics.json", result.metrics)
        write_model_card(run_dir, result.plan, result.metrics, result.metrics["export"], record)
    print_report(result.metrics, result.plan, result.metrics["device_table"]["name"])
    return result.metrics


def _costs(row: np.ndarray) -> dict:
    """A cost row as metrics (counts as ints, as a CLI run reports them)."""
    counts = ("params", "bytes", "macs")
    return {c: int(v) if c in counts else float(v) for c, v in zip(CHANNELS, row, strict=True)}


def _scalars(params) -> int:
    """How many numbers a model's weights store (sparse kernels count their zeros)."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def _check(cmp: Compressed, env, env_params, indices, x) -> dict:
    """The materialized model against the environment's simulation of the plan."""
    sim = host_value(jax.jit(lambda xb: env.logits(jnp.asarray(indices), env_params, xb, False))(x))
    real = predict(cmp.logits, cmp.params, x)
    check = {
        "max_abs_logit_diff": float(np.abs(real - sim).max()),
        "prediction_agreement": float(np.mean(real.argmax(-1) == sim.argmax(-1))),
    }
    if check["max_abs_logit_diff"] > 1e-3 * (float(np.abs(sim).max()) + 1.0):
        raise RuntimeError(
            f"the materialized model disagrees with its simulation ({check}); please report "
            "the model: a channel group was analysed wrongly"
        )
    return check
