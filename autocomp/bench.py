"""Benchmarks that print numbers.

``python -m autocomp.bench search [experiment=digits] [overrides...]``: compile time of the plan
evaluation, plan evaluations per second (random masked plans through the environment, and whole
agent updates), and how many compilations happened after the first plan (target: zero);
``batches=20`` batches of random plans and ``chunks=3`` chunks of the agent are timed. With
``env.race.examples=<n>`` (racing), also the whole-split throughput of the same plans and the
rank correlation of the raced scores with the whole-split ones, on the random plans and
(``agent_*``) on the agent's own plans of those chunks. With ``budgets=0.3,0.5,0.7``: a whole
search per latency budget, separately against one vmapped search over all of them, and the
speedup.

``python -m autocomp.bench scale [devices=1,2] [experiment=digits]``: ``bench search`` with 1 and
2 devices (on CPU, forced host devices), the validation examples split over them.

``python -m autocomp.bench survey [experiment=digits] [survey.*=...]``: the survey's comparison
table, every technique alone (see :mod:`autocomp.survey.builtin`).

``python -m autocomp.bench costs [experiment=digits] [plans=50] [threads=1] [device=host]``: how
well the device table predicts real latency: random plans of the search space are materialized,
converted to TFLite and timed whole in the LiteRT interpreter on this host, against the table's
prediction. Ends with ``MAPE=<percent> spearman=<rho> plans=<n>``.

``python -m autocomp.bench agents [experiment=digits] [evaluations=512] [seeds=3] [agents=a,b]
[out=outputs/bench/agents/<experiment>] [finetune=true]``: every agent of ``agents/`` with the same
plan evaluations and seeds; writes ``agents.md``, ``agents.csv``, ``best_reward.png`` and the
per-run ``runs.jsonl`` (a killed benchmark continues; see :mod:`autocomp.run.compare`).

``python -m autocomp.bench rank [experiment=mnist] [plans=30] [short=4096]
[out=outputs/bench/rank/<experiment>]``: one search, then ``plans`` of its plans fine-tuned as the
experiment does, and the Spearman correlation of the search's score (and of a short fine-tuning)
with the fine-tuned test accuracy (resumable; see :mod:`autocomp.run.rank`).

``python -m autocomp.bench convs [batch=64]``: forward+backward time of depthwise and grouped
convs (VGG-sized CIFAR-10 shapes) as XLA:CPU trains them (:func:`autocomp.models.convs.conv_nhwc`)
against the one grouped ``lax`` conv the export lowers them to.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import jax
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


def _options(argv: list[str], keys: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """The ``key=value`` arguments of ``argv`` whose key is one of ``keys`` (the last one given
    of each), and the other arguments (the Hydra overrides)."""

    def is_option(arg: str) -> bool:
        return "=" in arg and arg.split("=", 1)[0] in keys

    opts = dict(a.split("=", 1) for a in argv if is_option(a))
    return opts, [a for a in argv if not is_option(a)]


def _random_plans(env, params, batch: int):
    """A jitted rollout of uniformly random *allowed* actions: one batch of plans per call."""
    from autocomp.search import rollouts

    def act(key, layer, obs):
        return rollouts.random_allowed(key, obs.action_mask)

    # all the episode metrics come back, so XLA cannot drop the accuracy it is to time
    return jax.jit(
        lambda key: rollouts.episode_metrics(rollouts.rollout(env, params, key, batch, act))
    )


def bench_search(overrides: list[str], batches: int = 20, chunks: int = 3) -> dict[str, float]:
    from agents import AGENTS
    from autocomp.run import build_env, compose
    from autocomp.workflow.pipeline import prepare

    counter = CompileCounter()
    config = compose(overrides)
    if config.model._target_:  # a linen model (random weights: speed, not accuracy)
        from autocomp.config import DistillConfig
        from autocomp.techniques import PrepareContext
        from autocomp.workflow.custom import random_network, search_setup, trained_network
        from autocomp.workflow.pipeline import validate
        from envs.compression import CompressionEnv

        # racing's rank figures need the trained model (its checkpoint, or the cached base)
        net, data = (trained_network if config.env.race.examples else random_network)(config)
        profile, techniques = validate(config)
        ctx = PrepareContext(tuple(config.env.ratios), distill=DistillConfig(steps=0, examples=64))
        setup = search_setup(net, data, config, profile, techniques, ctx, CompressionEnv)
        env, params = setup.env, setup.env_params
    else:
        env, params = build_env(prepare(config))
    batch = config.agent.batch_episodes
    rollout = _random_plans(env, params, batch)

    start = time.perf_counter()
    jax.block_until_ready(rollout(jax.random.key(0)))
    compile_s = time.perf_counter() - start
    before = counter.compiles
    start = time.perf_counter()
    seen, scored = set(), []
    for i in range(1, batches + 1):
        out = jax.device_get(jax.block_until_ready(rollout(jax.random.key(i))))
        seen.update(map(bytes, np.asarray(out["plan"]).reshape(batch, -1)))
        scored.append(out)
    eval_s = time.perf_counter() - start
    recompiles_eval = counter.compiles - before
    race = {}
    if config.env.race.examples > 0:
        from autocomp.search.benchmarks import race_figures

        race = race_figures(env, params, scored)

    trainer = AGENTS[config.agent.name].make_trainer(config.agent, env)
    state = trainer.init(jax.random.key(0))
    start = time.perf_counter()
    state, _ = jax.block_until_ready(trainer.run_chunk(state, params))
    agent_compile_s = time.perf_counter() - start
    before = counter.compiles
    start = time.perf_counter()
    own = []  # the agent's own batches: plans as a search evaluates them
    for _ in range(chunks):
        state, metrics = jax.block_until_ready(trainer.run_chunk(state, params))
        own.append(jax.device_get(metrics))
    agent_s = time.perf_counter() - start
    recompiles_agent = counter.compiles - before
    episodes = chunks * trainer.episodes_per_chunk
    if config.env.race.examples > 0:
        from autocomp.search.benchmarks import agent_race_figures

        race |= agent_race_figures(env, params, own)
    return {
        "experiment": config.name,
        "layers": env.spec.num_steps,
        "val_examples": int(params.x_val.shape[0]),
        "plan_eval_compile_s": compile_s,
        "plan_evals_per_s": batches * batch / eval_s,
        **race,
        "distinct_plans_evaluated": len(seen),
        "recompiles_after_first_plan": recompiles_eval,
        "agent_chunk_compile_s": agent_compile_s,
        "agent_episodes_per_s": episodes / agent_s,
        "recompiles_agent_after_first_chunk": recompiles_agent,
        "backend": jax.default_backend(),
    }


def bench_survey(overrides: list[str]) -> None:
    import logging

    from autocomp.config import ConfigError
    from autocomp.run import compose
    from autocomp.survey.builtin import run_survey, write_survey

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("jax._src.xla_bridge", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = compose(overrides)
        rows = run_survey(config)
    except ConfigError as err:
        print(f"ConfigError: {err}")
        raise SystemExit(2) from err
    command = " ".join(["python -m autocomp.bench survey", *overrides])
    paths = write_survey(rows, config, command)
    print(open(paths["md"]).read())
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def bench_costs(argv: list[str]) -> dict:
    """Whole-model TFLite latency of random plans on this host against the table's prediction."""
    from rich.progress import Progress
    from scipy.stats import spearmanr

    from autocomp.devices.costs import format_shares
    from autocomp.devices.plan_timing import time_plans
    from autocomp.devices.tables import load_profile
    from autocomp.run import compose

    opts, overrides = _options(argv, ("plans", "threads", "seed"))
    if not any(a.startswith("device=") or a.startswith("device.") for a in overrides):
        overrides.append("device=host")
    config = compose(overrides)
    profile = load_profile(config.device.profile)
    n_plans, threads = int(opts.get("plans", 50)), int(opts.get("threads", 1))
    with Progress() as bar:
        task = bar.add_task("plans: materialize, convert, time", total=n_plans)
        timed, sources = time_plans(config, profile, n_plans, int(opts.get("seed", 0)), threads,
                                    lambda: bar.advance(task))  # fmt: skip
    measured = [t.measured_ms for t in timed]
    predicted = [t.predicted_ms for t in timed]
    names = [t.name for t in timed]
    m, p = np.asarray(measured), np.asarray(predicted)
    ape = np.abs(p - m) / m
    worst = np.argsort(-ape)[:3]
    return {
        "experiment": config.name,
        "table": profile.describe(),
        "worst plans": "".join(
            f"\n  {100 * (p[i] - m[i]) / m[i]:+.1f}% measured {m[i]:.4f} ms: {names[i]}"
            for i in worst
        ),
        "lookup sources": format_shares(dict(sources)),
        "per-op correction": f"{1e3 * profile.per_op_correction_ms:.2f} us",
        "plans": len(m),
        "measured ms (median of plans)": float(np.median(m)),
        "within 10%": f"{100 * np.mean(ape <= 0.10):.0f}% of plans",
        "worst error": f"{100 * ape.max():.1f}%",
        "mean signed error": f"{100 * np.mean((p - m) / m):+.1f}% (+: the table predicts slower)",
        "MAPE": float(100 * ape.mean()),
        "spearman": float(spearmanr(m, p).statistic),
    }


