"""Models written the way a user writes them, for the own-model tests (not a test module)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class InvertedResidual(nn.Module):
    """MobileNet-V2's block: 1x1 expand, 3x3 depthwise, optional squeeze-excite, 1x1 project,
    and a shortcut where the shapes allow (widths from attributes, as torchvision does)."""

    in_features: int
    features: int
    expand: int = 4
    stride: int = 1
    se: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = self.in_features * self.expand
        y = nn.Conv(hidden, (1, 1), use_bias=False, name="expand")(x)
        y = nn.relu6(nn.BatchNorm(use_running_average=not train, name="expand_bn")(y))
        y = nn.Conv(
            hidden, (3, 3), strides=self.stride, padding=1, feature_group_count=hidden,
            use_bias=False, name="depthwise",
        )(y)  # fmt: skip
        y = nn.relu6(nn.BatchNorm(use_running_average=not train, name="depthwise_bn")(y))
        if self.se:
            s = y.mean(axis=(1, 2))
            s = nn.relu(nn.Dense(max(1, hidden // 4), name="se_reduce")(s))
            s = nn.sigmoid(nn.Dense(hidden, name="se_expand")(s))
            y = y * s[:, None, None, :]
        y = nn.Conv(self.features, (1, 1), use_bias=False, name="project")(y)
        y = nn.BatchNorm(use_running_average=not train, name="project_bn")(y)
        if self.stride == 1 and self.in_features == self.features:
            y = y + x
        return y


class ShapeBranching(nn.Module):
    """A residual block that decides on its input's width at run time."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="stem")(x))
        y = nn.Conv(8, (3, 3), name="conv")(x)
        if x.shape[-1] == 8:
            y = y + x
        return nn.Dense(10, name="classifier")(nn.relu(y).mean(axis=(1, 2)))


class TinyMobileNetV2(nn.Module):
    """A small MobileNet-V2-style classifier with a concat of two branches."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(16, (3, 3), use_bias=False, name="stem")(x)
        x = nn.relu6(nn.BatchNorm(use_running_average=not train, name="stem_bn")(x))
        x = InvertedResidual(16, 16, expand=2, name="block1")(x, train)
        x = InvertedResidual(16, 24, expand=4, stride=2, se=True, name="block2")(x, train)
        x = InvertedResidual(24, 24, expand=4, se=True, name="block3")(x, train)
        a = nn.Conv(16, (1, 1), name="branch_a")(x)
        b = nn.Conv(16, (3, 3), name="branch_b")(x)
        x = nn.relu(jnp.concatenate([a, b], axis=-1))
        x = nn.Conv(48, (1, 1), name="head")(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(x)
