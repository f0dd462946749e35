"""The sharding check's measurement: plans scored and one epoch trained on the tiny LeNet run,
on however many devices this process has. ``tests/test_sharding.py`` calls :func:`measure`
in-process (one device) and runs this module in a child process with 2 forced host devices
(``XLA_FLAGS`` only takes effect before jax starts)."""

import dataclasses
import json
import sys

import jax
import numpy as np
from conftest import tiny_config_for

from autocomp.run import build_env
from autocomp.search import rollouts
from autocomp.training.loop import fit
from autocomp.workflow.pipeline import prepare


def measure(cache_dir: str) -> dict:
    config = tiny_config_for(cache_dir)
    config = dataclasses.replace(
        config,
        env=dataclasses.replace(config.env, val_examples=215),  # odd: the 2-way split pads
        base=dataclasses.replace(config.base, epochs=2),
    )
    p = prepare(config)
    env, params = build_env(p)
    act = lambda key, layer, obs: rollouts.random_allowed(key, obs.action_mask)  # noqa: E731
    out = jax.jit(lambda k: rollouts.episode_metrics(rollouts.rollout(env, params, k, 16, act)))
    metrics = jax.device_get(out(jax.random.key(0)))
    tuned, _ = fit(p.ops, p.base_params, p.data, epochs=1, batch_size=64, learning_rate=1e-3,
                   weight_decay=0.0, seed=0)  # fmt: skip
    return {
        "devices": jax.local_device_count(),
        "val_shards": len(params.x_val.sharding.device_set),
        "n_val": int(params.x_val.shape[0]),
        "accuracy": np.asarray(metrics["accuracy"]).tolist(),
        "plans": np.asarray(metrics["plan"]).tolist(),
        "tuned": float(sum(np.abs(x).sum() for x in jax.tree.leaves(tuned))),
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(measure(sys.argv[1])))  # noqa: T201 (read by the parent)
