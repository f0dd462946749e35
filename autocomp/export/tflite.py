"""TFLite conversion and the LiteRT interpreter: a model (the built-in op tuples or any JAX
function) as a batch-1 flatbuffer, float32, full-integer int8 or mixed (:func:`to_tflite`,
:func:`function_to_tflite`, :func:`mixed_tflite`), run and timed on this host (:class:`TfliteModel`,
:func:`time_calls`). TensorFlow and LiteRT are imported inside the functions that need them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from autocomp.models.convs import export_lowering
from autocomp.models.ops import Op, SequentialNet, bake_quantized


@dataclass(frozen=True)
class Timing:
    """Latency of one model: median and spread (half the interquartile range) in ms, and the
    10th and 90th percentiles where the samples are known."""

    median_ms: float
    spread_ms: float
    repeats: int
    p10_ms: float | None = None
    p90_ms: float | None = None


def time_calls(
    call: Callable[[], object],
    rounds: int = 21,
    min_round_ms: float = 3.0,
    warmup_ms: float = 50.0,
) -> Timing:
    """Median over ``rounds`` of the mean time of one ``call``, each round long enough
    (``min_round_ms``) that the timer's resolution does not matter."""
    start = time.perf_counter()
    calls = 0
    while (time.perf_counter() - start) * 1e3 < warmup_ms or calls < 3:
        call()
        calls += 1
    per_call_ms = (time.perf_counter() - start) * 1e3 / calls
    inner = max(1, int(np.ceil(min_round_ms / max(per_call_ms, 1e-6))))
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            call()
        samples.append((time.perf_counter() - t0) * 1e3 / inner)
    p10, q1, q3, p90 = np.percentile(samples, [10, 25, 75, 90])
    median = statistics.median(samples)
    return Timing(median, float(q3 - q1) / 2, rounds * inner, float(p10), float(p90))


# the files of an export, by kind
FILE_NAMES = {"float32": "model.tflite", "int8": "model_int8.tflite",
              "mixed": "model_mixed.tflite"}  # fmt: skip


def baked_fn(ops: tuple[Op, ...], params: dict):
    """The op-list model as a function of a batch of inputs, k-bit kernels baked to their
    quantized values (:func:`autocomp.models.ops.bake_quantized`), for a converter."""
    ops, params = bake_quantized(ops, params)
    model = SequentialNet(ops)
    return lambda x: model.apply({"params": params}, x)


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
    return function_to_tflite(baked_fn(ops, params), input_shape, calibration)


def _converter(fn, input_shape: tuple[int, ...]):
    """The TFLite converter of a JAX function of a batch of inputs, at batch 1."""
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
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)


def _calibrate_on(converter, calibration: np.ndarray) -> None:
    """Post-training quantization of ``converter``, calibrated on ``calibration`` (one example
    per call)."""
    import tensorflow as tf

    def representative() -> Iterator[list[np.ndarray]]:
        for x in calibration:
            yield [x[None].astype(np.float32)]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative


def function_to_tflite(
    fn, input_shape: tuple[int, ...], calibration: np.ndarray | None = None
) -> bytes:
    """A batch-1 TFLite flatbuffer of a JAX function of a batch of inputs (any model: the
    built-in op tuples and a user's materialized linen model); int8 with ``calibration``."""
    import tensorflow as tf

    converter = _converter(fn, input_shape)
    if calibration is not None:
        _calibrate_on(converter, calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


# TFLite's weighted ops and the axis of their filter that holds the output channels
WEIGHTED_TFLITE = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


def on_8bit_grid(kernel: np.ndarray, axis: int) -> bool:
    """Whether a float kernel holds symmetric per-channel 8-bit values along ``axis``, as
    :func:`autocomp.models.ops.fake_quant` leaves them (every channel a multiple of its
    max|w| / 127; a per-channel scale, e.g. a folded batch norm, keeps that). A kernel whose
    channels have at most one non-zero weight each says nothing and is not counted."""
    w = np.moveaxis(np.asarray(kernel, np.float64), axis, 0).reshape(kernel.shape[axis], -1)
    peak = np.abs(w).max(axis=1, keepdims=True)
    levels = np.divide(w * 127, peak, out=np.zeros_like(w), where=peak > 0)
    informative = bool((np.count_nonzero(w, axis=1) > 1).any())
    return informative and bool(np.allclose(levels, np.round(levels), atol=1e-3))


class MixedPrecisionError(ValueError):
    """The converted graph's 8-bit layers are not the plan's (the message says how)."""


def mixed_tflite(
    fn, input_shape: tuple[int, ...], calibration: np.ndarray, int8_layers: int
) -> bytes:
    """A batch-1 TFLite flatbuffer in which the plan's layers with 8-bit weights run with int8
    kernels and every other op in float32, with float input and output: the plan as the search
    priced it (:mod:`autocomp.devices.costs`).

    The converter calibrates the float graph on ``calibration``; the weighted ops whose float
    kernels lie on a per-channel 8-bit grid (:func:`on_8bit_grid`: the baked ``+q8`` layers)
    are quantized and every other op denylisted, so the quantizer puts a QUANTIZE before and a
    DEQUANTIZE after each int8 island. There must be ``int8_layers`` of them.

    Raises:
        MixedPrecisionError: the graph does not have ``int8_layers`` weighted ops on the grid.
    """
    from ai_edge_litert.interpreter import Interpreter

    # the quantizer with a denylist: TF's own (its public route, the QuantizationDebugger,
    # calibrates the model a second time to reach the same call)
    from tensorflow.lite.python.convert import mlir_quantize

    converter = _converter(fn, input_shape)
    _calibrate_on(converter, calibration)
    converter._experimental_calibrate_only = True  # float ops with their calibrated ranges
    calibrated = converter.convert()
    interpreter = Interpreter(model_content=calibrated)
    interpreter.allocate_tensors()
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    deny, found = [], 0
    for op in interpreter._get_ops_details():
        if op["op_name"] == "DELEGATE":  # the interpreter's own node, not the model's
            continue
        axis = WEIGHTED_TFLITE.get(op["op_name"])
        if axis is not None and on_8bit_grid(interpreter.get_tensor(op["inputs"][1]), axis):
            found += 1
        else:
            deny += [names[i] for i in op["outputs"]]
    if found != int8_layers:
        raise MixedPrecisionError(
            f"the plan has {int8_layers} layer(s) with 8-bit weights but the converted graph has "
            f"{found} weighted op(s) with 8-bit kernels; export the float and int8 files "
            "(model.tflite, model_int8.tflite) and report this graph"
        )
    return mlir_quantize(calibrated, denylisted_nodes=deny)


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
        rows (:func:`time_calls`: a warm-up, then rounds of back-to-back calls); a
        :class:`Timing`."""
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
