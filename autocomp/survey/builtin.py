"""The survey's comparison table for any model: every technique alone, applied uniformly.

``python -m autocomp.bench survey experiment=<name> [survey.ratios=[0.5,0.75]]
[survey.finetune_epochs=2] [survey.out_dir=docs/survey]``

For each technique and ratio (ratio-free techniques once), the technique is applied to every
layer it fits (the others are kept), the result is materialized, fine-tuned briefly by
distillation from the base model, and measured: test accuracy, parameters, storage bytes, the
largest intermediate feature map, MACs, latency and energy from the device table, and the
measured latency of the converted float32 TFLite file in the LiteRT interpreter on this host.
"original" is the first row. Writes ``<out_dir>/<experiment>.csv``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autocomp.config import ConfigError, RootConfig
from autocomp.devices.costs import price_ops
from autocomp.devices.tables import load_profile
from autocomp.io import append_jsonl, atomic_write_bytes, atomic_write_text, read_jsonl
from autocomp.models.ops import Op, walk_shapes
from autocomp.search.plan import LayerChoice, Plan, materialize
from autocomp.techniques import family, identity_index, make_techniques, technique_fits
from autocomp.training.loop import accuracy, finetune
from autocomp.workflow.pipeline import Prepared, prepare

log = logging.getLogger(__name__)
BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class SurveyRow:
    technique: str
    family: str
    ratio: float
    layers: str
    test_accuracy: float
    params: int
    bytes: int
    max_feature_bytes: int
    macs: int
    latency_ms: float
    energy_mj: float
    measured_ms: float | None
    finetune_s: float


def largest_feature_bytes(ops: tuple[Op, ...], input_shape) -> int:
    """The largest intermediate tensor (float32) of a deployed model, input and output
    excluded: what must fit in memory at once besides the weights."""
    shapes = walk_shapes(ops, input_shape)[1:-1]
    return BYTES_PER_FLOAT * max((math.prod(s) for s in shapes), default=0)


def uniform_plan(p: Prepared, technique: str, ratio: float) -> Plan | None:
    """``technique`` at ``ratio`` on every layer it fits, the identity (``keep``) elsewhere
    (None: fits none)."""
    by_name = {t.name: t for t in p.techniques}
    tech = by_name[technique]
    identity = p.techniques[identity_index(p.techniques)].name
    choices, applied = [], False
    for layer in p.layers:
        if technique_fits(tech, layer) is None:
            choices.append(LayerChoice(layer.name, technique, ratio))
            applied = True
        else:
            choices.append(LayerChoice(layer.name, identity, 0.0))
    return Plan(p.config.model.name, tuple(choices)) if applied else None


def _measure(ops, params, input_shape, example, enabled: bool, profile) -> float | None:
    """The host latency of the file the row's table latency stands for (mixed where ``+q8``
    layers are priced as int8, :func:`autocomp.devices.mixed.deployed_ops_file`)."""
    if not enabled:
        return None
    from autocomp.devices.mixed import deployed_ops_file
    from autocomp.export import TfliteModel

    model = TfliteModel(deployed_ops_file(ops, params, tuple(input_shape), profile))
    return float(model.latency_ms(example)["median"])


def _row(p, name, ratio, plan, ops, params, seconds, measure) -> SurveyRow:
    input_shape = p.data.x_train.shape[1:]
    cost = price_ops(p.profile, ops, input_shape)
    layers = "all" if plan is None else ",".join(
        c.name for c in plan.layers if c.technique == name
    )  # fmt: skip
    return SurveyRow(
        technique=name if plan is not None else "original",
        family=family(name) if plan is not None else "",
        ratio=ratio,
        layers=layers,
        test_accuracy=accuracy(ops, params, p.data.x_test, p.data.y_test),
        params=int(cost.params),
        bytes=int(cost.bytes),
        max_feature_bytes=largest_feature_bytes(ops, input_shape),
        macs=int(cost.macs),
        latency_ms=float(cost.latency_ms),
        energy_mj=float(cost.energy_mj),
        measured_ms=_measure(ops, params, input_shape, p.data.x_test[0], measure, p.profile),
        finetune_s=seconds,
    )


def run_survey(config: RootConfig) -> list[SurveyRow]:
    s = config.survey
    missing = [r for r in s.ratios if r not in config.env.ratios]
    if missing:
        raise ConfigError(
            f"survey.ratios {missing} are not ratio bins of env.ratios={config.env.ratios}; "
            "the cost table and distilled layers exist per bin: use bins, or add them to "
            "env.ratios"
        )
    available = make_techniques(config.env.techniques)
    techniques = s.techniques or [t.name for t in available if not t.identity]
    unknown = [t for t in techniques if t not in {a.name for a in available}]
    if unknown:
        raise ConfigError(f"survey.techniques {unknown} are not in env.techniques")

    def finetune_data(data):
        n = s.finetune_examples
        return data._replace(x_train=data.x_train[:n], y_train=data.y_train[:n]) if n else data

    ft = config.finetune.__class__(**{**asdict(config.finetune), "epochs": s.finetune_epochs})
    if config.model._target_:  # a user's model, through the own-model front end
        from autocomp.survey.custom import CustomSubject

        subject = CustomSubject(config, finetune_data, ft, s.measure)
        return _rows(config, techniques, subject.techniques, subject.indices, subject.row)
    p = prepare(config)
    data = finetune_data(p.data)

    teacher = (p.ops, p.base_params)

    def make_row(name, ratio, plan) -> SurveyRow:
        if plan is None:
            return _row(p, "original", 0.0, None, p.ops, p.base_params, 0.0, s.measure)
        ops, params, masks = materialize(p.ops, p.layers, p.base_params, p.aux, p.techniques,
                                         plan)  # fmt: skip
        start = time.perf_counter()
        params = finetune(ops, params, masks, data, ft, teacher, config.seed)
        seconds = time.perf_counter() - start
        return _row(p, name, ratio, plan, ops, params, seconds, s.measure)

    return _rows(config, techniques, p.techniques, lambda n, r: uniform_plan(p, n, r), make_row)


def _rows(config: RootConfig, names, techniques, plan_of, make_row) -> list[SurveyRow]:
    """The original, then each technique at each survey ratio (ratio-free ones once):
    ``plan_of(name, ratio)`` its uniform plan (None: it fits no layer), ``make_row(name,
    ratio, plan)`` its measured row (plan None: the original). Rows are kept as they are made,
    so a killed survey continues where it stopped (rows of other settings are not reused)."""
    partial = partial_path(config)
    settings = _settings(config)
    done = _load_partial(partial, settings)

    def row(name, ratio, plan) -> SurveyRow:
        key = f"{name}|{ratio:g}"
        if key not in done:
            done[key] = make_row(name, ratio, plan)
            append_jsonl(partial, {"key": key, "settings": settings, "row": asdict(done[key])})
        _log_row(done[key])
        return done[key]

    rows = [row("original", 0.0, None)]
    by_name = {t.name: t for t in techniques}
    for name in names:
        for ratio in [0.0] if by_name[name].ratio_free else list(config.survey.ratios):
            plan = plan_of(name, ratio)
            if plan is None:
                log.info("survey: %s fits no layer of %s", name, config.model.name)
                break
            rows.append(row(name, ratio, plan))
    return rows


def partial_path(config: RootConfig) -> Path:
    """Where a survey keeps its rows until its table is written."""
    return Path(config.survey.out_dir) / f"{config.name}.partial.jsonl"


def _settings(config: RootConfig) -> dict:
    s = config.survey
    return {
        "model": config.model.name,
        "target": config.model._target_,
        "device": config.device.profile,
        "env_ratios": list(config.env.ratios),
        "distill": asdict(config.env.distill),
        "finetune_epochs": s.finetune_epochs,
        "finetune_examples": s.finetune_examples,
        "measure": s.measure,
        "seed": config.seed,
    }


def _load_partial(path: Path, settings: dict) -> dict[str, SurveyRow]:
    rows: dict[str, SurveyRow] = {}
    for entry in read_jsonl(path):
        try:
            if entry["settings"] == settings:
                rows[entry["key"]] = SurveyRow(**entry["row"])
        except (KeyError, TypeError):
            continue  # a row of another version
    if rows:
        log.info("survey: %d rows resumed from %s", len(rows), path)
    return rows


def _log_row(row: SurveyRow) -> None:
    measured = f"{row.measured_ms:.4f} ms measured" if row.measured_ms is not None else ""
    log.info(
        "survey: %-11s %-6g acc %.4f params %d MACs %d table %.4f ms %s",
        row.technique,
        row.ratio,
        row.test_accuracy,
        row.params,
        row.macs,
        row.latency_ms,
        measured,
    )


COLUMNS = (
    ("technique", "technique"),
    ("family", "family"),
    ("ratio", "ratio"),
    ("layers", "layers"),
    ("test_accuracy", "test acc. (%)"),
    ("params", "params"),
    ("bytes", "size (KB)"),
    ("max_feature_bytes", "largest feature (KB)"),
    ("macs", "MACs (M)"),
    ("latency_ms", "latency (ms, table)"),
    ("energy_mj", "energy (mJ, table)"),
    ("measured_ms", "latency (ms, TFLite host)"),
)


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "test_accuracy":
        return f"{100 * value:.2f}"
    if key in ("bytes", "max_feature_bytes"):
        return f"{value / 1024:.1f}"
    if key == "macs":
        return f"{value / 1e6:.3f}"
    if key in ("latency_ms", "energy_mj", "measured_ms"):
        return f"{value:.4f}"
    if key == "ratio":
        return f"{value:g}"
    if key == "params":
        return f"{value:,}"
    return str(value)


def to_csv(rows: list[SurveyRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(asdict(rows[0])))
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return out.getvalue()


def to_markdown(rows: list[SurveyRow]) -> str:
    header = "| " + " | ".join(label for _, label in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        values = asdict(row)
        lines.append("| " + " | ".join(_fmt(k, values[k]) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[SurveyRow], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    names = list(dict.fromkeys(r.technique for r in rows))
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(names), 2)))
    for ax, key, label in (
        (axes[0], "latency_ms", "latency (ms, device table)"),
        (axes[1], "params", "parameters"),
    ):
        for name, color in zip(names, colors, strict=False):
            pts = [r for r in rows if r.technique == name]
            ax.plot(
                [getattr(r, key) for r in pts],
                [100 * r.test_accuracy for r in pts],
                "o-" if len(pts) > 1 else "*",
                color=color,
                label=name,
                markersize=10 if name == "original" else 6,
            )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_survey(rows: list[SurveyRow], config: RootConfig, command: str) -> dict[str, Path]:
    out = Path(config.survey.out_dir)
    stem = out / config.name
    paths = {"csv": stem.with_suffix(".csv"), "md": stem.with_suffix(".md"),
             "png": stem.with_suffix(".png")}  # fmt: skip
    atomic_write_text(paths["csv"], to_csv(rows))
    profile = load_profile(config.device.profile)  # the table `device=auto` resolved to
    table = f"{profile.name} ({profile.kind} table)"
    title = f"{config.name}: {config.model.name} on {config.data.name}, {table}"
    atomic_write_bytes(paths["png"], plot(rows, title))
    s = config.survey
    doc = (
        f"# Survey: {title}\n\n"
        f"Each technique alone, on every layer it fits (column *layers*), fine-tuned for "
        f"{s.finetune_epochs} epoch(s) by distillation from the base model"
        f"{f' on {s.finetune_examples} training images' if s.finetune_examples else ''}. "
        "Latency and energy come from the device table; the last column is the float32 TFLite "
        "file timed in the LiteRT interpreter on the machine that ran the survey (one thread; "
        "the median of 21 rounds of back-to-back calls, once per row: on a shared machine the "
        "same file's time moves between moments, so rank rows by the table's columns). Size "
        "counts sparse weights in bitmask form.\n\n"
        f"Command: `{command}`\n\n"
        f"{to_markdown(rows)}\n![survey plot]({paths['png'].name})\n"
    )
    atomic_write_text(paths["md"], doc)
    partial_path(config).unlink(missing_ok=True)
    return paths
