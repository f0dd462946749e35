"""Benchmarks of ``python -m autocomp.bench``: several budgets as one vmapped search against
separate searches (``bench search budgets=...``), plan evaluation over 1 and 2 devices (``bench
scale``), the raced scores against whole-split ones (``bench search env.race.examples=...``) and
the conv lowerings (``bench convs``)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def bench_budgets(overrides: list[str], budgets: list[float]) -> dict[str, float]:
    """One whole search per latency budget, separately (each compiling its own programs, as
    separate runs do) against all budgets as one vmapped search (:mod:`autocomp.search.batched`).

    Both in this process, after the base model is ready: the separate runs' process start and
    data loading (a few seconds each) are not counted, so the speedup of real separate runs is
    larger than the one printed.
    """
    from agents import AGENTS
    from autocomp.run import build_env, compose
    from autocomp.search.batched import run_searches
    from autocomp.search.loop import run_search
    from autocomp.search.reward import make_reward_params
    from autocomp.workflow.pipeline import prepare
    from autocomp.workflow.tracking import NullTracker

    config = compose(overrides)
    p = prepare(config)
    env, base = build_env(p)
    params = [
        base._replace(
            reward=make_reward_params(
                dataclasses.replace(config.reward, max_latency_frac=b),
                tuple(p.space.base[:3]),
                p.base_val_accuracy,
            )
        )
        for b in budgets
    ]
    key, agent = jax.random.key(config.seed), AGENTS[config.agent.name]
    separate_s, best = 0.0, []
    for one in params:
        jax.clear_caches()  # a separate run compiles its own programs
        trainer = agent.make_trainer(config.agent, env)
        start = time.perf_counter()
        state, history, _ = run_search(trainer, one, key, NullTracker(), show_progress=False)
        separate_s += time.perf_counter() - start
        best.append(trainer.policy(state, one))
    jax.clear_caches()
    trainer = agent.make_trainer(config.agent, env)
    labels = [f"{b:g}" for b in budgets]
    start = time.perf_counter()
    states, _, timings = run_searches(trainer, params, key, NullTracker(), labels, None, "", False)
    vmapped_s = time.perf_counter() - start
    same = sum(
        bool(np.array_equal(trainer.policy(s, one), b))
        for s, one, b in zip(states, params, best, strict=True)
    )
    return {
        "experiment": config.name,
        "agent": config.agent.name,
        "budgets": ",".join(labels),
        "episodes_per_budget": trainer.episodes,
        "separate_searches_s": separate_s,
        "vmapped_search_s": vmapped_s,
        "vmapped_first_chunk_s": timings["first_chunk_s"],
        "speedup": separate_s / vmapped_s,
        "same_policy_plans": f"{same}/{len(budgets)}",
        "backend": jax.default_backend(),
    }


def bench_scale(argv: list[str]) -> list[dict]:
    """``bench search`` once per device count (``devices=1,2``), each in its own process with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=<n>`` on CPU (on GPU, the first n
    devices through ``CUDA_VISIBLE_DEVICES``): the validation examples are split over the
    devices (:mod:`autocomp.sharding`)."""
    import json
    import os
    import subprocess

    counts = [1, 2]
    rest = []
    for arg in argv:
        if arg.startswith("devices="):
            counts = [int(n) for n in arg.split("=", 1)[1].split(",")]
        else:
            rest.append(arg)
    rows = []
    for n in counts:
        env = dict(os.environ)
        if jax.default_backend() == "cpu":
            flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count", "")
            env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(n)))
        code = (
            "import json, sys, jax; from autocomp.bench import bench_search; "
            "r = bench_search(sys.argv[1:]); r['devices'] = jax.local_device_count(); "
            "print('RESULT ' + json.dumps(r))"
        )
        out = subprocess.run([sys.executable, "-c", code, *rest], env=env, capture_output=True,
                             text=True, check=False)  # fmt: skip
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not lines:
            raise RuntimeError(f"bench search with {n} devices failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
    return rows


# Module-level programs with the environment static and its params an argument: a second call
# (the agent's plans after the random ones) reuses the compiled program instead of compiling a
# new closure's.
@functools.partial(jax.jit, static_argnums=0)
def _whole_split(env, params, plans):
    return env.evaluate_plans(plans, params, True)


@functools.partial(jax.jit, static_argnums=0)
def _accuracies(env, params, plans, x, y):
    from autocomp.sharding import labelled_accuracy  # -1 labels pad a split over devices

    def right(plan):
        return labelled_accuracy(jnp.argmax(env.logits(plan, params, x), axis=-1), y)

    return jax.lax.map(right, plans)


def race_figures(env, params, scored: list[dict]) -> dict[str, float]:
    """The raced scores of ``scored`` (one dict per batch) against the whole-split scores of the
    same plans: rank correlation, whether each batch's best plan went on to the whole split,
    and the whole-split throughput."""
    from scipy.stats import spearmanr

    jax.block_until_ready(_whole_split(env, params, scored[0]["plan"]))  # compile
    start = time.perf_counter()
    exact = [
        jax.device_get(jax.block_until_ready(_whole_split(env, params, out["plan"])))
        for out in scored
    ]
    full_s = time.perf_counter() - start
    raced = np.concatenate([out["reward"] for out in scored])
    whole = np.concatenate([out["reward"] for out in exact])
    raced_acc = np.concatenate([out["accuracy"] for out in scored])
    whole_acc = np.concatenate([out["accuracy"] for out in exact])
    best_kept = [  # the batch's best plan on the whole split was scored on it while racing
        np.isclose(r["reward"][np.argmax(e["reward"])], e["reward"].max(), atol=1e-6)
        for r, e in zip(scored, exact, strict=True)
    ]
    n = len(raced)
    halves = split_half_accuracy(env, params, np.concatenate([out["plan"] for out in scored]))
    return {
        "race_examples": env.race_examples,
        "race_keep": env.race_keep,
        "plan_evals_per_s_whole_split": n / full_s,
        "race_spearman_reward": float(spearmanr(raced, whole).statistic),
        "race_spearman_accuracy": float(spearmanr(raced_acc, whole_acc).statistic),
        "race_batch_best_kept": float(np.mean(best_kept)),
        "whole_split_accuracy_sd": float(np.std(whole_acc)),
        "halves_spearman_accuracy": float(spearmanr(*halves).statistic),
    }


def agent_race_figures(env, params, chunks: list[dict]) -> dict[str, float]:
    """:func:`race_figures` on an agent's own plans (each chunk's metrics [U, B, ...], one
    batch per step): the plans a search evaluates, nearer the budget line and wider apart in
    accuracy than random ones. Prefixed ``agent_``; the throughput is left to the random plans."""
    steps = [
        {k: np.asarray(m[k][u]) for k in ("plan", "reward", "accuracy")}
        for m in chunks
        for u in range(np.asarray(m["reward"]).shape[0])
    ]
    figures = race_figures(env, params, steps)
    figures["plans"] = sum(len(s["reward"]) for s in steps)
    skip = ("race_examples", "race_keep", "plan_evals_per_s_whole_split")
    return {f"agent_{k}": v for k, v in figures.items() if k not in skip}


def split_half_accuracy(env, params, plans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each plan's validation accuracy on the first and on the second half of the split: how
    well the whole split itself can order these plans (their Spearman correlation is the
    reproducibility of a score on half the images, a ceiling for a race on fewer)."""
    half = params.x_val.shape[0] // 2
    parts = ((params.x_val[:half], params.y_val[:half]), (params.x_val[half:], params.y_val[half:]))
    first, second = (np.asarray(_accuracies(env, params, plans, x, y)) for x, y in parts)
    return first, second