def bench_phones(argv: list[str]) -> list[dict]:
    """Held-out error of every shipped phone table on the published measurements."""
    from autocomp.devices.fidelity import bench_phones as run
    from autocomp.devices.fidelity import plot_phones
    from autocomp.devices.published import PublishedDataError

    opts = dict(a.partition("=")[::2] for a in argv)
    unknown = set(opts) - {"source", "plot"}
    if unknown:
        raise SystemExit(f"bench phones takes source=<folder> and plot=<png>, not {unknown}")
    try:
        results = run(Path(opts.get("source", "../shared/data/phones")).expanduser())
    except PublishedDataError as err:
        raise SystemExit(f"{type(err).__name__}: {err}") from err
    for r in results:
        print(f"\n{r['table']}: {r['heldout']}")
        if "mac_ops" in r:
            m = r["mac_ops"]
            print(f"  conv/dwconv/dense nodes only: MAPE {m['mape']:.1f}%, within 10% "
                  f"{m['within10']:.0f}%, spearman {m['spearman']:.3f}, n={m['n']}; "
                  f"time-weighted error {r['time_weighted_ape']:.1f}%")  # fmt: skip
            for w in r["whole"]:
                err = 100 * (w["predicted_ms"] / w["measured_ms"] - 1)
                print(f"  whole {w['network']}: measured {w['measured_ms']:.1f} ms, "
                      f"predicted {w['predicted_ms']:.1f} ms ({err:+.1f}%)")  # fmt: skip
        if "blocks" in r:
            b = r["blocks"]
            print(f"  on {b['heldout']} (another runtime version, for information): MAPE "
                  f"{b['mape']:.1f}%, spearman {b['spearman']:.3f}, n={b['n']}")  # fmt: skip
        if "uncalibrated" in r:
            u = r["uncalibrated"]
            print(f"  uncalibrated {u['table']} on the same blocks: MAPE {u['mape']:.1f}%, "
                  f"spearman {u['spearman']:.3f}")  # fmt: skip
        if "note" in r:
            print(f"  NOTE: {r['note']}")
    print()
    for r in results:
        print(f"table={r['table']} MAPE={r['mape']:.1f}% within10={r['within10']:.0f}% "
              f"spearman={r['spearman']:.3f} n={r['n']}")  # fmt: skip
    if opts.get("plot"):
        print(f"plot: {plot_phones(results, Path(opts['plot']))}")
    return results


