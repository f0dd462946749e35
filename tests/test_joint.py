"""DeepIoT's joint fine-tuning (:mod:`autocomp.search.joint`, ``agent.joint_finetune=true``) on a
user's linen and NNX model: the weights learn under the plans the search samples while batch
statistics and the user's own model stay as they were, the tuned network materializes exactly
as it simulates, and a killed joint search resumes where an uninterrupted one ends."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from own_models import NnxSmallResNet, SmallResNet
from sklearn.datasets import load_digits

from autocomp.data import arrays
from autocomp.run import compose
from autocomp.run.custom import _check, setup
from autocomp.search.loop import run_search
from autocomp.search.plan import plan_from_indices
from autocomp.workflow.custom import compressed_model
from autocomp.workflow.tracking import NullTracker

OVERRIDES = [
    "agent.episodes=64",
    "agent.batch_episodes=16",
    "agent.updates_per_chunk=2",
    "agent.joint_finetune=true",
    "agent.joint_steps=24",
    "agent.joint_learning_rate=0.003",
    "env.techniques=[keep,filter,svd,magnitude]",
    "env.ratios=[0,0.5]",
    "reward.max_latency_frac=0.6",
    "device=analytic_cortex_a76",
    "env.distill.steps=0",
]


def _digits():
    d = load_digits()
    x = (d.images[..., None] / 16.0).astype(np.float32)
    return arrays(x[:1000], d.target[:1000], x[1000:1300], d.target[1000:1300], x[1300:],
                  d.target[1300:])  # fmt: skip


def _loss(env, params, plans, x, y) -> float:
    """Mean cross-entropy of the simulated network over ``plans`` on ``x``."""
    one = jax.jit(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        env.logits(p, params, x), y).mean())  # fmt: skip
    return float(np.mean([one(jnp.asarray(p)) for p in plans]))


class Killed(Exception):
    pass


class KillInSecondChunk(NullTracker):
    def log(self, metrics, step=None):
        if step == 40:  # a chunk is 32 plans
            raise Killed


def _setup(front: str):
    from flax import nnx

    data = _digits()
    if front == "linen":  # random weights: what the tuning learns shows clearly
        model = SmallResNet()
        variables, kwargs = model.init(jax.random.key(0), data.x_train[:1]), {"train": False}
    else:
        model, variables, kwargs = NnxSmallResNet(rngs=nnx.Rngs(0)), None, None
    st = setup(model, variables, data, compose(OVERRIDES), kwargs)
    assert st.trainer.num_chunks == 2
    return model, data, st


# the NNX twin in make test-slow: together about 50 s of the default run (10 minutes at most)
@pytest.mark.parametrize("front", ["linen", pytest.param("nnx", marks=pytest.mark.slow)])
def test_joint_search_tunes_the_weights_and_materializes_them(front):
    from flax import nnx

    model, data, st = _setup(front)
    before = jax.tree.map(np.asarray, nnx.state(model)) if front == "nnx" else None
    state, history, _ = run_search(st.trainer, st.env_params, jax.random.key(0), NullTracker(),
                                   None, "", False)  # fmt: skip
    base, tuned = st.env_params, st.trainer.scored_params(state, st.env_params)
    trainable = st.net.trainable(base.base_params)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(base.base_params), jax.tree.leaves(tuned.base_params), strict=True
        )  # fmt: skip
    ]
    assert any(changed) and changed == [c and t for c, t in zip(changed, trainable, strict=True)]
    assert not all(trainable)  # the batch statistics are leaves that did not train

    # the tuned weights fit the plans the search sampled better than the base weights do
    plans = history["plan"][-16:]
    x, y = jnp.asarray(data.x_train[:256]), jnp.asarray(data.y_train[:256])
    assert _loss(st.env, tuned, plans, x, y) < _loss(st.env, base, plans, x, y) - 0.1

    # materialized from the tuned weights, the plan computes what the search scored
    indices = history["plan"][-1]
    source = st.net.with_base_params(jax.device_get(tuned.base_params))
    plan = plan_from_indices(st.net.name, st.net.layers, st.techniques, (0.0, 0.5), indices)
    cmp = compressed_model(source, st.aux, st.techniques, plan)
    assert _check(cmp, st.env, tuned, indices, data.x_val)["prediction_agreement"] == 1.0
    if front == "nnx":  # the user's object is never changed
        after = jax.tree.map(np.asarray, nnx.state(model))
        assert jax.tree.all(jax.tree.map(np.array_equal, before, after))


@pytest.mark.slow  # three searches: about 30 s
def test_a_killed_joint_search_resumes_where_an_uninterrupted_one_ends(tmp_path):
    """The tuned weights and Adam's state live in the wrapped agent's state: the loop's opaque
    checkpoint carries them."""
    _, _, st = _setup("linen")
    key, ckpt = jax.random.key(0), tmp_path / "search.msgpack"
    with pytest.raises(Killed):
        run_search(st.trainer, st.env_params, key, KillInSecondChunk(), ckpt, "fp", False)
    state, history, _ = run_search(st.trainer, st.env_params, key, NullTracker(), ckpt, "fp",
                                   False)  # fmt: skip
    fresh, full, _ = run_search(st.trainer, st.env_params, key, NullTracker(), None, "", False)
    np.testing.assert_array_equal(history["plan"], full["plan"])
    for a, b in zip(state.delta, fresh.delta, strict=True):
        np.testing.assert_array_equal(a, b)
