"""Mixed-precision deployment on a device: the TFLite file a plan's table price stands for
(:func:`deployed_file`) and the rate of the QUANTIZE/DEQUANTIZE ops around its ``+q8`` layers,
measured for a table (:func:`conversion_gbs`; priced by
:func:`autocomp.devices.costs.conversion_ms`)."""

from __future__ import annotations

import logging

import numpy as np

from autocomp.models.ops import Op, param_shapes

log = logging.getLogger(__name__)

CONVERSION_SHAPES = ((8, 8, 32), (16, 16, 32), (32, 32, 16))  # 3x3 convs, 6k-33k elements


def _q8_conv(shape, seed: int = 0):
    """A 3x3 conv keeping ``shape``'s channels, with 8-bit weights: (ops, random params)."""
    import jax

    rng = np.random.default_rng(seed)
    ops = (Op("conv", "op", shape[-1], 3, bits=8),)
    params = jax.tree.map(
        lambda s: rng.standard_normal(s.shape, np.float32) * 0.1, param_shapes(ops, shape)
    )
    return ops, params


def conversion_models() -> list[tuple[int, bytes, bytes]]:
    """Per shape of :data:`CONVERSION_SHAPES`: the elements converted, a one-conv model with
    8-bit weights as ``model_mixed.tflite`` runs it (QUANTIZE, int8 CONV_2D, DEQUANTIZE) and
    the same conv fully int8; their difference times the two conversions."""
    from autocomp.export import baked_fn, mixed_tflite, to_tflite

    models = []
    for shape in CONVERSION_SHAPES:
        ops, params = _q8_conv(shape)
        calibration = np.random.default_rng(1).random((8, *shape), np.float32)
        mixed = mixed_tflite(baked_fn(ops, params), shape, calibration, 1)
        models.append((2 * int(np.prod(shape)), mixed, to_tflite(ops, params, shape, calibration)))
    return models


def conversion_gbs(measure, attempts: int = 3) -> float | None:
    """The QUANTIZE/DEQUANTIZE rate in GB/s at 5 bytes per element, least squares through the
    origin over :func:`conversion_models`; ``measure(content) -> ms``. Each model pair is timed
    again (up to ``attempts`` times, the median difference kept) while a difference is within
    noise; ``None`` (with a warning) where none rises above it: the table then prices the
    conversions at its elementwise bandwidth, as the phone tables do."""
    models = conversion_models()
    elements = 5 * np.array([n for n, _, _ in models], float)  # bytes moved
    extra: list[list[float]] = [[] for _ in models]
    for _ in range(attempts):
        for diffs, (_, mixed, int8) in zip(extra, models, strict=True):
            diffs.append(measure(mixed) - measure(int8))
        seconds = np.array([np.median(d) for d in extra]) * 1e-3
        if (seconds > 0).all():
            break
    keep = seconds > 0
    if not keep.all():  # noise larger than the conversions: the rate from the positive ones
        log.warning("conversion timings within noise (%s ms)", np.round(seconds * 1e3, 5))
    if not keep.any():
        log.warning("QUANTIZE/DEQUANTIZE not measured: priced at the elementwise bandwidth")
        return None
    bytes_moved, seconds = elements[keep], seconds[keep]
    return float((bytes_moved @ bytes_moved) / (bytes_moved @ seconds) / 1e9)


def deployed_file(fn, shape, ops, profile) -> bytes:
    """The TFLite file a plan's table price stands for: the mixed-precision one where the plan
    has ``+q8`` layers and the table int8 data (:mod:`autocomp.devices.costs`), else float32.
    Its calibration inputs are random: latency does not depend on the values."""
    from autocomp.export import function_to_tflite, int8_layer_count, mixed_tflite
    from autocomp.export.tflite import MixedPrecisionError

    n8 = int8_layer_count(ops)
    if n8 and profile.int8_table is not None:
        calibration = np.random.default_rng(0).random((8, *shape), np.float32)
        try:
            return mixed_tflite(fn, shape, calibration, n8)
        except MixedPrecisionError as err:  # timed as float: this plan's error will show it
            log.warning("timing the float file: %s", err)
    return function_to_tflite(fn, shape)


def deployed_ops_file(ops, params, shape, profile) -> bytes:
    """:func:`deployed_file` of a built-in op list and its params (k-bit kernels baked)."""
    from autocomp.export import baked_fn

    return deployed_file(baked_fn(ops, params), shape, ops, profile)
