"""The steps of a run, as library functions. ``autocomp.train`` injects the environment and the
agent (autocomp never imports ``envs`` or ``agents``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from autocomp.config import DataConfig, RootConfig
from autocomp.data import Dataset, load_dataset
from autocomp.devices.costs import price_ops, price_ops_int8, source_shares
from autocomp.devices.tables import DeviceProfile, load_profile
from autocomp.models.layers import LayerInfo, compressible_layers
from autocomp.models.ops import Op, base_ops
from autocomp.search.pareto import pareto_front
from autocomp.search.plan import LayerChoice, Plan, materialize, plan_from_indices, prepare_aux
from autocomp.search.reward import RewardParams, make_reward_params
from autocomp.search.space import CHANNELS, SearchSpace, build_search_space, plan_bins, plan_cost
from autocomp.search.spaces import EPISODE_KEYS
from autocomp.techniques import PrepareContext, Technique, make_techniques
from autocomp.training.loop import accuracy, cache_root, finetune, predict, train_base

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """Everything a search needs, built before it starts."""

    config: RootConfig
    data: Dataset
    ops: tuple[Op, ...]
    layers: tuple[LayerInfo, ...]
    techniques: tuple[Technique, ...]
    profile: DeviceProfile
    space: SearchSpace
    base_params: dict
    aux: tuple[dict, ...]
    base_val_accuracy: float
    base_test_accuracy: float
    reward: RewardParams
    base_from_cache: bool


def validate(config: RootConfig) -> tuple[DeviceProfile, tuple[Technique, ...]]:
    """Checks that need files or registries, run before anything is trained or written."""
    return load_profile(config.device.profile), make_techniques(config.env.techniques)


def prepare(config: RootConfig, on_epoch=None) -> Prepared:
    """Load data, train (or load) the base model, and build the priced search space."""
    profile, techniques = validate(config)
    data = load_dataset(config.data)
    ops = base_ops(config.model)
    input_shape = data.x_train.shape[1:]
    params, cached = train_base(config.model, ops, data, config.base, config.seed, on_epoch)
    layers = compressible_layers(ops, input_shape)
    space = build_search_space(ops, layers, techniques, config.env.ratios, profile, input_shape)
    n_val = config.env.val_examples or len(data.x_val)
    val_acc = accuracy(ops, params, data.x_val[:n_val], data.y_val[:n_val])
    reward = make_reward_params(config.reward, tuple(space.base[:3]), val_acc)
    return Prepared(
        config=config,
        data=data,
        ops=ops,
        layers=layers,
        techniques=techniques,
        profile=profile,
        space=space,
        base_params=params,
        aux=prepare_aux(layers, params, techniques, prepare_context(config), ops, data.x_train),
        base_val_accuracy=val_acc,
        base_test_accuracy=accuracy(ops, params, data.x_test, data.y_test),
        reward=reward,
        base_from_cache=cached,
    )


def prepare_context(config: RootConfig) -> PrepareContext:
    """Ratio bins and distillation settings of a run (distilled layers cached beside the base
    models)."""
    return PrepareContext(
        ratios=tuple(config.env.ratios),
        distill=config.env.distill,
        cache_dir=cache_root(config.base) / "distill",
        seed=config.seed,
    )


def merge_history(history: dict[str, np.ndarray] | None, chunk: dict) -> dict[str, np.ndarray]:
    """Append a chunk's per-episode records ([U, B, ...] flattened to [U*B, ...])."""
    flat = {k: np.asarray(chunk[k]).reshape(-1, *np.shape(chunk[k])[2:]) for k in EPISODE_KEYS}
    if history is None:
        return flat
    return {k: np.concatenate([history[k], flat[k]]) for k in EPISODE_KEYS}


@dataclass(frozen=True)
class Selection:
    """The unique evaluated plans, their Pareto front and the chosen one."""

    plans: np.ndarray
    reward: np.ndarray
    accuracy: np.ndarray
    costs: np.ndarray  # [N, 5] CHANNELS
    violation: np.ndarray
    front: np.ndarray
    chosen: int