CONV_CASES = (  # (name, (H, W, C), kernel, stride, groups): depthwise and grouped, CIFAR-sized
    ("depthwise 32x32x64 3x3", (32, 32, 64), 3, 1, 64),
    ("depthwise 16x16x128 3x3 s2", (16, 16, 128), 3, 2, 128),
    ("depthwise 8x8x256 3x3", (8, 8, 256), 3, 1, 256),
    ("grouped 32x32x64 3x3 g2", (32, 32, 64), 3, 1, 2),
    ("grouped 16x16x128 3x3 g4", (16, 16, 128), 3, 1, 4),
)


def bench_convs(argv: list[str]) -> list[dict]:
    """Milliseconds per jitted forward+backward pass (input and kernel gradients) of each case,
    both lowerings (best of 3)."""
    from autocomp.models.convs import conv_nhwc, export_lowering

    args = dict(a.split("=", 1) for a in argv)
    batch = int(args.get("batch", 64))
    rng = np.random.default_rng(0)
    rows = []
    for name, shape, k, stride, groups in CONV_CASES:
        x = jnp.asarray(rng.standard_normal((batch, *shape)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, shape[-1] // groups, shape[-1])), jnp.float32)
        times = {}
        for label, lowering in (("lax_ms", export_lowering), ("fast_ms", contextlib.nullcontext)):

            def loss(x, w, s=stride, g=groups):
                return (conv_nhwc(x, w, (s, s), g) ** 2).sum()

            with lowering():  # a new function per lowering: jax caches traces by function
                step = jax.jit(jax.grad(loss, argnums=(0, 1)))
                jax.block_until_ready(step(x, w))
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                jax.block_until_ready(step(x, w))
                best = min(best, time.perf_counter() - start)
            times[label] = best * 1e3
        rows.append({"case": name, **times, "speedup": times["lax_ms"] / times["fast_ms"]})
    return rows
