"""The model card of an exported run (``MODEL_CARD.md``): what the model is, how it was made,
how it did, and the commands."""

from __future__ import annotations

from pathlib import Path

from autocomp.export.tflite import FILE_NAMES
from autocomp.io import atomic_write_text
from autocomp.search.plan import Plan


def model_card(run_dir: Path, plan: Plan, metrics: dict, report: dict, record: dict) -> str:
    """A short markdown model card: what the model is, how it was made, how it did."""
    base, comp = metrics["base"], metrics["compressed"]
    cfg = record["config"]
    table = metrics["device_table"]
    if not isinstance(table, dict):  # a run of an older autocomp names it only
        table = {"name": table, "kind": "see metrics.json"}
    lines = [
        f"# {cfg['name']}: {plan.model} compressed by autocomp",
        "",
        f"Data: `{cfg['data']['name']}` ({cfg['data']['source']}); device cost table: "
        f"`{table['name']}` ({table['kind']}); "
        f"seed {record['seed']}; git {record['git_sha']}.",
        "",
        "## Files",
        "",
        "| file | bytes | host latency (ms, median, "
        f"{report['num_threads']} thread) | test accuracy |",
        "|---|---|---|---|",
    ]
    lines += _file_rows(report, comp)
    lines += [
        "",
        f"Input: float32 `{list(record.get('input_shape', cfg['model']['input_shape']))}` "
        "images scaled to [0, 1], batch 1 (the int8 file takes int8 input: quantize with the "
        "input tensor's scale and zero point). Output: logits over "
        f"{record.get('num_classes', cfg['model']['num_classes'])} classes.",
        f"Host latencies were measured on `{report['host']['processor']}` with the LiteRT "
        "interpreter; they are not phone measurements.",
        "",
        "## Base vs compressed",
        "",
        "| metric | base | compressed |",
        "|---|---|---|",
        f"| test accuracy (JAX) | {100 * base['test_accuracy']:.2f}% | "
        f"{100 * comp['test_accuracy']:.2f}% |",
        f"| parameters | {base['params']:,} | {comp['params']:,} |",
        f"| MACs | {base['macs']:,} | {comp['macs']:,} |",
        f"| table latency (ms) | {base['latency_ms']:.4f} | {comp['latency_ms']:.4f} |",
        f"| table energy (mJ) | {base['energy_mj']:.4f} | {comp['energy_mj']:.4f} |",
        "",
        "## Plan",
        "",
        "| layer | technique | ratio | kernels |",
        "|---|---|---|---|",
    ]
    lines += _plan_and_checks(run_dir, plan, report, record, cfg)
    return "\n".join(lines)


def write_model_card(run_dir: Path, plan: Plan, metrics: dict, report: dict, record: dict):
    atomic_write_text(run_dir / "export" / "MODEL_CARD.md",
                      model_card(run_dir, plan, metrics, report, record))  # fmt: skip


def _file_rows(report: dict, comp: dict) -> list[str]:
    """The files table's rows and the table's predictions."""
    lines = []
    for kind, name in FILE_NAMES.items():
        r = report.get(kind, {})
        if "bytes" in r:
            lines.append(
                f"| `{name}` | {r['bytes']:,} | {r['latency_ms']['median']:.4f} | "
                f"{100 * r['test_accuracy']:.2f}% |"
            )
    lines.append("")
    predicted = report.get("int8", {}).get("table_latency_ms") or {}
    if predicted.get("predicted_ms") is not None:
        lines.append(f"The device table `{predicted['table']}` predicts "
                     f"{predicted['predicted_ms']:.4f} ms for `model_int8.tflite` on its device "
                     "(its int8 column).")  # fmt: skip
    mixed = (report.get("mixed", {}).get("table_latency_ms") or {}).get("predicted_ms")
    where = "`model.tflite`" if mixed is None else "`model_mixed.tflite` (its `+q8` layers int8)"
    lines.append(f"The plan as searched, {where}: {comp['latency_ms']:.4f} ms on the table.")
    if "error" in report.get("mixed", {}):
        lines.append(f"No mixed-precision file: {report['mixed']['error']}.")
    return lines


def _plan_and_checks(run_dir: Path, plan: Plan, report: dict, record: dict, cfg: dict) -> list[str]:
    """The plan table, the verification and the commands."""
    lines = []
    for c in plan.layers:
        shapes = " + ".join("x".join(map(str, s)) for s in c.shape)
        lines.append(f"| {c.name} | {c.technique} | {c.ratio:g} | {shapes} |")
    checks = ", ".join(f"{k}={v}" for k, v in report["checks"].items())
    lines += [
        "",
        "## Verification",
        "",
        f"TFLite float32 vs JAX on {report['examples']} test examples: top-1 agreement "
        f"{100 * report['tflite_top1_agreement']:.2f}%, max |logit difference| "
        f"{report['tflite_max_abs_logit_diff']:.2e}. Checks: {checks}.",
        "",
        "## Commands",
        "",
        "```bash",
        f"python -m autocomp.train {' '.join(record.get('overrides', [])) or '(defaults)'}",
        f"python -m autocomp.export run={run_dir}",
        "```",
        "",
    ]
    if not cfg["model"].get("_target_"):  # a built-in model: its plan re-applies by config
        lines += [
            "Re-apply the plan to the same architecture without searching:",
            "",
            "```python",
            "import autocomp",
            "ops, params, masks = autocomp.apply_plan(model_config, base_params, 'plan.json')",
            "```",
            "",
        ]
    return lines