def select(prepared: Prepared, history: dict[str, np.ndarray], rescore=None) -> Selection:
    """Deduplicate evaluated plans, find the Pareto front, pick the best plan within budgets."""
    return select_plans(prepared.space, history, rescore)


def select_plans(
    space: SearchSpace,
    history: dict[str, np.ndarray],
    rescore: Callable[[np.ndarray], dict] | None = None,
    batch: int = 16,
) -> Selection:
    """:func:`select` for any model's search space. ``rescore(plans int[B, L, 2])`` (after a
    raced search: the environment's whole-split ``evaluate_plans``) re-scores, ``batch`` plans
    at a time, the best in-budget plans and the accuracy-latency front until the chosen plan
    and that front have exact scores."""
    flat = history["plan"].reshape(len(history["plan"]), -1)
    _, first = np.unique(flat, axis=0, return_index=True)
    first = np.sort(first)
    plans = history["plan"][first]
    costs = np.stack([plan_cost(space, p) for p in plans])
    reward, acc = history["reward"][first], history["accuracy"][first]
    violation = history["violation"][first]
    candidates = np.flatnonzero(~violation)
    if len(candidates) == 0:
        log.warning("no evaluated plan meets the budgets; choosing the best-reward plan anyway")
        candidates = np.arange(len(plans))
    if rescore is not None:
        reward, acc = _settle(plans, costs, reward, acc, candidates, rescore, batch)
    front = pareto_front(acc, costs[:, :3])
    chosen = int(candidates[np.argmax(reward[candidates])])
    return Selection(plans, reward, acc, costs, violation, front, chosen)


def _settle(plans, costs, reward, acc, candidates, rescore, batch: int):
    """Re-score plans until the best candidate and the accuracy-latency front are exact; each
    round scores the ones still estimated, topped up with the next best candidates."""
    reward, acc = reward.astype(np.float64), acc.astype(np.float64)
    exact = np.zeros(len(plans), bool)
    while True:
        chosen = candidates[np.argmax(reward[candidates])]
        need = np.union1d(pareto_front(acc, costs[:, :1]), [chosen])
        need = need[~exact[need]]
        if len(need) == 0:
            log.info("racing: %d plans re-scored on the whole validation split", exact.sum())
            return reward, acc
        order = candidates[np.argsort(-reward[candidates], kind="stable")]
        extra = order[~exact[order] & ~np.isin(order, need)]
        todo = np.concatenate([need, extra[: -len(need) % batch]])
        padded = np.concatenate([todo, np.full(-len(todo) % batch, todo[-1])])
        for i in range(0, len(padded), batch):
            out = rescore(plans[padded[i : i + batch]])
            reward[padded[i : i + batch]] = np.asarray(out["reward"])
            acc[padded[i : i + batch]] = np.asarray(out["accuracy"])
        exact[todo] = True


def short_finetune(p: Prepared, c: Compressed, examples: int) -> float:
    """Validation accuracy of a compressed model after one distillation pass over the first
    ``examples`` training images (the experiment's other fine-tuning settings)."""
    cfg = dataclasses.replace(p.config.finetune, epochs=1)
    data = p.data._replace(x_train=p.data.x_train[:examples], y_train=p.data.y_train[:examples])
    brief = dataclasses.replace(p, config=dataclasses.replace(p.config, finetune=cfg), data=data)
    return accuracy(c.ops, distil(brief, c), p.data.x_val, p.data.y_val)


def rerank(p: Prepared, sel: Selection, simulated_logits) -> tuple[Selection, list[dict]]:
    """Choose among the best ``finetune.rerank`` in-budget plans (by reward) by their
    validation accuracy after a short fine-tuning (:func:`short_finetune` of
    ``finetune.rerank_examples`` images); ``simulated_logits(indices)`` gives a plan's simulated
    ``x -> logits``. Returns the selection with its new choice and a row per candidate."""
    cfg = p.config.finetune

    def short(indices) -> float:
        return short_finetune(p, compress(p, indices, simulated_logits(indices)),
                              cfg.rerank_examples)  # fmt: skip

    return rerank_plans(sel, cfg.rerank, short)


