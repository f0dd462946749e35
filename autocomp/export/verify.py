"""Verification of exported files: each TFLite file run in the LiteRT interpreter on the test
split against the JAX model (top-1 agreement, logit difference, accuracy, host latency), with
pass/fail against the bars."""

from __future__ import annotations

import platform
from collections.abc import Callable

import numpy as np

from autocomp.devices.host import cpu_model
from autocomp.export.tflite import FILE_NAMES, TfliteModel, tflite_op_names
from autocomp.models.ops import Op
from autocomp.training.loop import predict

FLOAT_AGREEMENT_BAR = 0.999
INT8_ACCURACY_DROP_BAR = 0.01


def verify(
    ops: tuple[Op, ...],
    params: dict,
    files: dict[str, bytes],
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the TFLite files on the test split against the JAX model; measure host latency."""
    return verify_logits(predict(ops, params, x_test), files, x_test, y_test, num_threads, progress)


def verify_logits(
    reference: np.ndarray,
    files: dict[str, bytes],
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """:func:`verify` against the JAX model's test logits ``reference`` (any model)."""
    report: dict = {
        "examples": int(len(x_test)),
        "jax_test_accuracy": float(np.mean(reference.argmax(-1) == y_test)),
        "num_threads": num_threads,
        "host": {"machine": platform.machine(), "processor": cpu_model()},
    }
    for kind, content in files.items():
        if progress is not None:
            progress(f"running {kind} TFLite model on {len(x_test)} test examples")
        model = TfliteModel(content, num_threads)
        logits = model(x_test)
        report[kind] = {
            "test_accuracy": float(np.mean(logits.argmax(-1) == y_test)),
            "top1_agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
            "max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "latency_ms": model.latency_ms(x_test[0]),
            "bytes": len(content),
            "ops": tflite_op_names(content),
        }
    float_acc = report["float32"]["test_accuracy"]
    report["tflite_top1_agreement"] = report["float32"]["top1_agreement"]
    report["tflite_max_abs_logit_diff"] = report["float32"]["max_abs_logit_diff"]
    report["float_test_accuracy"] = float_acc
    checks = {"float_agreement_ok": report["tflite_top1_agreement"] >= FLOAT_AGREEMENT_BAR}
    for kind in ("int8", "mixed"):
        if kind in report:
            report[f"{kind}_test_accuracy"] = report[kind]["test_accuracy"]
            checks[f"{kind}_within_1pt_ok"] = (
                report[kind]["test_accuracy"] >= float_acc - INT8_ACCURACY_DROP_BAR
            )
    report["checks"] = checks
    report["passed"] = all(checks.values())
    return report


def summary(run_dir, report: dict) -> str:
    """One log line on an export: where, the float file's agreement, each file's test
    accuracy, the int8 file's latency measured here beside the device table's prediction, and
    the checks."""
    accuracies = ", ".join(f"{kind} {report[kind]['test_accuracy']:.4f}"
                           for kind in FILE_NAMES
                           if "test_accuracy" in report.get(kind, {}))  # fmt: skip
    int8 = report.get("int8", {})
    predicted = (int8.get("table_latency_ms") or {}).get("predicted_ms")
    latency = ""
    if "latency_ms" in int8 and predicted is not None:  # host-measured beside the table's
        latency = (f", int8 latency {int8['latency_ms']['median']:.4f} ms here, "
                   f"{predicted:.4f} ms on {int8['table_latency_ms']['table']}")  # fmt: skip
    return (f"exported {run_dir}/export: float32 agreement {report['tflite_top1_agreement']:.4f}, "
            f"test accuracy {accuracies}{latency}, checks {report['checks']}")  # fmt: skip


def add_table_latencies(report: dict, metrics: dict) -> None:
    """Put the latencies the run's device table predicts beside the files' host-measured ones
    (``latency_ms``: the host, not the phone): the whole model as ``model_int8.tflite`` runs
    (``int8``) and the plan as priced, its ``+q8`` layers int8 (``mixed``)."""
    table = metrics.get("device_table") or {}
    name = table.get("name") if isinstance(table, dict) else table
    comp = metrics.get("compressed", {})
    if "int8" in report:
        predicted = comp.get("latency_int8_ms")
        report["int8"]["table_latency_ms"] = {
            "table": name, "predicted_ms": predicted,
            "note": None if predicted is not None else "this table has no int8 column",
        }  # fmt: skip
    if "mixed" in report:  # a file, or the reason there is none
        priced_int8 = comp.get("latency_int8_ms") is not None  # the table has int8 data
        report["mixed"]["table_latency_ms"] = {
            "table": name, "predicted_ms": comp.get("latency_ms") if priced_int8 else None,
            "note": "the plan as the search priced it: its +q8 layers with int8 kernels and "
            "their QUANTIZE/DEQUANTIZE, the other ops float32" if priced_int8 else "this table "
            "has no int8 data: the plan was priced as model.tflite runs it",
        }  # fmt: skip
