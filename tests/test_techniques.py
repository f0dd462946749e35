"""Contract tests over every registered technique (optax's one test over all transformations)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LAYERS

from autocomp.config import ModelConfig
from autocomp.costs import load_profile, price_ops
from autocomp.layers import compressible_layers
from autocomp.models import SequentialNet, base_ops, init_params
from autocomp.plan import LayerChoice, Plan, check_plan, materialize, prepare_aux
from autocomp.techniques import REGISTRY, TechniqueError, make_techniques
from autocomp.training import predict

MODEL = ModelConfig("tiny_lenet", [8, 8, 1], 10, TINY_LAYERS)
OPS = base_ops(MODEL)
LAYERS = compressible_layers(OPS, (8, 8, 1))
TECHS = make_techniques(list(REGISTRY))
RATIOS = (0.0, 0.25, 0.5, 0.75, 0.9)


@pytest.fixture(scope="module")
def params():
    p = init_params(OPS, (8, 8, 1), jax.random.key(0))
    # Non-zero biases so that structured pruning of a bias is visible.
    return jax.tree.map(lambda x: np.asarray(x) + 0.01, p)


@pytest.fixture(scope="module")
def aux(params):
    return prepare_aux(LAYERS, params, TECHS)


def cases():
    for tech in TECHS:
        for layer in LAYERS:
            if tech.fits(layer) is None:
                yield pytest.param(tech, layer, id=f"{tech.name}-{layer.name}")


@pytest.mark.parametrize("tech,layer", list(cases()))
def test_simulate_keeps_shape_dtype_and_ratio0_is_identity(tech, layer, params, aux):
    p = jax.tree.map(jnp.asarray, params[layer.name])
    a = aux[layer.index][tech.name]
    for ratio in RATIOS:
        out = jax.jit(tech.simulate)(p, a, jnp.float32(ratio))
        assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, p)
        assert jax.tree.map(lambda x: x.dtype, out) == jax.tree.map(lambda x: x.dtype, p)
    same = tech.simulate(p, a, jnp.float32(0.0))
    np.testing.assert_allclose(same["kernel"], p["kernel"], atol=1e-5)
    np.testing.assert_allclose(same["bias"], p["bias"], atol=1e-6)


@pytest.mark.parametrize("tech,layer", list(cases()))
def test_error_non_decreasing_in_ratio(tech, layer, params, aux):
    p = jax.tree.map(jnp.asarray, params[layer.name])
    a = aux[layer.index][tech.name]
    errors = []
    for ratio in np.linspace(0, 0.95, 12):
        out = tech.simulate(p, a, jnp.float32(ratio))
        errors.append(float(jnp.linalg.norm(out["kernel"] - p["kernel"])))
    assert all(b >= a - 1e-5 for a, b in zip(errors, errors[1:], strict=False)), errors
    if tech.name != "keep":
        assert errors[-1] > 0


def _simulated_params(params, aux, plan):
    by_name = {t.name: t for t in TECHS}
    out = dict(params)
    for layer, choice in zip(LAYERS, plan.layers, strict=False):
        tech = by_name[choice.technique]
        p = jax.tree.map(jnp.asarray, params[layer.name])
        out[layer.name] = tech.simulate(p, aux[layer.index][tech.name], jnp.float32(choice.ratio))
    return out


def _plan(choices):
    return Plan(
        "tiny_lenet",
        tuple(LayerChoice(l.name, *choices.get(l.name, ("keep", 0.0))) for l in LAYERS),
    )


@pytest.mark.parametrize("tech,layer", list(cases()))
def test_simulate_equals_materialize(tech, layer, params, aux):
    """Also with the previous layer's filters pruned (the next layer's inputs removed)."""
    choices = {layer.name: (tech.name, 0.5)}
    if layer.index > 0:
        choices[LAYERS[layer.index - 1].name] = ("filter", 0.5)
    plan = _plan(choices)
    x = np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32)
    sim = SequentialNet(OPS).apply({"params": _simulated_params(params, aux, plan)}, x)
    ops, new_params, _ = materialize(OPS, LAYERS, params, aux, TECHS, plan)
    real = predict(ops, new_params, x)
    np.testing.assert_allclose(real, np.asarray(sim), atol=2e-4, rtol=1e-4)
    # Materialized shapes are really smaller (or equal for keep/magnitude).
    assert sum(np.size(v) for v in jax.tree.leaves(new_params)) <= 2 * sum(
        np.size(v) for v in jax.tree.leaves(params)
    )


def _formula(tech, layer, ratio):
    """(params, MACs) of a layer by the survey's formulas, written independently of the code."""
    m, n = layer.fan_in, layer.features
    positions = math.prod(layer.in_shape[:-1]) if layer.kind == "conv" else 1
    keep = lambda count: max(1, count - math.floor(ratio * count + 0.5))  # noqa: E731
    if tech == "keep":
        return m * n + n, positions * m * n
    if tech == "magnitude":
        return keep(m * n) + n, positions * m * n  # dense runtime runs every multiply
    if tech == "filter":
        return m * keep(n) + keep(n), positions * m * keep(n)
    r = keep(min(m, n))
    return r * (m + n) + n, positions * r * (m + n)


@pytest.mark.parametrize("tech,layer", list(cases()))
def test_counted_params_and_macs_equal_formula(tech, layer, params, aux):
    ratio = 0.75
    ops, new_params, _ = materialize(
        OPS, LAYERS, params, aux, TECHS, _plan({layer.name: (tech.name, ratio)})
    )
    profile = load_profile("analytic_cortex_a76")
    base = price_ops(profile, OPS, (8, 8, 1))
    cost = price_ops(profile, ops, (8, 8, 1))
    f_params, f_macs = _formula(tech.name, layer, ratio)
    b_params, b_macs = _formula("keep", layer, 0.0)
    if tech.name != "filter":  # filter also shrinks the next layer: checked separately below
        assert cost.params - base.params == f_params - b_params
        assert cost.macs - base.macs == f_macs - b_macs
    nonzero = sum(
        int(np.count_nonzero(v)) if k == "kernel" else int(np.size(v))
        for d in new_params.values()
        for k, v in d.items()
    )
    assert cost.params == nonzero


def test_filter_removes_next_layer_inputs(params, aux):
    ops, new_params, _ = materialize(
        OPS, LAYERS, params, aux, TECHS, _plan({"conv2": ("filter", 0.75)})
    )
    assert new_params["conv2"]["kernel"].shape == (3, 3, 8, 4)
    assert new_params["fc1"]["kernel"].shape == (16 * 4, 32)  # 4x4 positions x 4 channels


def test_misfit_and_bad_ratio_errors_name_layer_and_technique():
    with pytest.raises(TechniqueError, match="filter.*fc2"):
        check_plan(_plan({"fc2": ("filter", 0.5)}), LAYERS, TECHS)
    with pytest.raises(TechniqueError, match="svd.*conv1.*ratio 1.5"):
        check_plan(_plan({"conv1": ("svd", 1.5)}), LAYERS, TECHS)
    with pytest.raises(TechniqueError, match="magnitude.*-0.1"):
        check_plan(_plan({"fc1": ("magnitude", -0.1)}), LAYERS, TECHS)
    with pytest.raises(TechniqueError, match="unknown technique"):
        make_techniques(["keep", "bogus"])
