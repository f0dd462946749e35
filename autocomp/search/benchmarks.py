"""The scale-out benchmarks of ``python -m autocomp.bench``: several budgets as one vmapped search
against separate searches (``bench search budgets=...``), and plan evaluation over 1 and 2 devices
(``bench scale``)."""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
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
