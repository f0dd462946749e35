"""How well a search's score of a plan predicts what the plan becomes after fine-tuning: the runs
behind ``python -m autocomp.bench rank``.

One search of the experiment (resumable: its checkpoint is in ``out/search.msgpack``), then
``plans`` of its distinct evaluated plans: half spread evenly along the accuracy-latency front,
half spread evenly over the score ranks of the in-budget plans. Each is materialized and

- scored as the search scored it (``score``: validation accuracy of the simulated plan, no
  fine-tuning),
- scored with the output-statistics correction (``corrected``: the same, each compressed
  layer's output mapped per channel to the original's mean and standard deviation;
  ``env.stat_correction``),
- scored with the statistics re-estimated under the plan itself (``adaptive``:
  :func:`envs.probes.adaptive_logits`, EagleEye's procedure),
- fine-tuned briefly (``short``: one pass of distillation over ``short`` training images, then
  validation accuracy: the re-ranking lever, a few hundred steps),
- fine-tuned as the experiment's run does (``finetuned``: test accuracy).

Each plan's record goes to ``out/plans.jsonl`` as soon as it is done (a killed benchmark
continues); ``rank.md`` holds the Spearman correlations of ``score``, ``corrected``,
``adaptive`` and ``short`` with ``finetuned``, over all the plans and over the in-budget ones,
and ``rank.png`` the scatter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from agents import AGENTS
from autocomp.config import ConfigError
from autocomp.io import append_jsonl, atomic_write_text, read_jsonl
from autocomp.run.compose import compose
from autocomp.run.subject import subject
from autocomp.search.joint import joint_settings
from autocomp.search.loop import run_search
from autocomp.search.pareto import pareto_front
from autocomp.workflow import pipeline
from autocomp.workflow.tracking import NullTracker

log = logging.getLogger("autocomp.bench")


def spread(sel: pipeline.Selection, n: int) -> list[int]:
    """``n`` distinct plans of a selection: half evenly along the accuracy-latency front, the
    rest evenly over the score ranks of the in-budget plans (fewer if there are not so many)."""
    front = pareto_front(sel.accuracy, sel.costs[:, :1])
    front = front[np.argsort(sel.costs[front, 0])]
    picked = list(dict.fromkeys(front[np.linspace(0, len(front) - 1, min(n // 2, len(front)))
                                      .round().astype(int)].tolist()))  # fmt: skip
    inside = np.flatnonzero(~sel.violation)
    inside = inside[np.argsort(-sel.accuracy[inside], kind="stable")]
    inside = np.array([i for i in inside if i not in picked], int)
    rest = min(n - len(picked), len(inside))
    if rest > 0:
        picked += inside[np.linspace(0, len(inside) - 1, rest).round().astype(int)].tolist()
    return list(dict.fromkeys(picked))


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def rank_plans(
    overrides: Sequence[str],
    out_dir: Path,
    plans: int = 30,
    short: int = 4096,
    show_progress: bool = True,
) -> dict[str, float]:
    """Run (or resume) the benchmark into ``out_dir``; returns the correlations."""
    if plans < 3 or short < 1:
        raise ValueError(f"plans={plans} must be >= 3 and short={short} >= 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = compose(overrides)
    if joint_settings(config.agent) is not None:
        raise ConfigError(
            "bench rank ranks the plans of a frozen-weight search; drop agent.joint_finetune "
            "(bench agents compares a joint search with a frozen one)"
        )
    # the search depends on the overrides only: more plans later reuse the finished search
    fingerprint = hashlib.sha256(json.dumps(list(overrides)).encode()).hexdigest()
    s = subject(config, out_dir)
    env, env_params = s.env, s.env_params
    trainer = AGENTS[config.agent.name].make_trainer(config.agent, env)
    started = time.perf_counter()
    state, history, _ = run_search(
        trainer, env_params, jax.random.key(config.seed), NullTracker(),
        out_dir / "search.msgpack", fingerprint, show_progress,
    )  # fmt: skip
    sel = s.select(history, env.full_scorer(env_params))
    log.info("rank: search done in %.0f s, %d distinct plans", time.perf_counter() - started,
             len(sel.plans))  # fmt: skip
    records_path = out_dir / "plans.jsonl"
    records = read_jsonl(records_path) if records_path.exists() else []
    done = {r["key"] for r in records}
    corrected, adaptive = _corrected_scorers(env, env_params, s.x_train)
    for k, i in enumerate(spread(sel, plans)):
        indices = sel.plans[i]
        key = " ".join(f"{t}:{r}" for t, r in indices)
        if key in done:
            continue
        t0 = time.perf_counter()
        short_acc, test_acc = s.short(indices, short), s.tuned(indices)
        record = {
            "key": key,
            "in_budget": bool(~sel.violation[i]),
            "latency_ms": float(sel.costs[i, 0]),
            "reward": float(sel.reward[i]),
            "score": float(sel.accuracy[i]),
            "corrected": corrected(indices),
            "adaptive": adaptive(indices),
            "short": short_acc,
            "finetuned": test_acc,
            "seconds": time.perf_counter() - t0,
        }
        append_jsonl(records_path, record)
        records.append(record)
        log.info("rank: plan %d/%d score %.4f short %.4f fine-tuned %.4f (%.0f s)", k + 1,
                 plans, record["score"], short_acc, test_acc, record["seconds"])  # fmt: skip
    return write_report(out_dir, records, config, short)


SCORES = ("score", "corrected", "adaptive", "short")


def _corrected_scorers(env, env_params, x_train):
    """Two ``indices -> validation accuracy`` of the simulated plan: with the precomputed
    output-statistics correction (whatever the environment's own setting), and with the
    statistics re-estimated under the plan (:func:`envs.probes.adaptive_logits`)."""
    from autocomp.sharding import labelled_accuracy
    from envs.probes import STATS_EXAMPLES, adaptive_logits, with_correction

    fitted = env_params if env.correct else with_correction(env, env_params, x_train)
    x_stats = jax.numpy.asarray(x_train[:STATS_EXAMPLES])

    @jax.jit
    def corrected(plan, params):  # params an argument: XLA would constant-fold a closure's
        logits = env.logits(plan, params, params.x_val, correct=True)
        return labelled_accuracy(jax.numpy.argmax(logits, -1), params.y_val)

    @jax.jit
    def adaptive(plan, params, x_stats):
        logits = adaptive_logits(env, plan, params, params.x_val, x_stats)
        return labelled_accuracy(jax.numpy.argmax(logits, -1), params.y_val)

    return (
        lambda indices: float(corrected(np.asarray(indices), fitted)),
        lambda indices: float(adaptive(np.asarray(indices), env_params, x_stats)),
    )


def write_report(out_dir: Path, records: list[dict], config, short: int) -> dict[str, float]:
    """``rank.md`` (correlations and every plan) and ``rank.png`` (score against result)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = {k: np.array([r.get(k, np.nan) for r in records]) for k in (*SCORES, "finetuned")}
    inside = np.array([r["in_budget"] for r in records])
    result = {"plans": len(records), "in_budget": int(inside.sum())}
    for k in SCORES:
        result[f"spearman_{k}"] = _spearman(cols[k], cols["finetuned"])
        result[f"spearman_{k}_in_budget"] = _spearman(cols[k][inside], cols["finetuned"][inside])
    lines = [
        f"# Search score against fine-tuned accuracy: {config.name}",
        "",
        f"{len(records)} plans ({result['in_budget']} in budget); `score`: validation accuracy "
        f"of the simulated plan (what the search ranks by); `corrected`: the same with each "
        f"compressed layer's output statistics corrected; `adaptive`: with them re-estimated "
        f"under the plan; `short`: validation accuracy after "
        f"one distillation pass over {short} training images; `finetuned`: test accuracy after "
        f"the experiment's fine-tuning ({config.finetune.epochs} epochs).",
        "",
        "| Spearman with `finetuned` | all plans | in budget |",
        "|---|---|---|",
        *(
            f"| `{k}` | {result[f'spearman_{k}']:.3f} | {result[f'spearman_{k}_in_budget']:.3f} |"
            for k in SCORES
        ),
        "",
        f"| latency (ms) | in budget | {' | '.join(SCORES)} | finetuned | plan |",
        "|---|---|" + "---|" * len(SCORES) + "---|---|",
    ]
    for r in sorted(records, key=lambda r: r["latency_ms"]):
        scores = " | ".join(f"{r.get(k, np.nan):.4f}" for k in (*SCORES, "finetuned"))
        lines.append(f"| {r['latency_ms']:.4f} | {'yes' if r['in_budget'] else 'no'} | "
                     f"{scores} | `{r['key']}` |")  # fmt: skip
    atomic_write_text(out_dir / "rank.md", "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(cols["score"], cols["finetuned"], label="score (no fine-tuning)", s=14)
    ax.scatter(cols["corrected"], cols["finetuned"], label="corrected score", s=14, marker="+")
    ax.scatter(cols["adaptive"], cols["finetuned"], label="re-estimated score", s=14, marker="1")
    ax.scatter(cols["short"], cols["finetuned"], label=f"short ({short} images)", s=14, marker="x")
    ax.set_xlabel("validation accuracy before the full fine-tuning")
    ax.set_ylabel("test accuracy after fine-tuning")
    ax.set_title(config.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "rank.png", dpi=120)
    plt.close(fig)
    return result


def main(argv: list[str]) -> tuple[Path, dict[str, float]]:
    """``python -m autocomp.bench rank [plans=30] [short=4096] [out=dir] [overrides...]``:
    the output directory and the correlations."""
    own = ("plans", "short", "out")
    opts = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in own)
    rest = [a for a in argv if a.split("=", 1)[0] not in own]
    out = Path(opts.get("out", f"outputs/bench/rank/{compose(rest).name}"))
    return out, rank_plans(rest, out, int(opts.get("plans", 30)), int(opts.get("short", 4096)))
