"""Convolutions as XLA:CPU runs them fast, and as the TFLite converter wants them.

:func:`conv_nhwc` is the NHWC/HWIO conv of :class:`flax.linen.Conv`; grouped and depthwise convs
take fast forms (one conv per group, shift-and-add) except under :func:`export_lowering`, where
they trace as one grouped ``lax`` conv. :class:`Conv` and :class:`Expand` are the layers the op
IR (:mod:`autocomp.models.ops`) builds from them.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array

_EXPORT_LOWERING = contextvars.ContextVar("autocomp_export_lowering", default=False)


@contextlib.contextmanager
def export_lowering() -> Iterator[None]:
    """Within this block, grouped and depthwise convs trace as one grouped ``lax`` conv, which
    the TFLite converter turns into CONV_2D / DEPTHWISE_CONV_2D. Outside it (training, search,
    distillation) they trace to forms that XLA:CPU runs fast (:func:`conv_nhwc`)."""
    token = _EXPORT_LOWERING.set(True)
    try:
        yield
    finally:
        _EXPORT_LOWERING.reset(token)


def exporting() -> bool:
    """Whether the ops trace inside :func:`export_lowering`."""
    return _EXPORT_LOWERING.get()


Padding = tuple[tuple[int, int], tuple[int, int]] | None


def _lax_conv(
    x: Array, kernel: Array, strides: Sequence[int], groups: int = 1, padding: Padding = None
) -> Array:
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=tuple(strides),
        padding="SAME" if padding is None else tuple(map(tuple, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def conv_padding(
    in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int], padding: Padding
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The explicit ((top, bottom), (left, right)) padding of a conv (SAME when ``None``)."""
    if padding is not None:
        return (tuple(padding[0]), tuple(padding[1]))
    pads = []
    for size, k, s in zip(in_hw, kernel_hw, strides, strict=True):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return (pads[0], pads[1])


def _depthwise_shift_add(
    x: Array, kernel: Array, strides: Sequence[int], padding: Padding = None
) -> Array:
    """Depthwise conv (HW1O kernel, depth multiplier O / C) as a sum of kh x kw strided,
    shifted slices times the per-channel taps: the same values as the grouped conv."""
    kh, kw, _, features = kernel.shape
    n, h, w, c = x.shape
    if features != c:
        x = jnp.repeat(x, features // c, axis=-1)  # output c*m+j reads input channel c
    sh, sw = strides
    (pt, pb), (pl, pr) = conv_padding((h, w), (kh, kw), strides, padding)
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = None
    for i in range(kh):
        for j in range(kw):
            end = (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, features)
            tap = jax.lax.slice(xp, (0, i, j, 0), end, (1, sh, sw, 1)) * kernel[i, j, 0]
            y = tap if y is None else y + tap
    return y


def conv_nhwc(
    x: Array,
    kernel: Array,
    strides: Sequence[int] = (1, 1),
    groups: int = 1,
    padding: Padding = None,
) -> Array:
    """A SAME-padded (or explicitly padded) NHWC conv with an HWIO kernel, as
    :class:`flax.linen.Conv` computes it.

    XLA:CPU runs a grouped conv (``feature_group_count`` > 1) about as slowly as the dense one,
    and a depthwise conv 6-23x slower than the same sum of shifted slices (forward and
    backward, ``python -m autocomp.bench convs``). So, except under :func:`export_lowering`, a
    depthwise conv is computed as shift-and-add and a grouped conv as one conv per group,
    concatenated.
    """
    if groups == 1 or _EXPORT_LOWERING.get():
        return _lax_conv(x, kernel, strides, groups, padding)
    if kernel.shape[2] == 1 and groups == x.shape[-1]:
        return _depthwise_shift_add(x, kernel, strides, padding)
    xs = jnp.split(x, groups, axis=-1)
    ks = jnp.split(kernel, groups, axis=-1)
    convs = [_lax_conv(a, k, strides, 1, padding) for a, k in zip(xs, ks, strict=True)]
    return jnp.concatenate(convs, axis=-1)


class Conv(nn.Module):
    """:class:`flax.linen.Conv` (SAME padding; the same params and initializers) computed by
    :func:`conv_nhwc`, so grouped and depthwise convs take its fast forms."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    groups: int = 1
    use_bias: bool = True
    padding: Padding = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        shape = (*self.kernel_size, c // self.groups, self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        y = conv_nhwc(x, kernel, self.strides, self.groups, self.padding)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y


class Expand(nn.Module):
    """SqueezeNet's fire-module expand layer: a 1x1 conv to ``features // 2`` channels and a
    3x3 conv to the rest, concatenated, with one bias."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        e1 = self.features // 2
        c = x.shape[-1]
        init = nn.initializers.lecun_normal()
        k1 = self.param("kernel1", init, (1, 1, c, e1))
        k3 = self.param("kernel3", init, (3, 3, c, self.features - e1))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        strides = (self.stride, self.stride)
        y = jnp.concatenate([conv_nhwc(x, k1, strides), conv_nhwc(x, k3, strides)], axis=-1)
        return y + bias
