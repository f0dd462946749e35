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
TensorFlow and LiteRT are imported only here.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from flax import serialization

from autocomp.costs import cpu_model
from autocomp.data import DataError, load_dataset
from autocomp.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from autocomp.linen import ModelError
from autocomp.models import Op, SequentialNet, bake_quantized, export_lowering
from autocomp.pipeline import recorded_data, run_paths
from autocomp.plan import Plan, PlanError
from autocomp.training import predict

log = logging.getLogger(__name__)

FLOAT_AGREEMENT_BAR = 0.999
INT8_ACCURACY_DROP_BAR = 0.01


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


def to_tflite(
    ops: tuple[Op, ...],
    params: dict,
    input_shape: tuple[int, ...],
    calibration: np.ndarray | None = None,
) -> bytes:
    """A batch-1 TFLite flatbuffer of the model; full-integer int8 when ``calibration`` is given.

    Layers with k-bit weights are converted with their quantized values (the float file holds
    them exactly; the int8 file quantizes them again with the converter's own scheme).
    """
    ops, params = bake_quantized(ops, params)
    model = SequentialNet(ops)
    return function_to_tflite(
        lambda x: model.apply({"params": params}, x), input_shape, calibration
    )


def function_to_tflite(
    fn, input_shape: tuple[int, ...], calibration: np.ndarray | None = None
) -> bytes:
    """A batch-1 TFLite flatbuffer of a JAX function of a batch of inputs (any model: the
    built-in op tuples and a user's materialized linen model); int8 with ``calibration``."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    converted = jax2tf.convert(fn, with_gradient=False)
    fn = tf.function(
        converted,
        input_signature=[tf.TensorSpec((1, *input_shape), tf.float32)],
        autograph=False,
    )
    with export_lowering():  # grouped/depthwise convs as TFLite's own ops
        concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    if calibration is not None:

        def representative() -> Iterator[list[np.ndarray]]:
            for x in calibration:
                yield [x[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


class TfliteModel:
    """A TFLite model in the LiteRT interpreter; quantizes int8 inputs and outputs itself."""

    def __init__(self, content: bytes, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        if self.input["dtype"] != np.int8:
            return x.astype(np.float32)
        scale, zero = self.input["quantization"]
        return np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.output["dtype"] != np.int8:
            return y.astype(np.float32)
        scale, zero = self.output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits for a batch, one ``invoke`` per example (the file is batch 1)."""
        out = []
        for example in x:
            self.interpreter.set_tensor(self.input["index"], self._quantize(example[None]))
            self.interpreter.invoke()
            out.append(self._dequantize(self.interpreter.get_tensor(self.output["index"]))[0])
        return np.stack(out)

    def timing(self, example: np.ndarray, **kwargs):
        """Latency of one ``invoke`` on ``example`` on this host, timed as the profiler times its
        rows (:func:`~autocomp.profiling.time_calls`: a warm-up, then rounds of back-to-back
        calls); a :class:`~autocomp.profiling.Timing`."""
        from autocomp.profiling import time_calls

        self.interpreter.set_tensor(self.input["index"], self._quantize(example[None]))
        return time_calls(self.interpreter.invoke, **kwargs)

    def latency_ms(self, example: np.ndarray, **kwargs) -> dict:
        """:meth:`timing` in ms as a record: the median and the 10th and 90th percentiles of
        the rounds' means, and the number of calls."""
        t = self.timing(example, **kwargs)
        return {"median": t.median_ms, "p10": t.p10_ms, "p90": t.p90_ms, "repeats": t.repeats}


