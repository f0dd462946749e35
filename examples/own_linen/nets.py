"""A user's own linen model: a small residual CNN for 28x28 grey images, written with plain
flax.linen (nothing from autocomp)."""

from __future__ import annotations

import flax.linen as nn


class ConvBN(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.features, (3, 3), strides=self.strides, padding=1, use_bias=False)(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


class Block(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.relu(ConvBN(self.features)(x, train))
        return nn.relu(x + ConvBN(self.features)(y, train))


class MnistResNet(nn.Module):
    """conv 32 - block - conv 64 /2 - block - conv 128 /2 - global mean - dense."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(ConvBN(32)(x, train))
        x = Block(32)(x, train)
        x = nn.relu(ConvBN(64, strides=2)(x, train))
        x = Block(64)(x, train)
        x = nn.relu(ConvBN(128, strides=2)(x, train))
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))