def bench_agents(argv: list[str]) -> None:
    """Every agent at equal plan evaluations and seeds: table, CSV and plot (resumable)."""
    from autocomp.run import compose
    from autocomp.run.compare import compare_agents

    opts, overrides = _options(argv, ("evaluations", "seeds", "agents", "out", "finetune"))
    name = compose(overrides).name
    out = Path(opts.get("out", f"outputs/bench/agents/{name}"))
    paths = compare_agents(
        overrides,
        out,
        evaluations=int(opts.get("evaluations", 512)),
        seeds=int(opts.get("seeds", 3)),
        agents=opts["agents"].split(",") if opts.get("agents") else None,
        finetune=opts.get("finetune", "true").lower() in ("1", "true", "yes"),
    )
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def bench_rank(argv: list[str]) -> None:
    from autocomp.run.rank import main as rank_main

    out, result = rank_main(argv)
    print(f"wrote {out / 'rank.md'} and {out / 'rank.png'}")
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in result.items()))  # fmt: skip


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in (
        "search", "scale", "survey", "costs", "convs", "phones", "agents", "rank"
    ):  # fmt: skip
        print(
            "usage: python -m autocomp.bench search [budgets=0.3,0.5,0.7] [hydra overrides...]\n"
            "       python -m autocomp.bench scale [devices=1,2] [hydra overrides...]\n"
            "       python -m autocomp.bench agents [experiment=<name>] [evaluations=512] "
            "[seeds=3] [agents=a,b,...] [out=dir] [finetune=true] [hydra overrides...]\n"
            "       python -m autocomp.bench survey [experiment=<name>] [survey.ratios=[...]] "
            "[hydra overrides...]\n"
            "       python -m autocomp.bench costs [experiment=<name>] [plans=50] [threads=1] "
            "[device=host] [hydra overrides...]\n"
            "       python -m autocomp.bench rank [experiment=<name>] [plans=30] [short=4096] "
            "[out=dir] [hydra overrides...]\n"
            "       python -m autocomp.bench convs [batch=64]\n"
            "       python -m autocomp.bench phones [source=../shared/data/phones] "
            "[plot=docs/phones.png]"
        )
        raise SystemExit(2)
    if argv[0] == "survey":
        bench_survey(argv[1:])
        return
    if argv[0] == "scale":
        from autocomp.search.benchmarks import bench_scale

        rows = bench_scale(argv[1:])
        print(f"{'devices':>7} {'backend':>7} {'plan evals/s':>13} {'agent episodes/s':>17} "
              f"{'eval compile s':>15}")  # fmt: skip
        for r in rows:
            evals, episodes = r["plan_evals_per_s"], r["agent_episodes_per_s"]
            print(f"{r['devices']:>7} {r['backend']:>7} {evals:>13,.0f} {episodes:>17,.0f} "
                  f"{r['plan_eval_compile_s']:>15.2f}")  # fmt: skip
        base = rows[0]["plan_evals_per_s"]
        for r in rows[1:]:
            print(f"devices={r['devices']} speedup={r['plan_evals_per_s'] / base:.2f}x "
                  f"(against devices={rows[0]['devices']})")  # fmt: skip
        return
    if argv[0] == "costs":
        result = bench_costs(argv[1:])
        for key, value in result.items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
        mape, rho, n = result["MAPE"], result["spearman"], result["plans"]
        within = result["within 10%"].split("%")[0]
        print(f"MAPE={mape:.1f}% within10={within}% spearman={rho:.3f} plans={n}")
        return
    if argv[0] == "phones":
        bench_phones(argv[1:])
        return
    if argv[0] == "agents":
        bench_agents(argv[1:])
        return
    if argv[0] == "rank":
        bench_rank(argv[1:])
        return
    if argv[0] == "convs":
        from autocomp.search.benchmarks import bench_convs

        print(f"{'case':<28} {'lax conv ms':>12} {'autocomp ms':>12} {'speedup':>8}")
        for row in bench_convs(argv[1:]):
            print(f"{row['case']:<28} {row['lax_ms']:>12.1f} {row['fast_ms']:>12.1f} "
                  f"{row['speedup']:>7.1f}x")  # fmt: skip
        return
    opts, rest = _options(argv[1:], ("budgets", "batches", "chunks"))
    if "budgets" in opts:
        from autocomp.search.benchmarks import bench_budgets

        result = bench_budgets(rest, [float(b) for b in opts.pop("budgets").split(",")])
    else:
        result = bench_search(rest, **{k: int(v) for k, v in opts.items()})
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    main(sys.argv[1:])
