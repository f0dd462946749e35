"""The built-in models as ordinary linen modules, written as a user would write them.

Each matches its ``experiments/model/<name>.yaml`` op list layer for layer (the same layer
names, shapes and MACs; ``tests/test_own_models.py`` checks this through the own-model front
end), so ``model._target_=autocomp.models.zoo.ResNet20`` compresses it like any user's model.
Convolutions before a batch norm have no bias (the norm's shift takes its place).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


def _pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))


class LeNetDigits(nn.Module):
    """A LeNet-style CNN for 8x8 digits: two 3x3 convs, a max-pool, two dense layers."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(32, (3, 3), name="conv1")(x))
        x = _pool(nn.relu(nn.Conv(64, (3, 3), name="conv2")(x)))
        x = nn.relu(nn.Dense(256, name="fc1")(x.reshape(len(x), -1)))
        return nn.Dense(self.num_classes, name="fc2")(x)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) for 28x28 MNIST, with SAME padding and ReLU."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _pool(nn.relu(nn.Conv(6, (5, 5), name="conv1")(x)))
        x = _pool(nn.relu(nn.Conv(16, (5, 5), name="conv2")(x)))
        x = nn.relu(nn.Dense(120, name="fc1")(x.reshape(len(x), -1)))
        x = nn.relu(nn.Dense(84, name="fc2")(x))
        return nn.Dense(self.num_classes, name="fc3")(x)


class AudioCnn(nn.Module):
    """Three conv/pool stages and two dense layers over 61x40 log-mel spectrograms."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, features in enumerate((16, 32, 64)):
            x = _pool(nn.relu(nn.Conv(features, (3, 3), name=f"conv{i + 1}")(x)))
        x = nn.relu(nn.Dense(128, name="fc1")(x.reshape(len(x), -1)))
        return nn.Dense(self.num_classes, name="fc2")(x)


class ConvBN(nn.Module):
    """conv (or depthwise conv), batch norm, ReLU."""

    features: int
    kernel: int = 3
    stride: int = 1
    depthwise: bool = False
    relu: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        groups = x.shape[-1] if self.depthwise else 1
        x = nn.Conv(self.features, (self.kernel, self.kernel), self.stride, use_bias=False,
                    feature_group_count=groups, name="conv")(x)  # fmt: skip
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                         epsilon=BN_EPSILON, name="bn")(x)  # fmt: skip
        return nn.relu(x) if self.relu else x


class VggCifar(nn.Module):
    """A VGG-style CIFAR-10 net: three pairs of 3x3 convs with batch norm, each pair
    max-pooled, then a dense layer with batch norm and the classifier."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, features in enumerate((32, 32, 64, 64, 128, 128)):
            x = ConvBN(features, name=f"conv{i + 1}")(x, train)
            if i % 2:
                x = _pool(x)
        x = nn.Dense(256, use_bias=False, name="fc1")(x.reshape(len(x), -1))
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                         epsilon=BN_EPSILON, name="fc1_bn")(x)  # fmt: skip
        return nn.Dense(self.num_classes, name="fc2")(nn.relu(x))


class BasicBlock(nn.Module):
    """ResNet's basic block with the parameter-free 'option A' shortcut (He et al. 2016):
    strided subsampling, zero channels where the width grows."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = ConvBN(self.features, stride=self.stride, name="a")(x, train)
        y = ConvBN(self.features, relu=False, name="b")(y, train)
        shortcut = x[:, :: self.stride, :: self.stride, :]
        extra = self.features - x.shape[-1]
        if extra:
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, extra)))
        return nn.relu(y + shortcut)


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2): three stages of three basic
    blocks with 16, 32 and 64 filters, global average pooling, fc10."""

    num_classes: int = 10
    stages: Sequence[int] = (16, 32, 64)
    blocks: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = ConvBN(self.stages[0], name="conv1")(x, train)
        for s, features in enumerate(self.stages):
            for b in range(self.blocks):
                stride = 2 if s and not b else 1
                x = BasicBlock(features, stride, name=f"s{s + 1}b{b + 1}")(x, train)
        return nn.Dense(self.num_classes, name="fc")(x.mean(axis=(1, 2)))


class MobileNetV1(nn.Module):
    """MobileNet-V1 (Howard et al. 2017) at width 1.0: a strided 3x3 conv, 13 depthwise-
    separable pairs, global average pooling and the classifier."""

    num_classes: int = 1000
    widths: Sequence[tuple[int, int]] = (
        (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
    )  # fmt: skip

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = ConvBN(32, stride=2, name="conv1")(x, train)
        for i, (features, stride) in enumerate(self.widths):
            x = ConvBN(x.shape[-1], stride=stride, depthwise=True, name=f"dw{i + 1}")(x, train)
            x = ConvBN(features, kernel=1, name=f"pw{i + 1}")(x, train)
        return nn.Dense(self.num_classes, name="fc")(x.mean(axis=(1, 2)))
