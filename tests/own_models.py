"""Models written the way a user writes them, for the own-model tests (not a test module)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx


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


class SmallResNet(nn.Module):
    """A small residual CNN with batch norm and a flatten before its dense head."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        def conv_bn(x, features, name, strides=1):
            x = nn.Conv(features, (3, 3), strides=strides, use_bias=False, name=name)(x)
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"{name}_bn")(x)

        x = nn.relu(conv_bn(x, 16, "stem"))
        y = nn.relu(conv_bn(x, 16, "block_a"))
        x = nn.relu(x + conv_bn(y, 16, "block_b"))
        x = nn.relu(conv_bn(x, 32, "down", strides=2))
        x = nn.relu(nn.Dense(64, name="fc")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="classifier")(x)


def train_linen(model, x, y, epochs: int = 8, seed: int = 0):
    """Plain optax training (Adam, cross-entropy, batch statistics), as a user would do it."""
    import jax
    import numpy as np
    import optax

    variables = model.init(jax.random.key(seed), x[:1])
    tx = optax.adam(3e-3)
    params, stats = variables["params"], variables["batch_stats"]
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, xb, yb):
        def loss_fn(p):
            logits, new = model.apply(
                {"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            return loss, new["batch_stats"]

        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x) - 63, 64):
            sel = order[i : i + 64]
            params, stats, opt = step(params, stats, opt, x[sel], y[sel])
    return {"params": params, "batch_stats": stats}


class NnxInvertedResidual(nnx.Module):
    """:class:`InvertedResidual` in NNX."""

    def __init__(self, in_features, features, expand, stride=1, se=False, *, rngs):
        hidden = in_features * expand
        self.expand = nnx.Conv(in_features, hidden, (1, 1), use_bias=False, rngs=rngs)
        self.expand_bn = nnx.BatchNorm(hidden, rngs=rngs)
        self.depthwise = nnx.Conv(
            hidden, hidden, (3, 3), strides=stride, padding=1, feature_group_count=hidden,
            use_bias=False, rngs=rngs,
        )  # fmt: skip
        self.depthwise_bn = nnx.BatchNorm(hidden, rngs=rngs)
        self.se = se
        if se:
            self.se_reduce = nnx.Linear(hidden, max(1, hidden // 4), rngs=rngs)
            self.se_expand = nnx.Linear(max(1, hidden // 4), hidden, rngs=rngs)
        self.project = nnx.Conv(hidden, features, (1, 1), use_bias=False, rngs=rngs)
        self.project_bn = nnx.BatchNorm(features, rngs=rngs)
        self.residual = stride == 1 and in_features == features

    def __call__(self, x):
        y = nnx.relu6(self.expand_bn(self.expand(x)))
        y = nnx.relu6(self.depthwise_bn(self.depthwise(y)))
        if self.se:
            s = nnx.sigmoid(self.se_expand(nnx.relu(self.se_reduce(y.mean(axis=(1, 2))))))
            y = y * s[:, None, None, :]
        y = self.project_bn(self.project(y))
        return y + x if self.residual else y


class NnxTinyMobileNetV2(nnx.Module):
    """:class:`TinyMobileNetV2` in NNX."""

    def __init__(self, num_classes: int = 10, *, rngs):
        self.stem = nnx.Conv(3, 16, (3, 3), use_bias=False, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(16, rngs=rngs)
        self.block1 = NnxInvertedResidual(16, 16, 2, rngs=rngs)
        self.block2 = NnxInvertedResidual(16, 24, 4, stride=2, se=True, rngs=rngs)
        self.block3 = NnxInvertedResidual(24, 24, 4, se=True, rngs=rngs)
        self.branch_a = nnx.Conv(24, 16, (1, 1), rngs=rngs)
        self.branch_b = nnx.Conv(24, 16, (3, 3), rngs=rngs)
        self.head = nnx.Conv(32, 48, (1, 1), rngs=rngs)
        self.classifier = nnx.Linear(48, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu6(self.stem_bn(self.stem(x)))
        x = self.block3(self.block2(self.block1(x)))
        x = nnx.relu(jnp.concatenate([self.branch_a(x), self.branch_b(x)], axis=-1))
        x = nnx.relu(self.head(x)).mean(axis=(1, 2))
        return self.classifier(x)


class NnxSmallResNet(nnx.Module):
    """:class:`SmallResNet` in NNX (for 8x8x1 inputs)."""

    def __init__(self, num_classes: int = 10, *, rngs):
        def conv_bn(c_in, c_out, strides=1):
            conv = nnx.Conv(c_in, c_out, (3, 3), strides=strides, use_bias=False, rngs=rngs)
            return conv, nnx.BatchNorm(c_out, momentum=0.9, rngs=rngs)

        self.stem, self.stem_bn = conv_bn(1, 16)
        self.block_a, self.block_a_bn = conv_bn(16, 16)
        self.block_b, self.block_b_bn = conv_bn(16, 16)
        self.down, self.down_bn = conv_bn(16, 32, strides=2)
        self.fc = nnx.Linear(4 * 4 * 32, 64, rngs=rngs)
        self.classifier = nnx.Linear(64, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem_bn(self.stem(x)))
        y = nnx.relu(self.block_a_bn(self.block_a(x)))
        x = nnx.relu(x + self.block_b_bn(self.block_b(y)))
        x = nnx.relu(self.down_bn(self.down(x)))
        x = nnx.relu(self.fc(x.reshape(x.shape[0], -1)))
        return self.classifier(x)


def train_nnx(model, x, y, epochs: int = 8, seed: int = 0):
    """Plain optax training of an NNX model through split/merge, as a user would."""
    import jax
    import numpy as np
    import optax

    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, rest, opt, xb, yb):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, jax.tree.map(lambda a: a, rest))  # fresh batch stats
            loss = optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()
            return loss, nnx.state(m, nnx.BatchStat)

        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        rest = nnx.merge_state(rest, stats)
        return optax.apply_updates(params, updates), rest, opt

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x) - 63, 64):
            sel = order[i : i + 64]
            params, rest, opt = step(params, rest, opt, x[sel], y[sel])
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return model