def rerank_plans(sel: Selection, k: int, short: Callable) -> tuple[Selection, list[dict]]:
    """:func:`rerank` for any model: ``short(indices) -> validation accuracy`` after a short
    fine-tuning of that plan, for each of the ``k`` best in-budget plans by reward."""
    candidates = np.flatnonzero(~sel.violation)
    if len(candidates) == 0:
        candidates = np.arange(len(sel.plans))
    candidates = candidates[np.argsort(-sel.reward[candidates], kind="stable")][:k]
    rows = []
    for i in candidates:
        score = short(sel.plans[i])
        row = {"plan": int(i), "reward": float(sel.reward[i]), "short_finetune_val_accuracy": score}
        rows.append({**row, "val_accuracy": float(sel.accuracy[i])})
        log.info(
            "re-rank %d/%d: reward %.4f, val accuracy %.4f, after a short fine-tuning %.4f",
            len(rows), len(candidates), sel.reward[i], sel.accuracy[i], score,
        )  # fmt: skip
    best = max(rows, key=lambda r: r["short_finetune_val_accuracy"])["plan"]
    return dataclasses.replace(sel, chosen=best), rows


@dataclass(frozen=True)
class Compressed:
    plan: Plan
    ops: tuple[Op, ...]
    params: dict
    masks: dict[str, np.ndarray]
    check: dict[str, float]


def compress(prepared: Prepared, indices: np.ndarray, simulated_logits) -> Compressed:
    """Materialize a plan and check that it reproduces the simulated model's predictions."""
    p = prepared
    ratios = p.config.env.ratios
    plan = plan_from_indices(p.config.model.name, p.layers, p.techniques, ratios, indices)
    ops, params, masks = materialize(p.ops, p.layers, p.base_params, p.aux, p.techniques, plan)
    x_val = p.data.x_val
    real = predict(ops, params, x_val)
    sim = np.asarray(simulated_logits(x_val))
    check = {
        "max_abs_logit_diff": float(np.abs(real - sim).max()),
        "prediction_agreement": float(np.mean(real.argmax(-1) == sim.argmax(-1))),
        "simulated_val_accuracy": float(np.mean(sim.argmax(-1) == p.data.y_val)),
        "materialized_val_accuracy": float(np.mean(real.argmax(-1) == p.data.y_val)),
    }
    scale = float(np.abs(sim).max()) + 1.0
    if check["max_abs_logit_diff"] > 1e-3 * scale:
        raise RuntimeError(f"materialized model disagrees with its simulation: {check}")
    return Compressed(_annotate(p, plan, indices, params), ops, params, masks, check)


def _annotate(p: Prepared, plan: Plan, indices: np.ndarray, params: dict) -> Plan:
    """Fill each layer's resulting shapes and its cost-table row into the plan."""
    layers, bins = [], plan_bins(p.space, indices)
    for layer, choice, (t, r) in zip(p.layers, plan.layers, indices, strict=True):
        row = p.space.costs[layer.index, t, r, bins[layer.index]]
        shapes = [  # every kernel of the layer's ops (a fire module's expand has two)
            list(np.shape(a))
            for k, v in params.items()
            if k == layer.name or k.startswith(f"{layer.name}_")
            for name, a in sorted(v.items())
            if name.startswith("kernel")
        ]
        layers.append(
            LayerChoice(
                choice.name,
                choice.technique,
                choice.ratio,
                shapes,
                float(row[0]),
                float(row[1]),
                int(row[3]),
                int(row[2]),
            )
        )
    return Plan(plan.model, tuple(layers))


