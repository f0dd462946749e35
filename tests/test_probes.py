"""The environment's per-layer probes: the output-statistics correction of a simulated plan."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from autocomp.techniques import identity_index
from autocomp.workflow.pipeline import plan_logits
from envs.compression import CompressionEnv
from envs.probes import adaptive_logits, channel_correction, with_correction


def test_channel_correction_maps_each_channel_onto_the_originals_statistics():
    rng = np.random.default_rng(0)
    y = rng.normal(2.0, 3.0, (64, 5, 5, 4)).astype(np.float32)
    y_t = 0.4 * y[..., ::-1] - 1.5 + rng.normal(0, 0.1, y.shape).astype(np.float32)
    y_t[..., 2] = 0.7  # a channel the compressed layer holds constant (a pruned filter)
    scale, shift = np.asarray(channel_correction(jnp.asarray(y), jnp.asarray(y_t)))
    fixed = y_t * scale + shift
    live = [0, 1, 3]
    np.testing.assert_allclose(fixed[..., live].mean((0, 1, 2)), y[..., live].mean((0, 1, 2)),
                               atol=1e-3)  # fmt: skip
    np.testing.assert_allclose(fixed[..., live].std((0, 1, 2)), y[..., live].std((0, 1, 2)),
                               rtol=1e-3)  # fmt: skip
    assert (scale[2], shift[2]) == (1.0, 0.0)  # left as it is, not blown up


@pytest.mark.slow  # 32 s; the option is off by default (docs/ranking.md)
def test_corrected_scores_leave_the_base_model_and_the_materialization_check_alone(prepared):
    p = prepared
    env = CompressionEnv(p.ops, p.space, correct=True)
    x, y = p.data.x_val[:128], p.data.y_val[:128]
    params = env.make_params(p.base_params, p.aux, x, y, p.reward, p.data.x_train)
    keep = identity_index(env.techniques)
    for layer in env.layers:  # the identity technique needs no correction
        np.testing.assert_allclose(params.correction[layer.index][keep, 0],
                                   [np.ones(layer.features), np.zeros(layer.features)],
                                   atol=1e-5)  # fmt: skip
    base = jnp.stack([jnp.full(len(env.layers), keep), jnp.zeros(len(env.layers), int)], -1)
    np.testing.assert_allclose(env.logits(base, params, x), env.logits(base, params, x, False),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    # a plan with every layer at its most compressed allowed action
    plan = np.array([np.argwhere(a)[-1] for a in np.asarray(params.allowed)])
    corrected, plain = env.logits(plan, params, x), env.logits(plan, params, x, False)
    assert not np.allclose(corrected, plain)
    # an environment that does not score with it holds the identity, and can be given it
    plain_env = CompressionEnv(p.ops, p.space)
    other = plain_env.make_params(p.base_params, p.aux, x, y, p.reward, p.data.x_train)
    np.testing.assert_array_equal(plain_env.logits(plan, other, x, True), plain)
    fitted = with_correction(plain_env, other, p.data.x_train)
    np.testing.assert_allclose(plain_env.logits(plan, fitted, x, True), corrected, rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    # what a materialized model is checked against is the uncorrected simulation
    np.testing.assert_array_equal(plan_logits(env, params)(plan)(x), plain)


def test_statistics_re_estimated_under_the_base_plan_leave_it_as_it_is(prepared):
    p = prepared
    env = CompressionEnv(p.ops, p.space)
    x = p.data.x_val[:64]
    params = env.make_params(p.base_params, p.aux, x, p.data.y_val[:64], p.reward)
    keep = identity_index(env.techniques)
    base = jnp.stack([jnp.full(len(env.layers), keep), jnp.zeros(len(env.layers), int)], -1)
    stats = jnp.asarray(p.data.x_train[:128])
    np.testing.assert_allclose(adaptive_logits(env, base, params, x, stats),
                               env.logits(base, params, x), rtol=1e-4, atol=1e-4)  # fmt: skip
    plan = np.array([np.argwhere(a)[-1] for a in np.asarray(params.allowed)])
    assert not np.allclose(
        adaptive_logits(env, plan, params, x, stats), env.logits(plan, params, x)
    )
