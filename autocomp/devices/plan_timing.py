"""Whole plans of a search space, materialized, converted to TFLite and timed on this host
against a table's prediction: what ``bench costs`` reports and what the profiler fits its
per-op correction on (on other plans: another seed).

Why a correction: a row is the time of a one-op model minus the call overhead of a trivial one;
if an op inside a whole model costs less than that on some host (a per-op share of the call
overhead counted once per op), whole plans come out too slow by about the same amount per op.
The profiler fits that amount, ``per_op_correction_ms``, on whole plans, and the lookup
subtracts it from every op priced from the rows. On this project's 2-core AMD EPYC it is small
(0.17 us per op, digits); most of the error of small plans there was timing drift, which
:func:`time_plans` spreads over all plans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimedPlan:
    name: str
    measured_ms: float
    predicted_ms: float
    row_ops: int | None  # ops priced from the table's rows (None: not counted, a user's model)


def random_plans(space, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct plans, each layer's (technique, ratio bin) uniform over its allowed ones."""
    rng = np.random.default_rng(seed)
    choices = [np.argwhere(space.allowed[l]) for l in range(len(space.layers))]
    total = int(np.prod([len(c) for c in choices], dtype=np.float64).clip(max=1e9))
    plans, seen = [], set()
    while len(plans) < min(n, total):
        plan = np.stack([c[rng.integers(len(c))] for c in choices]).astype(np.int32)
        if plan.tobytes() not in seen:
            seen.add(plan.tobytes())
            plans.append(plan)
    return plans


ROW_SOURCES = ("table", "interpolated", "roofline")


def time_plans(
    config,
    profile,
    n: int,
    seed: int = 0,
    threads: int = 1,
    advance: Callable[[], None] | None = None,
    repeats: int = 3,
) -> tuple[list[TimedPlan], Counter]:
    """``n`` random plans of the experiment's search space timed whole on this host (median of
    ``repeats`` interleaved passes), with the table's prediction; and how many priced ops each
    lookup source answered."""
    import jax

    from autocomp.config import DistillConfig
    from autocomp.devices import mixed
    from autocomp.devices.costs import price_ops
    from autocomp.devices.profiling import time_tflite
    from autocomp.models.layers import compressible_layers
    from autocomp.models.ops import base_ops, init_params
    from autocomp.search.plan import materialize, plan_from_indices, prepare_aux
    from autocomp.search.space import build_search_space
    from autocomp.techniques import PrepareContext, make_techniques

    techniques = make_techniques(config.env.techniques)
    ratios = tuple(config.env.ratios)
    # Latency does not depend on the weights: random ones, replacements without distillation.
    ctx = PrepareContext(ratios, distill=DistillConfig(steps=0, examples=64))
    sources: Counter = Counter()
    if config.model._target_:  # a user's model, every op between its layers priced
        from autocomp.search.space import plan_cost
        from autocomp.workflow.custom import compressed_model, random_network

        net, data = random_network(config)
        shape, layers = tuple(data.x_train.shape[1:]), net.layers
        space = build_search_space((), layers, techniques, ratios, profile, shape,
                                   net.graph_priced(), net.num_groups)  # fmt: skip
        sources.update(space.cost_sources)
        aux = prepare_aux(layers, net.base_params(), techniques, ctx, net, data.x_train[:64])

        def deployed(plan, indices):
            cmp = compressed_model(net, aux, techniques, plan)
            content = mixed.deployed_file(cmp.export_fn(cmp.params), shape, cmp.deployed_ops,
                                          profile)  # fmt: skip
            return content, float(plan_cost(space, indices)[0]), None
    else:
        ops = base_ops(config.model)
        shape = tuple(config.model.input_shape)
        layers = compressible_layers(ops, shape)
        space = build_search_space(ops, layers, techniques, ratios, profile, shape)
        params = init_params(ops, shape, jax.random.key(0))
        x = np.random.default_rng(0).random((64, *shape), np.float32)
        aux = prepare_aux(layers, params, techniques, ctx, ops, x)

        def deployed(plan, indices):
            new_ops, new_params, _ = materialize(ops, layers, params, aux, techniques, plan)
            cost = price_ops(profile, new_ops, shape)
            sources.update(cost.sources)
            row_ops = sum(cost.sources.get(s, 0) for s in ROW_SOURCES)
            content = mixed.deployed_ops_file(new_ops, new_params, shape, profile)
            return content, cost.latency_ms, row_ops

    built = []
    for indices in random_plans(space, n, seed):
        plan = plan_from_indices(config.model.name, layers, techniques, ratios, indices)
        name = " ".join(f"{c.technique}:{c.ratio:g}" for c in plan.layers)
        built.append((name, *deployed(plan, indices)))
        if advance is not None:
            advance()
    # A small model's time drifts by 10-20% over seconds on a shared host (same interpreter,
    # back to back: 0.055-0.070 ms for the digits LeNet); ``repeats`` passes over all plans,
    # each with a fresh interpreter, and the median per plan spread that drift over every plan.
    times = [[time_tflite(content, threads).median_ms for _, content, _, _ in built]
             for _ in range(repeats)]  # fmt: skip
    return [
        TimedPlan(name, float(np.median([t[i] for t in times])), latency, row_ops)
        for i, (name, _, latency, row_ops) in enumerate(built)
    ], sources


def fit_per_op_correction(timed: list[TimedPlan], current_ms: float = 0.0) -> float:
    """The per-op correction (ms, at least 0) that minimizes the squared relative error of
    whole plans: predicted - row_ops * correction against measured, weighted by 1 / measured.
    ``current_ms``: the correction the predictions already include."""
    used = [t for t in timed if t.row_ops]
    if not used:
        return current_ms
    n = np.array([t.row_ops for t in used], np.float64)
    excess = np.array([t.predicted_ms + n_i * current_ms - t.measured_ms
                       for t, n_i in zip(used, n, strict=True)])  # fmt: skip
    w = 1.0 / np.array([t.measured_ms for t in used]) ** 2
    return float(max(0.0, (w * n * excess).sum() / (w * n * n).sum()))