def model_metrics(
    p: Prepared, ops: tuple[Op, ...], params: dict, test_accuracy: float
) -> dict[str, Any]:
    """Exact counts and device-table costs of a deployed model."""
    cost = price_ops(p.profile, ops, p.data.x_train.shape[1:])
    return {
        "test_accuracy": test_accuracy,
        "params": int(cost.params),
        "bytes": int(cost.bytes),
        "macs": int(cost.macs),
        "latency_ms": float(cost.latency_ms),
        # the whole model as model_int8.tflite runs it, from the table's int8 column (or None)
        "latency_int8_ms": price_ops_int8(p.profile, ops, p.data.x_train.shape[1:]),
        "energy_mj": float(cost.energy_mj),
        "cost_sources": cost.sources,
        "stored_scalars": int(sum(np.size(x) for x in jax.tree.leaves(params))),
    }


def finetune_compressed(
    p: Prepared, c: Compressed, on_epoch=None, checkpoint: Path | None = None
) -> tuple[dict, float]:
    """Distil the base model into the compressed one (resumable with ``checkpoint``); returns
    (params, test accuracy)."""
    params = distil(p, c, on_epoch, checkpoint)
    return params, accuracy(c.ops, params, p.data.x_test, p.data.y_test)


def distil(p: Prepared, c: Compressed, on_epoch=None, checkpoint: Path | None = None) -> dict:
    """The compressed model's params after the run's distillation from the base model."""
    teacher = (p.ops, p.base_params)
    return finetune(
        c.ops, c.params, c.masks, p.data, p.config.finetune, teacher, p.config.seed, on_epoch,
        checkpoint,
    )  # fmt: skip


def plan_logits(env, env_params):
    """``plan -> (x -> logits)``: the environment's simulated model of a plan, one compiled
    function for every plan (what :func:`compress` checks a materialized model against)."""
    logits = jax.jit(lambda plan, x: env.logits(plan, env_params, x, correct=False))
    return lambda plan: lambda x: logits(plan, x)


def ratios_of(base: dict, compressed: dict) -> dict[str, float]:
    """How many times smaller/faster the compressed model is, and the accuracy drop."""
    out = {
        f"{k}_x": base[k] / max(compressed[k], 1e-12)
        for k in ("params", "bytes", "macs", "latency_ms", "energy_mj")
    }
    out["accuracy_drop_points"] = 100 * (base["test_accuracy"] - compressed["test_accuracy"])
    return out


def history_table(names, ratios, sel: Selection) -> tuple[list[str], list[list[Any]]]:
    """Front plans as table rows for trackers (``names``: the techniques' names)."""
    rows = []
    for i in sel.front:
        plan = " ".join(f"{names[t]}@{ratios[r]:g}" for t, r in sel.plans[i])
        rows.append(
            [plan, float(sel.accuracy[i]), *map(float, sel.costs[i][:3]), float(sel.reward[i])]
        )
    return ["plan", "val_accuracy", *CHANNELS[:3], "reward"], rows


def recorded_data(record: dict) -> DataConfig:
    """The data config of a finished run (``run.json``); a relative path that does not exist
    from here is taken relative to where the run was started (``cwd``)."""
    data_cfg = DataConfig(**record["config"]["data"])
    if data_cfg.path and not Path(data_cfg.path).is_absolute() and "cwd" in record:
        recorded = Path(record["cwd"]) / data_cfg.path
        if not Path(data_cfg.path).exists() and recorded.exists():
            data_cfg.path = str(recorded)
    return data_cfg


def run_paths(run_dir: Path) -> dict[str, Path]:
    return {
        "plan": run_dir / "plan.json",
        "metrics": run_dir / "metrics.json",
        "params": run_dir / "compressed_params.msgpack",
        "pareto": run_dir / "pareto.png",
        "checkpoint": run_dir / "checkpoint" / "search.msgpack",
        "finetune": run_dir / "checkpoint" / "finetune.msgpack",
        "run": run_dir / "run.json",
    }


def device_table_record(profile: DeviceProfile, cost_sources: dict[str, int]) -> dict:
    """Which device table priced a run, as ``metrics.json`` records it."""
    return {
        "name": profile.name,
        "kind": profile.kind,
        "platform": profile.platform,
        "path": profile.path,
        "search_space_sources": source_shares(cost_sources),
        "energy": profile.energy["method"],
    }
