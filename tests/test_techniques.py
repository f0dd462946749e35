"""Contract tests over every registered technique (optax's one test over all transformations)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from contract_net import LAYERS, OPS, RATIOS, TECHS  # noqa: E402

from autocomp.config import DistillConfig, RewardConfig
from autocomp.devices.costs import price_ops
from autocomp.devices.tables import load_profile
from autocomp.models.layers import layer_inputs
from autocomp.models.ops import apply_op, bake_quantized, fake_quant, init_params
from autocomp.search.plan import (
    LayerChoice,
    Plan,
    check_plan,
    materialize,
    plan_from_indices,
    prepare_aux,
)
from autocomp.search.reward import make_reward_params
from autocomp.search.space import build_search_space
from autocomp.techniques import (
    REGISTRY,
    PrepareContext,
    Technique,
    TechniqueError,
    family,
    identity_index,
    layer_forward,
    make_technique,
    make_techniques,
)
from autocomp.techniques.base import fits_weighted, same_layer_ops
from autocomp.training.loop import predict
from envs.compression import CompressionEnv

# A fire module is a different layer even at full squeeze width; k-bit weights are not the
# float ones at any ratio (checked below: 8-bit ones come within 1%).
NO_IDENTITY = {"fire", *(t.name for t in TECHS if "+q" in t.name)}


@pytest.fixture(scope="module")
def params():
    p = init_params(OPS, (8, 8, 1), jax.random.key(0))
    # Non-zero biases so that structured pruning of a bias is visible.
    return jax.tree.map(lambda x: np.asarray(x) + 0.01, p)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((128, 8, 8, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def aux(params, images):
    ctx = PrepareContext(ratios=RATIOS, distill=DistillConfig(steps=20, examples=128))
    return prepare_aux(LAYERS, params, TECHS, ctx, OPS, images)


@pytest.fixture(scope="module")
def inputs(params, images):
    return layer_inputs(OPS, LAYERS, params, images[:32])


@pytest.fixture(scope="module")
def env_and_params(params, aux, images):
    space = build_search_space(OPS, LAYERS, TECHS, RATIOS, load_profile("analytic_cortex_a76"),
                               (8, 8, 1))  # fmt: skip
    env = CompressionEnv(OPS, space)
    reward = make_reward_params(RewardConfig(), tuple(space.base[:3]), 0.5)
    env_params = env.make_params(params, aux, images[:32], np.zeros(32, int), reward)
    return jax.jit(env.logits), env_params


def cases():
    for tech in TECHS:
        for layer in LAYERS:
            if tech.fits(layer) is None:
                yield pytest.param(tech, layer, id=f"{tech.name}-{layer.name}")


def test_every_technique_fits_some_layer():
    fitting = {tech.name for tech in TECHS for layer in LAYERS if tech.fits(layer) is None}
    assert fitting == {tech.name for tech in TECHS}


def _output_error(tech, layer, params, aux, x, ratio):
    p = jax.tree.map(jnp.asarray, params[layer.name])
    y = apply_op(layer.op, {layer.name: p}, x)
    y_t = layer_forward(tech, layer, p, aux[layer.index][tech.name], jnp.float32(ratio), x)
    return float(jnp.linalg.norm(y_t - y) / jnp.linalg.norm(y)), y, y_t


@pytest.mark.parametrize("tech,layer", list(cases()))
def test_shape_dtype_kept_and_ratio0_is_identity(tech, layer, params, aux, inputs):
    p = jax.tree.map(jnp.asarray, params[layer.name])
    a = aux[layer.index][tech.name]
    x = jnp.asarray(inputs[layer.index])
    for ratio in RATIOS:
        _, y, y_t = _output_error(tech, layer, params, aux, x, ratio)
        assert y_t.shape == y.shape and y_t.dtype == y.dtype
        if tech.simulate is not None:
            out = jax.jit(tech.simulate)(p, a, jnp.float32(ratio))
            assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, p)
            assert jax.tree.map(lambda v: v.dtype, out) == jax.tree.map(lambda v: v.dtype, p)
    if not tech.ratio_free and tech.name not in NO_IDENTITY:
        error, _, _ = _output_error(tech, layer, params, aux, x, 0.0)
        assert error < 1e-5, error
    if tech.name.endswith("+q8"):
        error, _, _ = _output_error(tech, layer, params, aux, x, 0.0)
        assert 0 < error < 1e-2, error


@pytest.mark.parametrize("tech,layer", list(cases()))
def test_error_non_decreasing_in_ratio(tech, layer, params, aux, inputs):
    """Closed forms: kernel error on a fine grid, exactly. Distilled (fitted per ratio bin) or
    nonlinear replacements: output error on the layer's inputs over the bins, up to the noise of
    a short distillation."""
    a = aux[layer.index][tech.name]
    if tech.ratio_free:  # one form whatever the ratio: the same output at every ratio, and
        # an output that changed and is nearer the layer's than an all-zero one (error 1)
        x = jnp.asarray(inputs[layer.index])
        errors = [_output_error(tech, layer, params, aux, x, r)[0] for r in RATIOS]
        assert errors == [errors[0]] * len(errors), errors
        assert 0 < errors[0] < (1e-2 if tech.name.endswith("+q8") else 1.0), errors[0]
        return
    if tech.simulate is not None and "bins" not in a:
        p = jax.tree.map(jnp.asarray, params[layer.name])
        errors = []
        for ratio in np.linspace(0, 0.95, 12):
            out = tech.simulate(p, a, jnp.float32(ratio))
            errors.append(float(jnp.linalg.norm(out["kernel"] - p["kernel"])))
        tolerance = 1e-5
    else:
        x = jnp.asarray(inputs[layer.index])
        errors = [_output_error(tech, layer, params, aux, x, r)[0] for r in RATIOS]
        tolerance = 0.03
    assert all(b >= a - tolerance for a, b in zip(errors, errors[1:], strict=False)), errors
    if tech.name != "keep":
        assert errors[-1] > 0
    if "+q" in tech.name:  # fewer bits, more error where nothing is pruned
        base = tech.name.split("+")[0]
        coarse = make_technique(f"{base}+q3")
        p = jax.tree.map(jnp.asarray, params[layer.name])
        y = apply_op(layer.op, {layer.name: p}, x)
        y_3 = layer_forward(coarse, layer, p, aux[layer.index][base], jnp.float32(0.0), x)
        assert float(jnp.linalg.norm(y_3 - y) / jnp.linalg.norm(y)) > errors[0]


def _plan(choices):
    return Plan(
        "contract_net",
        tuple(LayerChoice(l.name, *choices.get(l.name, ("keep", 0.0))) for l in LAYERS),
    )


@pytest.mark.parametrize("tech,layer", list(cases()))
def test_simulate_equals_materialize(tech, layer, params, aux, images, env_and_params):
    """The environment's simulation of a plan and the materialized model agree, also with the
    previous layer's filters pruned (the next layer's inputs removed)."""
    logits, env_params = env_and_params
    names = [t.name for t in TECHS]
    ratio = 0.5 if not tech.ratio_free else 0.0
    choices = {layer.name: (tech.name, ratio)}
    if layer.index > 0 and not LAYERS[layer.index - 1].is_classifier:
        choices[LAYERS[layer.index - 1].name] = ("filter", 0.5)
    plan = _plan(choices)
    indices = np.array(
        [[names.index(c.technique), RATIOS.index(c.ratio)] for c in plan.layers], np.int32
    )
    assert plan_from_indices("contract_net", LAYERS, TECHS, RATIOS, indices) == plan
    x = images[:32]
    sim = logits(jnp.asarray(indices), env_params, x)  # compiled once for every plan
    ops, new_params, _ = materialize(OPS, LAYERS, params, aux, TECHS, plan)
    real = predict(ops, new_params, x)
    np.testing.assert_allclose(real, np.asarray(sim), atol=2e-4, rtol=1e-4)


def _formula(tech, layer, ratio):
    """(params, MACs) of a layer by each technique's documented formula, written independently
    of the code. Convs here are SAME-padded: output positions = ceil(H/s) * ceil(W/s).
    Quantization changes neither (only bytes per weight)."""
    tech = tech.split("+q")[0]
    keep = lambda count: max(1, count - math.floor(ratio * count + 0.5))  # noqa: E731
    n = layer.features
    if layer.kind == "conv":
        h, w, c = layer.in_shape
        k, s = layer.kernel, layer.op.stride
        out_h, out_w = math.ceil(h / s), math.ceil(w / s)
        positions = out_h * out_w
        m = k * k * c
    else:
        c, m, positions = layer.in_channels, layer.fan_in, 1
    if tech == "keep":
        return m * n + n, positions * m * n
    if tech == "magnitude":
        return keep(m * n) + n, positions * m * n  # dense runtime runs every multiply
    if tech == "filter":
        return m * keep(n) + keep(n), positions * m * keep(n)
    if tech == "svd":
        r = keep(min(m, n))
        return r * (m + n) + n, positions * r * (m + n)
    if tech == "sparse_code":
        atoms = keep(min(m, n))
        nonzeros = max(1, atoms - math.floor(ratio * atoms + 0.5))
        return m * atoms + nonzeros * n + n, m * atoms + atoms * n
    if tech == "spatial":
        r = keep(min(k * c, k * n))
        return r * k * (c + n) + n, out_h * w * k * c * r + positions * k * r * n
    if tech == "sparse_conv":
        basis = min(c, k * k * n)
        q = k * k * basis * n
        return c * basis + keep(q) + n, h * w * c * basis + positions * q
    if tech == "dwsep":
        mult = keep(min(k * k, n))
        return k * k * c * mult + c * mult * n + n, positions * (k * k * c * mult + c * mult * n)
    if tech == "group":
        g = max(g for g in (1, 2, 4, 8) if 1 - 1 / g <= ratio and c % g == 0 and n % g == 0)
        return k * k * (c // g) * n + n, positions * k * k * (c // g) * n
    if tech == "fire":
        sq, e1 = keep(n), n // 2
        weights = c * sq + sq * e1 + 9 * sq * (n - e1)
        return weights + sq + n, positions * weights
    if tech == "gap":
        return c * n + n, c * n
    if tech == "mlpconv":
        hidden = 2 * keep(min(m, n))
        return m * hidden + hidden + hidden * n + n, positions * (m * hidden + hidden * n)
    raise AssertionError(f"no formula for {tech}")


@pytest.mark.parametrize("tech,layer", list(cases()))
def test_counted_params_and_macs_equal_formula(tech, layer, params, aux):
    ratio = 0.0 if tech.ratio_free else 0.75
    ops, new_params, _ = materialize(
        OPS, LAYERS, params, aux, TECHS, _plan({layer.name: (tech.name, ratio)})
    )
    profile = load_profile("analytic_cortex_a76")
    base = price_ops(profile, OPS, (8, 8, 1))
    cost = price_ops(profile, ops, (8, 8, 1))
    f_params, f_macs = _formula(tech.name, layer, ratio)
    b_params, b_macs = _formula("keep", layer, 0.0)
    if not tech.name.startswith("filter"):  # filter also shrinks the next layer: see below
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


def test_gap_head_drops_the_flatten(params, aux):
    ops, _, _ = materialize(OPS, LAYERS, params, aux, TECHS, _plan({"fc1": ("gap", 0.0)}))
    kinds = [op.kind for op in ops]
    assert "flatten" not in kinds and kinds[kinds.index("gap") + 1] == "dense"


def test_group_counts_the_inputs_the_previous_layer_kept(params, aux):
    """conv1 keeps 6 of 8 filters at 0.25: conv2 at 0.75 can only split them in two groups."""
    ops, new_params, _ = materialize(
        OPS,
        LAYERS,
        params,
        aux,
        TECHS,
        _plan({"conv1": ("filter", 0.25), "conv2": ("group", 0.75)}),
    )
    conv2 = next(op for op in ops if op.name == "conv2")
    assert conv2.groups == 2 and new_params["conv2"]["kernel"].shape == (3, 3, 3, 16)


def test_distilled_technique_without_data_says_what_to_pass(params):
    fire = make_techniques(["keep", "fire"])
    with pytest.raises(TechniqueError, match="fire.*conv1.*training data"):
        prepare_aux(LAYERS, params, fire, PrepareContext(ratios=RATIOS))


def test_misfit_and_bad_ratio_errors_name_layer_and_technique():
    with pytest.raises(TechniqueError, match="filter.*fc2"):
        check_plan(_plan({"fc2": ("filter", 0.5)}), LAYERS, TECHS)
    with pytest.raises(TechniqueError, match="svd.*conv1.*ratio 1.5"):
        check_plan(_plan({"conv1": ("svd", 1.5)}), LAYERS, TECHS)
    with pytest.raises(TechniqueError, match="magnitude.*-0.1"):
        check_plan(_plan({"fc1": ("magnitude", -0.1)}), LAYERS, TECHS)
    with pytest.raises(TechniqueError, match="unknown technique"):
        make_techniques(["keep", "bogus"])


def test_fake_quant_is_per_channel_k_bit_with_a_straight_through_gradient():
    w = jax.random.normal(jax.random.key(0), (3, 3, 4, 6))
    for bits in (2, 4, 8):
        q = fake_quant(w, bits)
        levels = 2 ** (bits - 1) - 1
        scale = jnp.max(jnp.abs(w), axis=(0, 1, 2)) / levels
        steps = np.asarray(q / scale)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)  # on the k-bit grid
        assert np.abs(steps).max() <= levels + 1e-4
        assert np.abs(np.asarray(q - w)).max() <= float(scale.max()) / 2 + 1e-6
    grad = jax.grad(lambda v: jnp.sum(fake_quant(v, 4) * 3.0))(w)
    np.testing.assert_allclose(grad, 3.0)


def test_quantized_layers_store_fewer_bytes_and_export_their_grid(params, aux):
    plan = _plan({"conv2": ("keep+q8", 0.0), "fc1": ("magnitude+q4", 0.5)})
    ops, new_params, _ = materialize(OPS, LAYERS, params, aux, TECHS, plan)
    by_name = {op.name: op for op in ops}
    assert by_name["conv2"].bits == 8 and by_name["fc1"].bits == 4
    profile = load_profile("analytic_cortex_a76")
    base = price_ops(profile, OPS, (8, 8, 1))
    cost = price_ops(profile, ops, (8, 8, 1))
    conv2_weights, fc1_weights = 3 * 3 * 8 * 16, 4 * 4 * 16 * 32
    saved_conv2 = conv2_weights * 3 - 4 * 16  # 1 byte instead of 4, plus 16 scales
    saved_fc1 = fc1_weights * 4 - (math.ceil(fc1_weights / 2 * 4 / 8) + fc1_weights // 8 + 4 * 32)
    assert base.bytes - cost.bytes == saved_conv2 + saved_fc1
    baked_ops, baked = bake_quantized(ops, new_params)
    assert all(op.bits == 32 for op in baked_ops)
    np.testing.assert_allclose(predict(baked_ops, baked, np.ones((2, 8, 8, 1), np.float32)),
                               predict(ops, new_params, np.ones((2, 8, 8, 1), np.float32)),
                               atol=1e-5)  # fmt: skip
    kernel = baked["fc1"]["kernel"]
    for col in kernel.T:  # 4-bit: at most 15 levels per output channel, zeros kept
        assert len(np.unique(col)) <= 15


def test_quantization_composes_only_with_single_op_techniques():
    with pytest.raises(TechniqueError, match="'svd\\+q8'.*composes with"):
        make_techniques(["keep", "svd+q8"])
    with pytest.raises(TechniqueError, match="1-bit.*2 to 16"):
        make_techniques(["keep", "magnitude+q1"])
    assert make_technique("filter+q6").name == "filter+q6"


def _make_twin() -> Technique:
    """A technique defined outside the package: the layer's own op, unchanged, as a ratio-free
    replacement (not the identity)."""
    keep = make_technique("keep")
    return Technique(
        name="twin",
        fits=fits_weighted,
        prepare=lambda layer, params, ctx: {},
        simulate=lambda params, aux, ratio: params,
        materialize=keep.materialize,
        ops=lambda layer, ratio, in_channels: same_layer_ops(layer, in_channels, layer.features),
        out_channels=lambda layer, ratio: layer.features,
        ratio_free=True,
        family="T1",
        quantizable=True,
    )


def test_a_registered_technique_is_usable_by_name_without_editing_anything_else(
    monkeypatch, params
):
    monkeypatch.setitem(REGISTRY, "twin", _make_twin)
    assert [t.name for t in make_techniques()] == list(REGISTRY)  # the default: all, in order
    techs = make_techniques(["keep", "twin", "twin+q4", "filter"])
    assert [t.name for t in techs] == ["keep", "twin", "twin+q4", "filter"]
    assert (family("twin"), family("twin+q4"), identity_index(techs)) == ("T1", "T1+Q", 0)
    space = build_search_space(OPS, LAYERS, techs, RATIOS, load_profile("analytic_cortex_a76"),
                               (8, 8, 1))  # fmt: skip
    assert space.allowed[:, 1, 0].all() and not space.allowed[:, 1, 1:].any()  # ratio-free
    np.testing.assert_array_equal(space.costs[:, 1, 0, 0], space.costs[:, 0, 0, 0])
    plan = _plan({"conv1": ("twin", 0.0), "fc2": ("twin+q4", 0.0), "conv2": ("filter", 0.5)})
    check_plan(plan, LAYERS, techs)
    aux = prepare_aux(LAYERS, params, techs, PrepareContext(ratios=RATIOS), OPS)
    ops, new_params, _ = materialize(OPS, LAYERS, params, aux, techs, plan)
    np.testing.assert_array_equal(new_params["conv1"]["kernel"], params["conv1"]["kernel"])
    assert next(op for op in ops if op.name == "fc2").bits == 4


def test_a_technique_list_without_the_identity_says_how_to_fix_it():
    with pytest.raises(TechniqueError, match=r"env.techniques=\['svd'\].*'keep'.*\[keep,svd\]"):
        make_techniques(["svd"])
    twice = make_techniques(["keep"]) * 2
    with pytest.raises(TechniqueError, match="more than one"):
        identity_index(twice)
