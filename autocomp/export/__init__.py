"""Export a finished run for the phone: TFLite files, a verification report and a model card.

``python -m autocomp.export run=<run dir>`` (or ``export=true`` on ``autocomp.train``) reads the
run's compressed model and writes, atomically, into ``<run dir>/export/``:

- ``model.tflite``: float32, batch 1, converted from the materialized Flax model with jax2tf
  (native serialization) and the TFLite converter; batch norm is already folded, ReLU fuses;
- ``model_int8.tflite``: full-integer post-training quantization (int8 weights, activations,
  input and output) calibrated on training images;
- ``verify.json``: both files run in the LiteRT interpreter on the test split: top-1 agreement
  and max absolute logit difference against the JAX model, test accuracies, measured host
  latency (median of timed ``invoke`` calls) and file sizes, with pass/fail against the bars
  (float agreement >= 99.9%, int8 accuracy within 1 point of float);
- ``MODEL_CARD.md``: the plan, the metrics and the commands.

The plan (``plan.json``) and params (``compressed_params.msgpack``) are already in the run dir.
TensorFlow and LiteRT are imported only in this package, inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flax import serialization

from autocomp.data import load_dataset
from autocomp.export.card import model_card, write_model_card
from autocomp.export.tflite import TfliteModel, Timing, function_to_tflite, time_calls, to_tflite
from autocomp.export.verify import table_int8_latency, verify, verify_logits
from autocomp.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from autocomp.models.ops import Op
from autocomp.search.plan import Plan
from autocomp.workflow.pipeline import recorded_data, run_paths

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """A run that cannot be exported; the message names the file and the way out."""


def load_compressed(run_dir: Path) -> tuple[tuple[Op, ...], dict, dict]:
    """(ops, params, run record) of a finished run."""
    paths = run_paths(run_dir)
    for key in ("params", "run", "metrics"):
        if not paths[key].is_file():
            raise ExportError(
                f"{str(paths[key])!r} is missing: {str(run_dir)!r} is not a finished autocomp run "
                "(metrics.json is written last); point run= at the directory a train run printed"
            )
    try:
        blob = serialization.msgpack_restore(paths["params"].read_bytes())
        listed = blob["ops"]
        ops = tuple(Op(**op) for op in (listed.values() if isinstance(listed, dict) else listed))
        params = blob["params"]
        record = json.loads(paths["run"].read_text())
    except Exception as err:  # msgpack raises several unrelated types on corrupt input
        raise ExportError(
            f"{str(paths['params'])!r} or run.json is corrupt ({err}); re-run the training"
        ) from err
    return ops, params, record


def export_function(
    fn: Callable,
    reference: np.ndarray,
    data,
    out_dir: Path,
    int8: bool = True,
    num_threads: int = 1,
    calibration_examples: int = 200,
    progress: Callable[[str], None] | None = None,
    metrics: dict | None = None,
) -> dict:
    """Convert any model function ``fn(x) -> logits`` (a user's compressed model) to float32
    and int8 TFLite files in ``out_dir``, verified in the LiteRT interpreter on the test split
    against its JAX test logits ``reference``; writes and returns ``verify.json`` (with the
    run's ``metrics``, the table's int8 prediction beside the int8 file's host latency)."""
    shape = data.x_test.shape[1:]
    if progress is not None:
        progress("converting to TFLite (float32" + (" and int8)" if int8 else ")"))
    files = {"float32": function_to_tflite(fn, shape)}
    if int8:
        rng = np.random.default_rng(0)
        calibration = data.x_train[rng.permutation(len(data.x_train))[:calibration_examples]]
        files["int8"] = function_to_tflite(fn, shape, calibration)
    for kind, content in files.items():
        atomic_write_bytes(out_dir / ("model.tflite" if kind == "float32" else "model_int8.tflite"),
                           content)  # fmt: skip
    n = len(reference)
    report = verify_logits(reference, files, data.x_test[:n], data.y_test[:n], num_threads,
                           progress)  # fmt: skip
    if metrics is not None and "int8" in report:
        report["int8"]["table_latency_ms"] = table_int8_latency(metrics)
    atomic_write_json(out_dir / "verify.json", report)
    return report


def export_custom_run(
    run_dir: Path,
    num_threads: int = 1,
    calibration_examples: int = 200,
    max_test_examples: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """:func:`export_run` for a run of a user's model (``model._target_``): the model is
    rebuilt from its import path and base checkpoint, the plan materialized on it again and
    the run's fine-tuned params put in."""
    from autocomp.workflow.restore import restore_run

    if progress is not None:
        progress("rebuilding the compressed model from the run's plan and params")
    restored = restore_run(run_dir)
    data = restored.data
    x_test = data.x_test[:max_test_examples] if max_test_examples else data.x_test
    reference = restored.logits(x_test)
    fn = restored.compressed.export_fn(restored.params)
    report = export_function(fn, reference, data, run_dir / "export", True, num_threads,
                             calibration_examples, progress, restored.metrics)  # fmt: skip
    write_model_card(run_dir, restored.plan, restored.metrics, report, restored.record)
    return report


def export_run(
    run_dir: str | Path,
    num_threads: int = 1,
    calibration_examples: int = 200,
    max_test_examples: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Convert, verify and document a finished run; returns the verification report."""
    run_dir = Path(run_dir)
    ops, params, record = load_compressed(run_dir)
    plan = Plan.load(run_paths(run_dir)["plan"])
    metrics = json.loads(run_paths(run_dir)["metrics"].read_text())
    data = load_dataset(recorded_data(record))
    input_shape = tuple(data.x_train.shape[1:])
    rng = np.random.default_rng(0)
    calibration = data.x_train[rng.permutation(len(data.x_train))[:calibration_examples]]
    if progress is not None:
        progress("converting to TFLite (float32 and int8)")
    files = {
        "float32": to_tflite(ops, params, input_shape),
        "int8": to_tflite(ops, params, input_shape, calibration),
    }
    x_test, y_test = data.x_test, data.y_test
    if max_test_examples is not None:
        x_test, y_test = x_test[:max_test_examples], y_test[:max_test_examples]
    report = verify(ops, params, files, x_test, y_test, num_threads, progress)
    report["int8"]["table_latency_ms"] = table_int8_latency(metrics)
    out = run_dir / "export"
    atomic_write_bytes(out / "model.tflite", files["float32"])
    atomic_write_bytes(out / "model_int8.tflite", files["int8"])
    atomic_write_json(out / "verify.json", report)
    atomic_write_text(out / "MODEL_CARD.md", model_card(run_dir, plan, metrics, report, record))
    return report


__all__ = [
    "ExportError",
    "TfliteModel",
    "Timing",
    "export_custom_run",
    "export_function",
    "export_run",
    "function_to_tflite",
    "load_compressed",
    "model_card",
    "time_calls",
    "to_tflite",
    "verify",
    "verify_logits",
    "write_model_card",
]
