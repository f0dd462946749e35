"""Train ``MnistResNet`` on MNIST with plain optax and save its variables with orbax, as a user
would before handing the model to autocomp.

    python examples/own_linen/train_base.py --data ../shared/data/mnist.npz \
        --out outputs/own_linen/ckpt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from nets import MnistResNet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/mnist.npz")
    parser.add_argument("--out", default="outputs/own_linen/ckpt")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    d = np.load(args.data)
    x = (d["x_train"].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    y = d["y_train"].astype(np.int32)
    x_test = (d["x_test"].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    model = MnistResNet()
    variables = model.init(jax.random.key(0), x[:1])
    params, stats = variables["params"], variables["batch_stats"]
    steps = args.epochs * (len(x) // 128)
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps))
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, xb, yb):
        def loss_fn(p):
            logits, new = model.apply(
                {"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), new

        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), new["batch_stats"], opt, loss

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for epoch in range(args.epochs):
        order = rng.permutation(len(x))
        for i in range(len(x) // 128):
            sel = order[i * 128 : (i + 1) * 128]
            params, stats, opt, loss = step(params, stats, opt, x[sel], y[sel])
        print(f"epoch {epoch + 1}: loss {float(loss):.4f} ({time.perf_counter() - start:.0f} s)")
    predict = jax.jit(lambda v, xb: model.apply(v, xb).argmax(-1))
    variables = {"params": params, "batch_stats": stats}
    pred = np.concatenate(
        [predict(variables, x_test[i : i + 1000]) for i in range(0, len(x_test), 1000)]
    )
    print(f"test accuracy {np.mean(pred == d['y_test']):.4f}")
    out = Path(args.out).resolve()
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(out, jax.tree.map(np.asarray, variables), force=True)
    checkpointer.wait_until_finished()
    print(f"saved {out}")


if __name__ == "__main__":
    main()
