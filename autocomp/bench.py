"""Benchmarks that print numbers.

``python -m autocomp.bench search [experiment=digits] [overrides...]``: compile time of the plan
evaluation, plan evaluations per second (random masked plans through the environment, and whole
agent updates), and how many compilations happened after the first plan (target: zero).

``python -m autocomp.bench survey [experiment=digits] [survey.*=...]``: the survey's comparison
table, every technique alone (see :mod:`autocomp.survey`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np


class CompileCounter:
    """Counts XLA backend compilations through jax.monitoring."""

    def __init__(self):
        self.events = Counter()
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, name, duration, **kwargs):
        if name.endswith("backend_compile_duration"):
            self.events["compiles"] += 1

    @property
    def compiles(self) -> int:
        return self.events["compiles"]


def _compose(overrides: list[str]):
    from hydra import compose, initialize

    from autocomp.train import register, to_config

    register()
    with initialize(version_base="1.3", config_path="../experiments"):
        return to_config(compose("config", overrides=["logger=none", *overrides]))


def _random_plans(env, params, batch: int):
    """A jitted rollout of uniformly random *allowed* actions: one batch of plans per call."""

    @jax.jit
    def rollout(key):
        keys = jax.random.split(key, batch)
        obs, state = env.batch_reset(keys, params)
        reward = info = None
        for _layer in range(env.spec.num_steps):
            key, k = jax.random.split(key)
            logits = jnp.where(obs.action_mask, 0.0, -jnp.inf).reshape(batch, -1)
            flat = jax.random.categorical(k, logits)
            action = jnp.stack([flat // env.spec.num_ratios, flat % env.spec.num_ratios], -1)
            obs, state, reward, _, info = env.batch_step(
                keys, state, action.astype(jnp.int32), params
            )
        return state.plan, reward, info.accuracy

    return rollout


def bench_search(overrides: list[str], batches: int = 20) -> dict[str, float]:
    from autocomp.pipeline import prepare
    from autocomp.train import AGENTS, build_env

    counter = CompileCounter()
    config = _compose(overrides)
    p = prepare(config)
    env, params = build_env(p)
    batch = config.agent.batch_episodes
    rollout = _random_plans(env, params, batch)

    start = time.perf_counter()
    jax.block_until_ready(rollout(jax.random.key(0)))
    compile_s = time.perf_counter() - start
    before = counter.compiles
    start = time.perf_counter()
    seen = set()
    for i in range(1, batches + 1):
        plans, _, _ = jax.block_until_ready(rollout(jax.random.key(i)))
        seen.update(map(bytes, np.asarray(plans).reshape(batch, -1)))
    eval_s = time.perf_counter() - start
    recompiles_eval = counter.compiles - before

    train = AGENTS[config.agent.name][1](config.agent, env, params)
    state = train.init(jax.random.key(0))
    start = time.perf_counter()
    state, _ = jax.block_until_ready(train.run_chunk(state))
    agent_compile_s = time.perf_counter() - start
    before = counter.compiles
    chunks = 3
    start = time.perf_counter()
    for _ in range(chunks):
        state, _ = jax.block_until_ready(train.run_chunk(state))
    agent_s = time.perf_counter() - start
    episodes = chunks * config.agent.updates_per_chunk * batch
    return {
        "experiment": config.name,
        "layers": env.spec.num_steps,
        "val_examples": int(params.x_val.shape[0]),
        "plan_eval_compile_s": compile_s,
        "plan_evals_per_s": batches * batch / eval_s,
        "distinct_plans_evaluated": len(seen),
        "recompiles_after_first_plan": recompiles_eval,
        "agent_chunk_compile_s": agent_compile_s,
        "agent_episodes_per_s": episodes / agent_s,
        "recompiles_agent_after_first_chunk": counter.compiles - before,
        "backend": jax.default_backend(),
    }


def bench_survey(overrides: list[str]) -> None:
    import logging

    from autocomp.config import ConfigError
    from autocomp.survey import run_survey, write_survey

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("jax._src.xla_bridge", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = _compose(overrides)
        rows = run_survey(config)
    except ConfigError as err:
        print(f"ConfigError: {err}")
        raise SystemExit(2) from err
    command = " ".join(["python -m autocomp.bench survey", *overrides])
    paths = write_survey(rows, config, command)
    print(open(paths["md"]).read())
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("search", "survey"):
        print(
            "usage: python -m autocomp.bench search [hydra overrides...]\n"
            "       python -m autocomp.bench survey [experiment=<name>] [survey.ratios=[...]] "
            "[hydra overrides...]"
        )
        raise SystemExit(2)
    if argv[0] == "survey":
        bench_survey(argv[1:])
        return
    result = bench_search(argv[1:])
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    main(sys.argv[1:])
