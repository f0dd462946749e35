"""Model ops: batch-norm folding, residual shortcuts, coupled channels, augmentation, resuming."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from autocomp.config import LayerConfig, ModelConfig
from autocomp.data import Dataset
from autocomp.models.layers import compressible_layers
from autocomp.models.ops import (
    SequentialNet,
    base_ops,
    fold_batchnorm,
    init_variables,
    walk_shapes,
)
from autocomp.techniques import make_techniques
from autocomp.training.loop import augment_batch, fit

ROOT = Path(__file__).resolve().parents[1]


def _model(name: str) -> ModelConfig:
    doc = yaml.safe_load((ROOT / "experiments" / "model" / f"{name}.yaml").read_text())
    layers = [LayerConfig(**layer) for layer in doc["layers"]]
    return ModelConfig(doc["name"], doc["input_shape"], doc["num_classes"], layers)


def _random_data(n=64, shape=(8, 8, 3), seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), np.float32)
    y = rng.integers(0, 4, n).astype(np.int32)
    return Dataset("random", x, y, x[:16], y[:16], x[:16], y[:16], 4)


BN_NET = ModelConfig(
    "bn_net",
    [8, 8, 3],
    4,
    [
        LayerConfig("conv", "c1", 6, 3, norm="batch"),
        LayerConfig("save"),
        LayerConfig("conv", "c2", 6, 3, norm="batch", activation="none"),
        LayerConfig("add"),
        LayerConfig("relu"),
        LayerConfig("dwconv", "dw", kernel=3, stride=2, norm="batch"),
        LayerConfig("gap"),
        LayerConfig("dense", "fc", 4, activation="none"),
    ],
)


def test_folded_batchnorm_equals_the_trained_model_in_eval_mode():
    train_ops, ops = base_ops(BN_NET, train=True), base_ops(BN_NET)
    assert [o.kind for o in train_ops].count("bn") == 3 and "bn" not in [o.kind for o in ops]
    v = init_variables(train_ops, (8, 8, 3), jax.random.key(0))
    params, stats = fit(train_ops, v["params"], _random_data(), epochs=2, batch_size=16,
                        learning_rate=1e-2, weight_decay=0.0, seed=0,
                        batch_stats=v["batch_stats"])  # fmt: skip
    assert not np.allclose(stats["c1_bn"]["mean"], 0)  # the running stats moved
    x = _random_data(seed=1).x_train
    trained = SequentialNet(train_ops).apply({"params": params, "batch_stats": stats}, x)
    folded = SequentialNet(ops).apply({"params": fold_batchnorm(train_ops, params, stats)}, x)
    np.testing.assert_allclose(folded, trained, rtol=1e-4, atol=1e-5)


def test_residual_shapes_and_mismatched_shortcuts():
    ops = base_ops(_model("resnet20"))
    shapes = walk_shapes(ops, (32, 32, 3))
    assert shapes[-1] == (10,) and shapes[-2] == (64,)
    params = init_variables(ops, (32, 32, 3), jax.random.key(0))["params"]
    out = SequentialNet(ops).apply({"params": params}, np.zeros((2, 32, 32, 3), np.float32))
    assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="no matching 'save'"):
        first_save = [o.kind for o in ops].index("save")
        walk_shapes(ops[first_save + 1 :], (32, 32, 16))  # the first save cut off
    with pytest.raises(ValueError, match="no matching 'add'"):
        walk_shapes(ops[: ops.index(next(o for o in ops if o.kind == "add"))], (32, 32, 3))


def test_filter_pruning_does_not_fit_channels_tied_to_a_shortcut_or_depthwise():
    filter_ = make_techniques(["keep", "filter"])[1]
    layers = {la.name: la for la in compressible_layers(base_ops(_model("resnet20")), (32, 32, 3))}
    assert filter_.fits(layers["s1b1a"]) is None  # inside a block: prunable
    for name in ("conv1", "s1b1b", "s3b3b"):  # saved for / added to a shortcut
        assert "residual shortcut" in filter_.fits(layers[name])
    mobilenet = compressible_layers(base_ops(_model("mobilenet_v1")), (128, 128, 3))
    assert len(mobilenet) == 15  # conv1, 13 pointwise, fc: depthwise layers are carried
    assert all(filter_.fits(la) is not None for la in mobilenet[:-2])  # a depthwise follows
    assert filter_.fits(mobilenet[-2]) is None  # pw13 feeds the global pool and fc


def test_augment_batch_flips_and_shifts_within_the_padding():
    x = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1) + 1
    out = np.asarray(augment_batch(jax.random.key(3), x))
    assert out.shape == x.shape
    for a, b in zip(out, x, strict=True):
        nonzero = a[a > 0]
        assert set(nonzero.tolist()) <= set(b.ravel().tolist())  # pixels of the image or zero
        assert len(nonzero) >= 4 * 4  # a shift of at most 4 keeps at least a 4x4 block
    outs = [np.asarray(augment_batch(jax.random.key(k), x)) for k in range(8)]
    assert len({o.tobytes() for o in outs}) > 1


def test_interrupted_training_resumes_where_it_stopped(tmp_path):
    train_ops = base_ops(BN_NET, train=True)
    v = init_variables(train_ops, (8, 8, 3), jax.random.key(0))
    kwargs = dict(epochs=3, batch_size=16, learning_rate=1e-2, weight_decay=1e-4, seed=0,
                  optimizer="sgd", augment=True, batch_stats=v["batch_stats"])  # fmt: skip
    data = _random_data()
    full = fit(train_ops, v["params"], data, **kwargs)

    class Killed(Exception):
        pass

    def kill_after_second(epoch, loss):
        if epoch == 1:
            raise Killed

    ckpt = tmp_path / "train.partial"
    with pytest.raises(Killed):
        fit(train_ops, v["params"], data, checkpoint=ckpt, on_epoch=kill_after_second, **kwargs)
    assert ckpt.is_file()
    epochs_run = []
    resumed = fit(train_ops, v["params"], data, checkpoint=ckpt,
                  on_epoch=lambda e, loss: epochs_run.append(e), **kwargs)  # fmt: skip
    assert epochs_run == [2]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), resumed, full)
    ckpt.write_bytes(b"garbage")
    from autocomp.training.loop import CheckpointError

    with pytest.raises(CheckpointError, match="corrupt"):
        fit(train_ops, v["params"], data, checkpoint=ckpt, **kwargs)


@pytest.mark.parametrize(
    "shape, kernel, strides, groups, features",
    [
        ((9, 9, 4), (3, 3), (1, 1), 4, 4),  # depthwise
        ((9, 8, 4), (3, 3), (2, 2), 4, 8),  # depthwise, multiplier 2, odd and even sizes
        ((8, 8, 3), (5, 1), (2, 1), 3, 3),  # k x 1 depthwise, stride only in height
        ((8, 8, 6), (3, 3), (2, 2), 3, 9),  # grouped
        ((7, 7, 8), (1, 3), (1, 1), 2, 4),  # grouped 1 x k
    ],
)
def test_fast_grouped_and_depthwise_convs_equal_the_lax_conv(shape, kernel, strides, groups,
                                                              features):  # fmt: skip
    """conv_nhwc's XLA:CPU forms (shift-and-add depthwise, one conv per group) give the grouped
    lax conv's values and gradients; under export_lowering it is the grouped lax conv itself."""
    from jax import lax

    from autocomp.models.convs import conv_nhwc, export_lowering

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    k = rng.standard_normal((*kernel, shape[-1] // groups, features)).astype(np.float32)

    def reference(x, k):
        return lax.conv_general_dilated(x, k, strides, "SAME", feature_group_count=groups,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip

    def fast(x, k):
        return conv_nhwc(x, k, strides, groups)

    np.testing.assert_allclose(fast(x, k), reference(x, k), rtol=1e-5, atol=1e-5)
    g_fast = jax.grad(lambda x, k: (fast(x, k) ** 2).sum(), argnums=(0, 1))(x, k)
    g_ref = jax.grad(lambda x, k: (reference(x, k) ** 2).sum(), argnums=(0, 1))(x, k)
    for a, b in zip(g_fast, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    fast_ops = {e.primitive.name for e in jax.make_jaxpr(fast)(x, k).jaxpr.eqns}
    assert "conv_general_dilated" not in fast_ops or groups != shape[-1]
    with export_lowering():  # a new function: jax caches traces by function
        jaxpr = jax.make_jaxpr(lambda x, k: fast(x, k))(x, k).jaxpr
    assert [e.primitive.name for e in jaxpr.eqns] == ["conv_general_dilated"]
    assert jaxpr.eqns[0].params["feature_group_count"] == groups


def test_conv_module_has_flax_conv_params():
    """models.Conv keeps nn.Conv's param names, shapes and initializers, so base-model caches and
    checkpoints written before it load unchanged."""
    import flax.linen as nn

    from autocomp.models.convs import Conv

    x = np.zeros((1, 8, 8, 6), np.float32)
    ours = Conv(9, (3, 3), (2, 2), groups=3).init(jax.random.key(0), x)
    flax_ = nn.Conv(9, (3, 3), (2, 2), padding="SAME", feature_group_count=3).init(
        jax.random.key(0), x
    )
    assert jax.tree.map(np.shape, ours) == jax.tree.map(np.shape, flax_)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(flax_), strict=True):
        np.testing.assert_array_equal(a, b)


def test_augmented_distillation_shows_the_teacher_the_students_batch():
    # A student distilled from itself (soft loss only, T=1) gets zero gradients if and only if
    # the teacher sees the very batch the student sees; augmented images then change nothing
    # (plain SGD: Adam would blow float noise up to full steps). Teacher logits of the clean
    # images, as before the fix, moved the weights by up to 0.039 here.
    ops = base_ops(BN_NET)
    params = init_variables(ops, (8, 8, 3), jax.random.key(0))["params"]
    kwargs = dict(epochs=1, batch_size=16, learning_rate=0.1, weight_decay=0.0, seed=0,
                  optimizer="sgd", teacher=(ops, params), temperature=1.0, alpha=0.0)  # fmt: skip
    data = _random_data()
    same, _ = fit(ops, params, data, augment=True, **kwargs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), same, params)
    student = jax.tree.map(lambda a: a * 0.5, params)  # a different student does learn
    moved, _ = fit(ops, student, data, augment=True, **kwargs)
    assert not np.allclose(moved["fc"]["kernel"], student["fc"]["kernel"])
