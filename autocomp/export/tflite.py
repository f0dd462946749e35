"""TFLite conversion and the LiteRT interpreter: a model (the built-in op tuples or any JAX
function) as a batch-1 flatbuffer, float32 or full-integer int8 (:func:`to_tflite`,
:func:`function_to_tflite`), run and timed on this host (:class:`TfliteModel`,
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
