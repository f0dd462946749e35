"""Export a finished run for the phone: TFLite files, a verification report and a model card.

``python -m autocomp.export run=<run dir>`` (or ``export=true`` on ``autocomp.train``) reads the
run's compressed model and writes, atomically, into ``<run dir>/export/``:

- ``model.tflite``: float32, batch 1, converted from the materialized Flax model with jax2tf
  (native serialization) and the TFLite converter; batch norm is already folded, ReLU fuses;
- ``model_int8.tflite``: full-integer post-training quantization (int8 weights, activations,
  input and output) calibrated on training images;
- ``model_mixed.tflite``, where the plan has layers with 8-bit weights (``+q8``): those layers
  with int8 kernels, every other op float32, float input and output: the plan as the device
  table priced it (calibrated like the int8 file);
- ``verify.json``: the files run in the LiteRT interpreter on the test split: top-1 agreement
  and max absolute logit difference against the JAX model, test accuracies, measured host
  latency (median of timed ``invoke`` calls) and file sizes, with pass/fail against the bars
  (float agreement >= 99.9%, int8 and mixed accuracy within 1 point of float) and the table's
  latency of the plan beside the mixed file's host latency;
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
from autocomp.export.tflite import (
    FILE_NAMES,
    MixedPrecisionError,
    TfliteModel,
    Timing,
    baked_fn,
    function_to_tflite,
    mixed_tflite,
    time_calls,
    to_tflite,
)
from autocomp.export.verify import add_table_latencies, verify, verify_logits
from autocomp.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from autocomp.models.ops import WEIGHTED, Op
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


def int8_layer_count(ops) -> int:
    """Deployed conv and dense ops with 8-bit weights (the plan's ``+q8`` layers)."""
    return sum(op.kind in WEIGHTED and op.bits == 8 for op in ops)


def _convert(fn, shape, calibration, int8_layers: int, progress) -> tuple[dict, str | None]:
    """The float32, int8 and (with ``int8_layers``) mixed files of ``fn``; the reason a mixed
    file could not be made, or ``None``."""
    if progress is not None:
        kinds = ["float32"] + (["int8"] if calibration is not None else [])
        kinds += ["mixed"] if calibration is not None and int8_layers else []
        progress(f"converting to TFLite ({', '.join(kinds)})")
    files = {"float32": function_to_tflite(fn, shape)}
    if calibration is None:
        return files, None
    files["int8"] = function_to_tflite(fn, shape, calibration)
    if not int8_layers:
        return files, None
    try:
        files["mixed"] = mixed_tflite(fn, shape, calibration, int8_layers)
    except MixedPrecisionError as err:  # the other files still export and verify
        log.warning("no model_mixed.tflite: %s", err)
        return files, str(err)
    except Exception as err:  # the quantizer's own failures (a private TF entry point)
        log.warning("no model_mixed.tflite: the quantizer failed: %r", err)
        return files, f"the quantizer failed: {err!r}"
    return files, None


def _write_files(out_dir: Path, files: dict) -> None:
    """The TFLite files, before they are verified (a failed check loses nothing); a
    ``model_mixed.tflite`` of an earlier export that this one has none of is removed."""
    for kind, content in files.items():
        atomic_write_bytes(out_dir / FILE_NAMES[kind], content)
    if "mixed" not in files:
        (out_dir / FILE_NAMES["mixed"]).unlink(missing_ok=True)


def _finish_report(report: dict, metrics: dict | None, mixed_error: str | None) -> None:
    if mixed_error is not None:
        report["mixed"] = {"error": mixed_error}
    if metrics is not None:
        add_table_latencies(report, metrics)


def _calibration(data, examples: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return data.x_train[rng.permutation(len(data.x_train))[:examples]]


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
    int8_layers: int = 0,
) -> dict:
    """Convert any model function ``fn(x) -> logits`` (a user's compressed model) to float32,
    int8 and (with ``int8_layers`` layers of 8-bit weights) mixed TFLite files in ``out_dir``,
    verified in the LiteRT interpreter on the test split against its JAX test logits
    ``reference``; writes and returns ``verify.json`` (with the run's ``metrics``, the table's
    latencies beside the files' host latencies)."""
    shape = data.x_test.shape[1:]
    calibration = _calibration(data, calibration_examples) if int8 else None
    files, mixed_error = _convert(fn, shape, calibration, int8_layers, progress)
    _write_files(out_dir, files)
    n = len(reference)
    report = verify_logits(reference, files, data.x_test[:n], data.y_test[:n], num_threads,
                           progress)  # fmt: skip
    _finish_report(report, metrics, mixed_error)
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
    n8 = int8_layer_count(restored.compressed.deployed_ops)
    report = export_function(fn, reference, data, run_dir / "export", True, num_threads,
                             calibration_examples, progress, restored.metrics, n8)  # fmt: skip
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
    files, mixed_error = _convert(
        baked_fn(ops, params), input_shape, _calibration(data, calibration_examples),
        int8_layer_count(ops), progress,
    )  # fmt: skip
    out = run_dir / "export"
    _write_files(out, files)
    x_test, y_test = data.x_test, data.y_test
    if max_test_examples is not None:
        x_test, y_test = x_test[:max_test_examples], y_test[:max_test_examples]
    report = verify(ops, params, files, x_test, y_test, num_threads, progress)
    _finish_report(report, metrics, mixed_error)
    atomic_write_json(out / "verify.json", report)
    atomic_write_text(out / "MODEL_CARD.md", model_card(run_dir, plan, metrics, report, record))
    return report


__all__ = [
    "FILE_NAMES",
    "ExportError",
    "TfliteModel",
    "Timing",
    "baked_fn",
    "export_custom_run",
    "export_function",
    "export_run",
    "function_to_tflite",
    "int8_layer_count",
    "load_compressed",
    "mixed_tflite",
    "model_card",
    "time_calls",
    "to_tflite",
    "verify",
    "verify_logits",
    "write_model_card",
]