def tflite_op_names(content: bytes) -> list[str]:
    """The builtin operator of every node, in order (what the phone's runtime will run)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [names.get(codes[op.opcodeIndex], "CUSTOM") for op in model.subgraphs[0].operators]


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
    if "int8" in report:
        report["int8_test_accuracy"] = report["int8"]["test_accuracy"]
        checks["int8_within_1pt_ok"] = (
            report["int8_test_accuracy"] >= float_acc - INT8_ACCURACY_DROP_BAR
        )
    report["checks"] = checks
    report["passed"] = all(checks.values())
    return report


def table_int8_latency(metrics: dict) -> dict:
    """The int8 latency the run's device table predicts for the compressed model, to read next
    to the host-measured one (``latency_ms``: the host, not the phone)."""
    table = metrics.get("device_table") or {}
    name = table.get("name") if isinstance(table, dict) else table
    predicted = metrics.get("compressed", {}).get("latency_int8_ms")
    return {"table": name, "predicted_ms": predicted,
            "note": None if predicted is not None else "this table has no int8 column"}  # fmt: skip


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
    for kind, name in (("float32", "model.tflite"), ("int8", "model_int8.tflite")):
        if kind in report:
            r = report[kind]
            lines.append(
                f"| `{name}` | {r['bytes']:,} | {r['latency_ms']['median']:.4f} | "
                f"{100 * r['test_accuracy']:.2f}% |"
            )
    predicted = report.get("int8", {}).get("table_latency_ms") or {}
    if predicted.get("predicted_ms") is not None:
        lines += ["", f"The device table `{predicted['table']}` predicts "
                  f"{predicted['predicted_ms']:.4f} ms for `model_int8.tflite` on its device "
                  f"({comp['latency_ms']:.4f} ms float32); see its int8 column."]  # fmt: skip
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
    return "\n".join(lines)


def write_model_card(run_dir: Path, plan: Plan, metrics: dict, report: dict, record: dict):
    atomic_write_text(run_dir / "export" / "MODEL_CARD.md",
                      model_card(run_dir, plan, metrics, report, record))  # fmt: skip


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
    from autocomp.custom import restore_run

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


USAGE = """usage: python -m autocomp.export run=<run dir> [threads=1] [calibration=200]
                                 [test_examples=N]

Writes <run dir>/export/{model.tflite, model_int8.tflite, verify.json, MODEL_CARD.md}."""


def parse_args(argv: list[str]) -> dict:
    """``key=value`` arguments, like Hydra overrides; unknown keys are errors."""
    known = {"run": str, "threads": int, "calibration": int, "test_examples": int}
    args: dict = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in known:
            raise ExportError(f"unknown argument {arg!r}\n{USAGE}")
        try:
            args[key] = known[key](value)
        except ValueError as err:
            raise ExportError(f"{key}={value!r} must be a {known[key].__name__}") from err
    if "run" not in args:
        raise ExportError(f"run=<run dir> is required\n{USAGE}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        run_json = run_paths(Path(args["run"]))["run"]
        custom = run_json.is_file() and json.loads(run_json.read_text())["config"]["model"].get(
            "_target_"
        )
        report = (export_custom_run if custom else export_run)(
            Path(args["run"]),
            num_threads=args.get("threads", 1),
            calibration_examples=args.get("calibration", 200),
            max_test_examples=args.get("test_examples"),
            progress=log.info,
        )
    except (ExportError, DataError, PlanError, ModelError) as err:
        print(f"autocomp.export: {err}", file=sys.stderr)  # noqa: T201 (CLI output)
        return 2
    out = Path(args["run"]) / "export"
    f, q = report["float32"], report["int8"]
    print(  # noqa: T201 (CLI output)
        f"float32: {f['bytes']:,} bytes, test accuracy {100 * f['test_accuracy']:.2f}%, "
        f"top-1 agreement with JAX {100 * f['top1_agreement']:.2f}%, "
        f"max |dlogit| {f['max_abs_logit_diff']:.2e}, {f['latency_ms']['median']:.4f} ms\n"
        f"int8:    {q['bytes']:,} bytes, test accuracy {100 * q['test_accuracy']:.2f}%, "
        f"top-1 agreement with JAX {100 * q['top1_agreement']:.2f}%, "
        f"{q['latency_ms']['median']:.4f} ms\n"
        f"checks: {report['checks']} -> {'PASSED' if report['passed'] else 'FAILED'}\n"
        f"wrote {out}/{{model.tflite, model_int8.tflite, verify.json, MODEL_CARD.md}}"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
