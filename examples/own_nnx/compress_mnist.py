"""Your own NNX model through the Python API: define it, train it on MNIST with plain optax,
then ``autocomp.compress`` it, save the run and export it for the phone.

    python examples/own_nnx/compress_mnist.py --data ../shared/data/mnist.npz --out outputs/own_nnx
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

import autocomp
from autocomp.data import arrays


class MnistNet(nnx.Module):
    """conv 32 - residual pair - conv 64 /2 - depthwise-separable pair - global mean - dense."""

    def __init__(self, *, rngs: nnx.Rngs):
        conv = lambda i, o, **kw: nnx.Conv(i, o, (3, 3), use_bias=False, rngs=rngs, **kw)  # noqa: E731
        self.stem, self.stem_bn = conv(1, 32), nnx.BatchNorm(32, rngs=rngs)
        self.res_a, self.res_a_bn = conv(32, 32), nnx.BatchNorm(32, rngs=rngs)
        self.res_b, self.res_b_bn = conv(32, 32), nnx.BatchNorm(32, rngs=rngs)
        self.down, self.down_bn = conv(32, 64, strides=2), nnx.BatchNorm(64, rngs=rngs)
        self.dw = conv(64, 64, feature_group_count=64)
        self.dw_bn = nnx.BatchNorm(64, rngs=rngs)
        self.pw = nnx.Conv(64, 128, (1, 1), rngs=rngs)
        self.head = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem_bn(self.stem(x)))
        y = nnx.relu(self.res_a_bn(self.res_a(x)))
        x = nnx.relu(x + self.res_b_bn(self.res_b(y)))
        x = nnx.relu(self.down_bn(self.down(x)))
        x = nnx.relu(self.pw(nnx.relu(self.dw_bn(self.dw(x)))))
        return self.head(x.mean(axis=(1, 2)))


def train(model: MnistNet, x, y, epochs: int) -> MnistNet:
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, epochs * (len(x) // 128)))
    opt = tx.init(params)

    @jax.jit
    def step(params, rest, opt, xb, yb):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, jax.tree.map(lambda a: a, rest))
            loss = optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()
            return loss, nnx.state(m, nnx.BatchStat)

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), nnx.merge_state(rest, stats), opt, loss

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        for i in range(len(x) // 128):
            sel = order[i * 128 : (i + 1) * 128]
            params, rest, opt, loss = step(params, rest, opt, x[sel], y[sel])
        print(f"epoch {epoch + 1}: loss {float(loss):.4f} ({time.perf_counter() - start:.0f} s)")
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/mnist.npz")
    parser.add_argument("--out", default="outputs/own_nnx")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for autocomp.train")
    args = parser.parse_args()
    d = np.load(args.data)
    x, y = d["x_train"].reshape(-1, 28, 28, 1), d["y_train"]
    order = np.random.default_rng(0).permutation(len(x))
    val, tr = order[:6000], order[6000:]
    data = arrays(x[tr], y[tr], x[val], y[val], d["x_test"].reshape(-1, 28, 28, 1), d["y_test"])
    model = train(MnistNet(rngs=nnx.Rngs(0)), data.x_train, data.y_train, args.epochs)
    overrides = [
        "env.val_examples=2000",
        "agent.episodes=512",
        "finetune.epochs=2",
        "finetune.batch_size=128",
        "reward.max_latency_frac=0.5",
        *args.overrides,
    ]
    result = autocomp.compress(model, None, data, overrides, show_progress=True)
    out = Path(args.out)
    result.save(out / "run")
    report = result.export(out / "export", data)
    print(json.dumps({k: result.metrics[k] for k in ("base", "compressed", "ratios")}, indent=1))
    print(
        "TFLite float agreement",
        report["tflite_top1_agreement"],
        "int8 test accuracy",
        report["int8_test_accuracy"],
    )


if __name__ == "__main__":
    main()
