"""A run of a built-in model (``experiment=digits|mnist|audio|cifar``): base model, search with
the configured agent in the compression environment, selection, materialization, fine-tuning by
distillation, outputs, tracking and (``export=true``) the phone files."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax

from agents import AGENTS
from autocomp.config import ConfigError, RootConfig
from autocomp.devices.costs import format_shares
from autocomp.export import export_run
from autocomp.export.verify import summary
from autocomp.search.joint import joint_settings
from autocomp.search.loop import config_fingerprint, run_search
from autocomp.search.reward import budgets_record
from autocomp.sharding import shard_env_params
from autocomp.workflow import pipeline
from autocomp.workflow.outputs import write_run
from autocomp.workflow.report import EpochBar, print_report
from autocomp.workflow.tracking import make_tracker, track_run
from envs.compression import CompressionEnv

log = logging.getLogger("autocomp.train")


def build_env(p: pipeline.Prepared):
    if joint_settings(p.config.agent) is not None:
        raise ConfigError(
            "agent.joint_finetune=true needs a Flax module (model._target_, as every built-in "
            "experiment has); an op-list model (model.layers only) searches with frozen weights: "
            "drop agent.joint_finetune"
        )
    env = CompressionEnv(p.ops, p.space, p.config.env.race.spec, p.config.env.stat_correction)
    n_val = p.config.env.val_examples or len(p.data.x_val)
    params = env.make_params(
        p.base_params, p.aux, p.data.x_val[:n_val], p.data.y_val[:n_val], p.reward,
        p.data.x_train,
    )  # fmt: skip
    return env, shard_env_params(params)


def run_builtin(
    config: RootConfig,
    run_dir: Path,
    resolved: dict,
    show_progress: bool = True,
    overrides: Sequence[str] = (),
) -> dict:
    """The whole run of a built-in model; returns the metrics written to
    ``run_dir/metrics.json``. With ``config.export``, the run ends with
    :func:`autocomp.export.export_run`."""
    agent = AGENTS[config.agent.name]
    started = time.perf_counter()
    with EpochBar("base model", config.base.epochs, show_progress) as bar:
        p = pipeline.prepare(config, on_epoch=bar.callback)
    log.info(
        "base model: val %.4f test %.4f (%s)",
        p.base_val_accuracy,
        p.base_test_accuracy,
        "cached" if p.base_from_cache else "trained",
    )
    log.info(
        "device table: %s; search space priced by %s",
        p.profile.describe(),
        format_shares(p.space.cost_sources),
    )
    tracker = make_tracker(config.logger, run_dir, resolved, f"{config.name}-seed{config.seed}")
    env, env_params = build_env(p)
    trainer = agent.make_trainer(config.agent, env)
    checkpoint = pipeline.run_paths(run_dir)["checkpoint"] if config.resume else None
    key, fingerprint = jax.random.key(config.seed), config_fingerprint(resolved)
    if config.sweep.variants(config.reward):
        from autocomp.run.sweep import run_sweep

        return run_sweep(p, env, env_params, trainer, run_dir, resolved, tracker,
                         show_progress, overrides, started)  # fmt: skip
    state, history, timings = run_search(
        trainer, env_params, key, tracker, checkpoint, fingerprint, show_progress
    )
    out = Searched(env, env_params, trainer, state, history, timings)
    return finish(p, out, run_dir, resolved, tracker, show_progress, overrides, started)


class Searched(NamedTuple):
    """A finished search, as :func:`finish` takes it."""

    env: CompressionEnv
    env_params: object
    trainer: object
    state: object
    history: dict
    timings: dict


def finish(p, s: Searched, run_dir, resolved, tracker, show_progress, overrides, started) -> dict:
    """After the search: the policy's plan scored and added, selection, materialization,
    fine-tuning, outputs, tracking, the report and (``export=true``) the phone files."""
    config, env, env_params = p.config, s.env, s.env_params
    greedy = s.trainer.policy(s.state, env_params)
    greedy_hist = jax.device_get(env.evaluate_plans(greedy[None], env_params))
    history = pipeline.merge_history(s.history, {k: v[None] for k, v in greedy_hist.items()})
    sel = pipeline.select(p, history, env.full_scorer(env_params))
    simulated = pipeline.plan_logits(env, env_params)
    reranked = []
    if config.finetune.rerank > 0:
        sel, reranked = pipeline.rerank(p, sel, simulated)
    indices = sel.plans[sel.chosen]
    comp = pipeline.compress(p, indices, simulated(indices))
    resume = pipeline.run_paths(run_dir)["finetune"] if config.resume else None
    with EpochBar("fine-tune (KD)", config.finetune.epochs, show_progress) as bar:
        params, test_acc = pipeline.finetune_compressed(p, comp, bar.callback, resume)
    base = pipeline.model_metrics(p, p.ops, p.base_params, p.base_test_accuracy)
    compressed = pipeline.model_metrics(p, comp.ops, params, test_acc)
    metrics = _metrics(p, sel, comp, base, compressed, history, s.timings, started)
    if reranked:
        metrics["search"]["rerank"] = reranked
    paths = write_run(run_dir, p, sel, comp, params, metrics, resolved, overrides)
    _track(tracker, p, sel, comp, base, compressed, paths["pareto"])
    print_report(metrics, comp.plan, p.profile.name)
    if config.export:
        log.info(summary(run_dir, export_run(run_dir, progress=log.info)))
    return metrics


def _metrics(p, sel, comp, base, compressed, history, timings, started) -> dict:
    """What ``metrics.json`` holds: both models' metrics, their ratios, the materialization
    check, the search's figures and budgets, and which device table priced them."""
    return {
        "base": {**base, "val_accuracy": p.base_val_accuracy},
        "compressed": {
            **compressed,
            "val_accuracy_before_finetune": float(sel.accuracy[sel.chosen]),
            "reward": float(sel.reward[sel.chosen]),
        },
        "ratios": pipeline.ratios_of(base, compressed),
        "materialize_check": comp.check,
        "search": {
            "episodes": int(len(history["reward"])),
            "unique_plans": int(len(sel.plans)),
            "pareto_front": int(len(sel.front)),
            **timings,
            "budgets": budgets_record(p.reward.budgets),
        },
        "device_table": pipeline.device_table_record(p.profile, p.space.cost_sources),
        "wall_time_s": time.perf_counter() - started,
    }


def _track(tracker, p, sel, comp, base, compressed, pareto_png) -> None:
    """The plan, the front and the summary in the run's tracker (wandb)."""
    front = pipeline.history_table([t.name for t in p.techniques], p.config.env.ratios, sel)
    track_run(tracker, comp.plan.layers, front, pareto_png, base, compressed)
