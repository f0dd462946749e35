"""Someone else's linen models (jax-resnet, Hugging Face transformers) and our own MobileNet-V2
style fixture, with random weights: the channel analysis against a hand analysis, simulation
equal to materialization under structured pruning of residual groups, and the TFLite export."""

from __future__ import annotations

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from own_models import ShapeBranching, TinyMobileNetV2

from autocomp.config import RewardConfig
from autocomp.devices.tables import load_profile
from autocomp.export import TfliteModel, function_to_tflite
from autocomp.models.linen import LinenNetwork, materialize
from autocomp.models.materialized import export_form
from autocomp.search.plan import plan_from_indices, prepare_aux
from autocomp.search.reward import make_reward_params
from autocomp.search.space import CHANNELS, build_search_space, plan_cost
from autocomp.techniques import make_techniques, technique_fits
from envs.compression import CompressionEnv

RATIOS = (0.0, 0.5)
TECHS = make_techniques(["keep", "filter", "svd", "spatial", "magnitude"])


def _jitter_stats(variables):
    """Batch statistics away from (0, 1), so that a wrongly sliced batch norm shows."""
    key = jax.random.key(1)

    def f(path, a):
        name = jax.tree_util.keystr(path)
        k = jax.random.fold_in(key, hash(name) % 10_000)
        if "var" in name:
            return jnp.abs(a) + 0.5 + jax.random.uniform(k, a.shape)
        if "batch_stats" in name or "scale" in name or "bias" in name:
            return a + 0.3 * jax.random.normal(k, a.shape)
        return a

    return jax.tree_util.tree_map_with_path(f, variables)


@functools.cache  # one analysis per model for the whole module
def _resnet18():
    from jax_resnet import ResNet18

    model = ResNet18(n_classes=10)
    x = np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype(np.float32)
    return LinenNetwork(model, _jitter_stats(model.init(jax.random.key(0), x[:1])), x[:1]), x


@functools.cache  # one analysis per model for the whole module
def _hf_resnet():
    from transformers import FlaxResNetForImageClassification, ResNetConfig

    cfg = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10
    )
    hf = FlaxResNetForImageClassification(cfg, input_shape=(1, 32, 32, 3), seed=0)
    x = np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype(np.float32)
    net = LinenNetwork(
        hf.module,
        _jitter_stats(hf.params),
        x[:1],
        apply_kwargs={"deterministic": True},
        output_fn=lambda out: out.logits,
    )
    return net, x


@functools.cache  # one analysis per model for the whole module
def _mobilenet():
    model = TinyMobileNetV2()
    x = np.random.default_rng(0).normal(size=(16, 16, 16, 3)).astype(np.float32)
    return LinenNetwork(model, _jitter_stats(model.init(jax.random.key(0), x[:1])), x[:1]), x


MODELS = {"jax_resnet18": _resnet18, "hf_resnet": _hf_resnet, "mobilenet_v2": _mobilenet}


# ResNet-18's check (about 2 min on 2 cores) runs with `make test-slow`; the default run checks
# the same residual coupling on the transformers ResNet and the MobileNet-V2 fixture.
@pytest.fixture(
    scope="module",
    params=[
        pytest.param(n, marks=pytest.mark.slow) if n == "jax_resnet18" else n
        for n in sorted(MODELS)
    ],
)
def built(request):
    return request.param, *MODELS[request.param]()


def _groups(net):
    return [(g.producers, g.consumers, g.pinned is None) for g in net.groups]


@pytest.mark.slow  # 20-40 s: keeps the default run under 10 minutes
def test_resnet18_groups_match_a_hand_analysis():
    net, _ = _resnet18()
    assert len(net.layers) == 21  # 17 convs of the blocks and stem, 3 projections, 1 dense
    # Stage s has one channel group through its residual adds: the stage's first producer
    # (stem, or the first block's second conv), the projection shortcut and each block's
    # second conv; every block's first conv is a group of its own; the classifier is pinned.
    residual = [(0, 2, 4), (6, 7, 9), (11, 12, 14), (16, 17, 19)]
    assert [g.producers for g in net.groups if len(g.producers) > 1] == residual
    singles = [g.producers[0] for g in net.groups if len(g.producers) == 1]
    assert singles == [1, 3, 5, 8, 10, 13, 15, 18, 20]
    prunable = [la.index for la in net.layers if la.out_group >= 0]
    assert prunable == [0, 1, 3, 5, 6, 8, 10, 11, 13, 15, 16, 18]
    assert net.layers[20].is_classifier and "model output" in net.layers[20].out_reason
    assert "follow the root" in net.layers[2].out_reason
    # each residual group slices the batch norm after every producer (scale, bias, mean, var)
    assert [len(g.leaves) for g in net.groups if len(g.producers) > 1] == [12, 12, 12, 12]
    # priced beside the layers: the stem's max pool, two adds per stage (ReLU fuses, batch
    # norm folds), the global mean; each at the width of its stage's group
    assert [(g, o.op.kind) for g, o in net.graph_priced()] == [
        (0, "maxpool"), (0, "add"), (0, "add"), (4, "add"), (4, "add"),
        (7, "add"), (7, "add"), (10, "add"), (10, "add"), (10, "gap"),
    ]  # fmt: skip


def test_mobilenet_groups_match_a_hand_analysis():
    net, _ = _mobilenet()
    names = [la.name for la in net.layers]
    assert names == [
        "stem", "block1/expand", "block1/project", "block2/expand", "block2/se_reduce",
        "block2/se_expand", "block2/project", "block3/expand", "block3/se_reduce",
        "block3/se_expand", "block3/project", "branch_a", "branch_b", "head", "classifier",
    ]  # fmt: skip
    depthwise = [f for f in net.found if f.kind == "Conv" and f.reason]
    assert [f.name for f in depthwise] == [f"block{i}/depthwise" for i in (1, 2, 3)]
    assert _groups(net) == [
        ((0, 2), (1, 3), True),  # stem + block1's residual
        ((1,), (2,), True),  # block1's expand, through its depthwise conv
        ((3, 5), (4, 6), True),  # block2's expand, the SE gate multiplies the same channels
        ((4,), (5,), True),  # SE bottleneck
        ((6, 10), (7, 11, 12), True),  # block2's project + block3's residual
        ((7, 9), (8, 10), True),
        ((8,), (9,), True),
        ((11,), (13,), False),  # the concat: pinned (fail closed)
        ((12,), (13,), False),
        ((13,), (14,), True),
        ((14,), (), False),  # the logits
    ]
    assert "several groups" in net.layers[11].out_reason
    # expand's group slices its batch norm, the depthwise kernel and the depthwise batch norm
    assert len(net.groups[1].leaves) == 9
    # priced beside the layers, with the group that decides their width: depthwise convs in
    # their expand's group, the SE gate (mean, sigmoid, multiply) likewise, the residual
    # adds; the concat of two pinned groups at full width (-1); the head's global mean
    assert [(g, o.op.kind) for g, o in net.graph_priced()] == [
        (1, "dwconv"), (0, "add"), (2, "dwconv"), (2, "gap"), (2, "act"), (2, "mul"),
        (5, "dwconv"), (5, "gap"), (5, "act"), (5, "mul"), (4, "add"), (-1, "concat"),
        (9, "gap"),
    ]  # fmt: skip


def test_hf_resnet_groups_match_a_hand_analysis():
    net, _ = _hf_resnet()
    assert [g.producers for g in net.groups] == [(0, 2), (1,), (3,), (4, 5), (6,)]
    assert [la.out_group >= 0 for la in net.layers] == [True, True, False, True, True, False, False]


def test_a_group_whose_width_the_code_branches_on_is_pinned():
    model = ShapeBranching()
    x = np.zeros((1, 8, 8, 3), np.float32)
    net = LinenNetwork(model, model.init(jax.random.key(0), x), x)
    stem = net.layers[0]
    assert stem.out_group < 0 and "other operations" in stem.out_reason
    assert technique_fits(TECHS[1], stem) is not None  # filter is not offered


def _pruning_plan(net):
    """filter 0.5 on every group root, svd 0.5 where it fits elsewhere, else keep."""
    rows = []
    for layer in net.layers:
        if layer.out_group >= 0:
            rows.append((1, 1))
        elif technique_fits(TECHS[2], layer) is None:
            rows.append((2, 1))
        else:
            rows.append((0, 0))
    return np.array(rows)


def _space(net, x):
    profile = load_profile("analytic_cortex_a76")
    return build_search_space(
        (), net.layers, TECHS, RATIOS, profile, x.shape[1:], net.graph_priced(), net.num_groups
    )


def _simulate(net, aux, plan, x):
    space = _space(net, x)
    env = CompressionEnv(net, space)
    reward = make_reward_params(RewardConfig(), tuple(space.base[:3]), 0.5)
    params = env.make_params(net.base_params(), aux, x, np.zeros(len(x), int), reward)
    return np.asarray(jax.jit(lambda x: env.logits(jnp.asarray(plan), params, x))(x))


def _macs(jaxpr) -> int:
    """Multiply-accumulates of every conv and matmul a jaxpr runs (nested calls included)."""
    total = 0
    for eqn in jaxpr.eqns:
        name, p = eqn.primitive.name, eqn.params
        if name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            spec = p["dimension_numbers"].rhs_spec
            per_output = rhs[spec[1]] * rhs[spec[2]] * rhs[spec[3]]
            total += int(np.prod(eqn.outvars[0].aval.shape)) * per_output
        elif name == "dot_general":
            (lhs_contract, _), _ = p["dimension_numbers"]
            k = int(np.prod([eqn.invars[0].aval.shape[a] for a in lhs_contract]))
            total += int(np.prod(eqn.outvars[0].aval.shape)) * k
        for key in ("jaxpr", "call_jaxpr"):
            if key in p:
                total += _macs(getattr(p[key], "jaxpr", p[key]))
    return total


def test_structured_pruning_materializes_as_simulated(built):
    name, net, x = built
    aux = prepare_aux(net.layers, net.base_params(), TECHS, ops=net)
    plan = _pruning_plan(net)
    mat = materialize(net, aux, TECHS, plan_from_indices(name, net.layers, TECHS, RATIOS, plan))
    real = mat.module.apply(mat.variables, x, **net.apply_kwargs)
    real = np.asarray(net.output_fn(real) if net.output_fn else real)
    sim = _simulate(net, aux, plan, x)
    assert np.abs(real - sim).max() <= 1e-4 * (np.abs(sim).max() + 1)
    # every producer of a pruned group really has half the output channels
    for group in net.groups:
        if group.pinned is None:
            for producer in group.producers:
                ops = mat.ops[net.layers[producer].name]
                assert ops[-1].features == group.size // 2, (name, producer)
    # the float TFLite file agrees with JAX
    module, variables = export_form(mat)

    def fn(xb):
        out = module.apply(variables, xb, **net.apply_kwargs)
        return net.output_fn(out) if net.output_fn else out

    # the table prices what the compressed model runs: its MACs are those of its jaxpr (the
    # group's followers and depthwise convs at the pruned width, the adds and pools beside)
    space = _space(net, x)
    table_macs = plan_cost(space, plan)[CHANNELS.index("macs")]
    assert table_macs == _macs(jax.make_jaxpr(fn)(x[:1]).jaxpr), name
    assert plan_cost(space, plan)[0] < space.base[0]
    tflite = TfliteModel(function_to_tflite(fn, x.shape[1:]))
    lite = np.stack([tflite(xi[None])[0] for xi in x])
    assert np.mean(lite.argmax(-1) == real.argmax(-1)) >= 0.999
    assert np.abs(lite - real).max() <= 1e-3 * (np.abs(real).max() + 1)


def test_gap_replaces_a_dense_head_over_the_users_flatten():
    """The analysis proves the dense layer reads a flattened (4, 4, 32) map, so global average
    pooling is offered there (and only there); simulated, materialized, priced and exported
    alike, with the down-sampling group pruned by half at the same time."""
    from own_models import SmallResNet

    from autocomp.search.plan import PrepareContext

    model = SmallResNet()
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype(np.float32)
    variables = _jitter_stats(model.init(jax.random.key(0), x[:1]))
    net = LinenNetwork(model, variables, x[:8], {"train": False})
    techs = make_techniques(["keep", "filter", "gap"])
    fits = [la.name for la in net.layers if technique_fits(techs[2], la) is None]
    assert fits == ["fc"] and net.by_path[("fc",)].pre_flatten == (4, 4, 32)
    ctx = PrepareContext(ratios=RATIOS)
    aux = prepare_aux(net.layers, net.base_params(), techs, ctx, net, x)
    rows = np.zeros((len(net.layers), 2), np.int32)
    rows[net.by_path[("down",)].index] = (1, 1)  # filter 0.5 on the map gap pools
    rows[net.by_path[("fc",)].index] = (2, 0)
    plan = plan_from_indices("SmallResNet", net.layers, techs, RATIOS, rows)
    mat = materialize(net, aux, techs, plan)
    assert [op.kind for op in mat.ops["fc"]] == ["gap", "dense"]
    assert mat.ops["fc"][-1].features == 64 and mat.variables["params"]["base"]["fc"]
    real = np.asarray(mat.module.apply(mat.variables, x[:8], train=False))
    # an ordinary linen module: training mode updates the sliced batch statistics, grads flow
    _, new = mat.module.apply(mat.variables, x, train=True, mutable=["batch_stats"])
    assert new["batch_stats"]["base"]["down_bn"]["mean"].shape == (16,)
    grads = jax.grad(
        lambda p: mat.module.apply({**mat.variables, "params": p}, x, train=True,
                                   mutable=["batch_stats"])[0].sum()
    )(mat.variables["params"])  # fmt: skip
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    profile = load_profile("analytic_cortex_a76")
    space = build_search_space(
        (), net.layers, techs, RATIOS, profile, x.shape[1:], net.graph_priced(), net.num_groups
    )
    env = CompressionEnv(net, space)
    reward = make_reward_params(RewardConfig(), tuple(space.base[:3]), 0.5)
    params = env.make_params(net.base_params(), aux, x[:8], np.zeros(8, int), reward)
    sim = np.asarray(jax.jit(lambda xb: env.logits(jnp.asarray(rows), params, xb))(x[:8]))
    assert np.abs(real - sim).max() <= 1e-4 * (np.abs(sim).max() + 1)
    module, exported = export_form(mat)

    def fn(xb):
        return module.apply(exported, xb, train=False)

    assert plan_cost(space, rows)[CHANNELS.index("macs")] == _macs(jax.make_jaxpr(fn)(x[:1]).jaxpr)
    tflite = TfliteModel(function_to_tflite(fn, x.shape[1:]))
    lite = np.concatenate([tflite(xi[None]) for xi in x[:8]])
    assert np.abs(lite - real).max() <= 1e-3 * (np.abs(real).max() + 1)


@pytest.mark.slow  # 20-40 s: keeps the default run under 10 minutes
def test_profile_enumerates_the_ops_between_a_users_layers_at_every_width():
    """``python -m autocomp.profile`` on a user's model measures what its cost table prices:
    the layers' configurations and every op between them at each width its group can keep,
    each as a one-op TFLite model that runs."""
    from autocomp.devices.profiling import micro_model, search_configs

    net, x = _mobilenet()
    techs = make_techniques(["keep", "filter"])
    configs = search_configs((), net.layers, techs, RATIOS, x.shape[1:], net.graph_priced())
    kinds = {key.split("|")[0] for key in configs}
    assert {"conv", "dense", "dwconv", "add", "mul", "act", "gap", "concat"} <= kinds
    # block1's depthwise conv at its expand's full and half width
    assert "dwconv|in=16x16x32|out=32|k=3|s=1|g=32|float32" in configs
    assert "dwconv|in=16x16x16|out=16|k=3|s=1|g=16|float32" in configs
    assert "concat|in=8x8x32|out=32|k=1|s=1|g=1|float32" in configs  # pinned: full width only
    assert not any(k.startswith("concat|in=8x8x16") for k in configs)
    for kind in ("mul", "act", "concat", "dwconv", "add"):
        key = next(k for k in configs if k.startswith(kind + "|"))
        op, shape = configs[key]
        lite = TfliteModel(micro_model(op, shape))
        assert lite(np.ones((1, *lite.input["shape"][1:]), np.float32)).size > 0, key


def test_a_layer_pruned_to_one_unit_feeding_a_factorized_one_converts():
    """The converter fuses a one-input-feature FULLY_CONNECTED into the next one with wrong
    shapes (found by ``bench costs`` on random plans): the export writes it as the broadcast
    product it is, and the file agrees with JAX."""
    net, x = _mobilenet()
    techs, ratios = make_techniques(["keep", "filter", "svd"]), (0.0, 0.5, 0.9375)
    aux = prepare_aux(net.layers, net.base_params(), techs, ops=net)
    rows = np.zeros((len(net.layers), 2), np.int32)
    rows[net.by_path[("block2", "se_reduce")].index] = (1, 2)  # 16 -> 1 unit
    rows[net.by_path[("block2", "se_expand")].index] = (2, 1)  # then two dense layers
    mat = materialize(net, aux, techs, plan_from_indices("m", net.layers, techs, ratios, rows))
    assert mat.ops["block2/se_reduce"][-1].features == 1
    module, variables = export_form(mat)

    def fn(xb):
        return module.apply(variables, xb)

    lite = TfliteModel(function_to_tflite(fn, x.shape[1:]))
    real = np.asarray(fn(x[:4]))
    assert np.abs(lite(x[:4]) - real).max() <= 1e-3 * (np.abs(real).max() + 1)


def test_inspect_lists_every_layer_with_what_fits_and_why_not():
    import autocomp

    model = TinyMobileNetV2()
    x = np.zeros((1, 16, 16, 3), np.float32)
    text = autocomp.inspect(model, model.init(jax.random.key(0), x), x)
    assert "15 compressible layers" in text
    assert "block2/depthwise" in text and "passes channels through" in text
    assert "several groups" in text  # the concat's branches: no channel pruning, and why


class _Train(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(3)(nn.Dropout(0.5, deterministic=not train)(x.reshape(len(x), -1)))


class _Branchy(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(3)(x.reshape(len(x), -1))
        return y if y.sum() > 0 else -y


def test_bad_models_get_one_clear_error():
    from autocomp.models.discovery import ModelError

    x = np.zeros((1, 4, 4, 1), np.float32)
    model = TinyMobileNetV2()
    variables = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(ModelError, match="no 'params' collection"):
        LinenNetwork(model, variables["params"], x)
    with pytest.raises(ModelError, match="apply_kwargs"):
        LinenNetwork(_Train(), _Train().init(jax.random.key(0), x, False), x)
    with pytest.raises(ModelError, match="Python branches on array values"):
        LinenNetwork(_Branchy(), _Branchy().init(jax.random.key(0), x), x)
    hf_like = lambda out: {"logits": out}  # noqa: E731
    with pytest.raises(ModelError, match="output_fn"):
        LinenNetwork(
            _Train(), _Train().init(jax.random.key(0), x, False), x, {"train": False}, hf_like
        )


TINY_SEARCH = [
    "agent.episodes=128",
    "finetune.epochs=3",
    "device=analytic_cortex_a76",
    "env.techniques=[keep,filter,svd,magnitude]",
    "env.ratios=[0,0.5,0.75]",
    "reward.max_latency_frac=0.6",
]


@pytest.fixture(scope="module")
def trained_small_resnet():
    from own_models import SmallResNet, train_linen
    from sklearn.datasets import load_digits

    from autocomp.data import arrays

    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype(np.float32)
    y = digits.target
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    data = arrays(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:])
    model = SmallResNet()
    return model, train_linen(model, data.x_train, data.y_train), data


def test_compress_a_trained_user_model_end_to_end(trained_small_resnet, tmp_path):
    import autocomp

    model, variables, data = trained_small_resnet
    rerank = ["finetune.rerank=2", "finetune.rerank_examples=256"]
    result = autocomp.compress(
        model,
        variables,
        data,
        [*TINY_SEARCH, *rerank],
        apply_kwargs={"train": False},
    )
    m = result.metrics
    assert m["base"]["test_accuracy"] > 0.9  # a really trained base model
    # re-ranked: the two best in-budget plans by reward, the one better after a short tuning
    rows, sel = m["search"]["rerank"], result.selection
    in_budget = np.flatnonzero(~sel.violation)
    best_two = in_budget[np.argsort(-sel.reward[in_budget], kind="stable")][:2]
    assert [r["plan"] for r in rows] == list(best_two)
    assert sel.chosen == max(rows, key=lambda r: r["short_finetune_val_accuracy"])["plan"]
    assert m["compressed"]["reward"] == pytest.approx(float(sel.reward[sel.chosen]))
    assert m["compressed"]["latency_ms"] <= 0.6 * m["base"]["latency_ms"] * (1 + 1e-6)
    assert m["compressed"]["test_accuracy"] > m["base"]["test_accuracy"] - 0.1
    assert m["materialize_check"]["prediction_agreement"] == 1.0
    assert [c.name for c in result.plan.layers] == [la.name for la in result.network.layers]
    run_dir = result.save(tmp_path / "run")
    assert {p.name for p in run_dir.iterdir()} >= {"plan.json", "metrics.json"}
    report = result.export(tmp_path / "export", data, int8=False)
    assert report["tflite_top1_agreement"] >= 0.999


def test_fine_tuning_a_user_model_resumes_where_it_stopped(trained_small_resnet, tmp_path):
    """The one training loop (:func:`autocomp.training.loop.train_loop`) behind a user's
    model: killed after its first epoch, distillation resumes from the checkpoint and ends on
    the weights of an uninterrupted run."""
    import dataclasses

    from autocomp.run import compose
    from autocomp.run.custom import setup
    from autocomp.search.plan import plan_from_indices
    from autocomp.workflow.custom import compressed_model, finetune

    model, variables, data = trained_small_resnet
    config = compose(["env.techniques=[keep,svd,magnitude]", "env.ratios=[0,0.5]"])
    st = setup(model, variables, data, config, {"train": False})
    indices = np.array([(2, 1)] + [(1, 1)] * (len(st.net.layers) - 1))  # masks and factors
    plan = plan_from_indices(st.net.name, st.net.layers, st.techniques, (0.0, 0.5), indices)
    cmp = compressed_model(st.net, st.aux, st.techniques, plan)
    ft = dataclasses.replace(config.finetune, epochs=2, batch_size=128)
    ckpt = tmp_path / "finetune.msgpack"

    class Killed(Exception):
        pass

    def kill(epoch, loss):
        raise Killed

    with pytest.raises(Killed):
        finetune(st.net, cmp, data, ft, 0, st.net.base_params(), kill, ckpt)
    assert ckpt.is_file()
    resumed = finetune(st.net, cmp, data, ft, 0, st.net.base_params(), None, ckpt)
    full = finetune(st.net, cmp, data, ft, 0, st.net.base_params())
    jax.tree.map(np.testing.assert_array_equal, resumed, full)
    assert any(not np.array_equal(a, b) for a, b in  # it did train
               zip(jax.tree.leaves(full), jax.tree.leaves(cmp.params), strict=True))  # fmt: skip


@pytest.mark.slow  # 20-40 s: keeps the default run under 10 minutes
def test_sweep_of_a_user_model_gives_a_run_directory_per_budget(trained_small_resnet, tmp_path):
    """``sweep.max_latency_frac=[...]`` on a user's model: one search for both budgets, then a
    complete run directory per budget (``python -m autocomp.export`` takes it) and the front."""
    import orbax.checkpoint as ocp
    from hydra import compose, initialize
    from omegaconf import OmegaConf

    from autocomp.export.__main__ import main as export_main
    from autocomp.run import register, run, to_config

    _, variables, _ = trained_small_resnet
    ckpt = tmp_path / "ckpt"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(ckpt, jax.tree.map(np.asarray, variables))
    register()
    with initialize(version_base="1.3", config_path="../experiments"):
        cfg = compose("config", overrides=[
            "experiment=custom", "model._target_=own_models.SmallResNet",
            f"model.checkpoint={ckpt}", "model.input_shape=[8,8,1]",
            "+model.apply_kwargs.train=false", "data=digits", "logger=none",
            "agent.episodes=64", "finetune.epochs=1", "env.techniques=[keep,filter,svd]",
            "env.ratios=[0,0.5]", "sweep.max_latency_frac=[0.5,0.8]",
        ])  # fmt: skip
    run_dir = tmp_path / "run"
    metrics = run(to_config(cfg), run_dir, OmegaConf.to_container(cfg, resolve=True), False)
    labels = ["max_latency_frac=0.5", "max_latency_frac=0.8"]
    assert [r["label"] for r in metrics["sweep"]] == labels and metrics["front"]
    assert {"sweep.json", "sweep.md", "sweep.png", "metrics.json"} <= {
        p.name for p in run_dir.iterdir()
    }
    for label, frac in zip(labels, (0.5, 0.8), strict=True):
        one = run_dir / "sweep" / label
        m = json.loads((one / "metrics.json").read_text())
        assert m["search"]["budgets"]["latency_ms"] == pytest.approx(frac * m["base"]["latency_ms"])
        assert m["compressed"]["latency_ms"] <= m["search"]["budgets"]["latency_ms"] * (1 + 1e-6)
        assert m["materialize_check"]["prediction_agreement"] == 1.0
        recorded = json.loads((one / "run.json").read_text())["config"]
        assert recorded["reward"]["max_latency_frac"] == frac  # as a single run of it records
    assert export_main([f"run={run_dir / 'sweep' / labels[0]}", "test_examples=100"]) == 0
    again = run(to_config(cfg), run_dir, OmegaConf.to_container(cfg, resolve=True), False)
    assert again["sweep"] == metrics["sweep"]  # both variants finished: read back, not redone


def test_cli_compresses_a_user_model_from_its_orbax_checkpoint(
    trained_small_resnet, tmp_path, monkeypatch
):
    import orbax.checkpoint as ocp
    from hydra import compose, initialize
    from omegaconf import OmegaConf

    from autocomp.run import register, run, to_config

    _, variables, _ = trained_small_resnet
    ckpt = tmp_path / "ckpt"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(ckpt, jax.tree.map(np.asarray, variables))
    checkpointer.wait_until_finished()
    monkeypatch.setenv("WANDB_MODE", "offline")
    register()
    with initialize(version_base="1.3", config_path="../experiments"):
        cfg = compose(
            "config",
            overrides=[
                "experiment=custom",
                "model._target_=own_models.SmallResNet",
                f"model.checkpoint={ckpt}",
                "model.input_shape=[8,8,1]",
                "+model.apply_kwargs.train=false",
                "data=digits",
                "logger=wandb",  # offline: tracked as a built-in run is
                "agent.episodes=64",
                "finetune.epochs=1",
                "device=pixel4_a76",  # the default phone table, with its int8 column
                "env.techniques=[keep,filter,svd]",
                "env.ratios=[0,0.5]",
                "reward.max_latency_frac=0.7",
            ],
        )
    run_dir = tmp_path / "run"
    metrics = run(to_config(cfg), run_dir, OmegaConf.to_container(cfg, resolve=True), False)
    assert metrics["base"]["test_accuracy"] > 0.9  # the checkpoint's weights, not fresh ones
    assert metrics["compressed"]["latency_ms"] < metrics["base"]["latency_ms"]
    assert {"plan.json", "metrics.json", "run.json", "compressed_params.msgpack"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert (run_dir / "checkpoint" / "search.msgpack").is_file()  # a killed search resumes
    assert (run_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")  # the plan, front, image, summary
    assert list(offline.glob("run-*.wandb")) and list(offline.glob("files/media/images/*.png"))
    from autocomp.sweep import run_metric

    logged, _ = run_metric(run_dir, "compressed/test_accuracy")  # read back from the run file
    assert logged == metrics["compressed"]["test_accuracy"]
    # python -m autocomp.export rebuilds the user's model from the run and exports it
    from autocomp.export.__main__ import main as export_main

    assert export_main([f"run={run_dir}", "test_examples=300"]) == 0
    report = json.loads((run_dir / "export" / "verify.json").read_text())
    assert report["tflite_top1_agreement"] >= 0.999 and report["examples"] == 300
    # the table's int8 prediction for the user's model, next to the int8 file's host latency
    predicted = report["int8"]["table_latency_ms"]["predicted_ms"]
    assert predicted == metrics["compressed"]["latency_int8_ms"]
    assert 0 < predicted < metrics["compressed"]["latency_ms"]
    assert metrics["base"]["latency_int8_ms"] < metrics["base"]["latency_ms"]
    card = (run_dir / "export" / "MODEL_CARD.md").read_text()
    assert "[8, 8, 1]" in card and f"{metrics['compressed']['params']:,}" in card
    # a checkpoint of another model is refused with the leaf that does not fit
    from own_models import TinyMobileNetV2

    from autocomp.models.discovery import ModelError
    from autocomp.workflow.custom import load_checkpoint, template

    with pytest.raises(ModelError, match="another model"):
        model_cfg = to_config(cfg).model
        load_checkpoint(str(ckpt), template(TinyMobileNetV2(), model_cfg, np.zeros((1, 8, 8, 1))))


def test_a_base_model_trained_by_a_run_is_kept_for_its_resume_and_export(tmp_path, monkeypatch):
    """Without ``model.checkpoint`` the run trains the model once, saves it in the run
    directory (complete or absent) and in the base-model cache; a resumed run, the export and
    another run of the same settings read it back."""
    import dataclasses

    from autocomp.data import load_dataset
    from autocomp.run import compose
    from autocomp.workflow import custom

    target = "model._target_=own_models.SmallResNet"
    kwargs = "+model.apply_kwargs.train=false"
    config = compose(["experiment=custom", target, kwargs, "data=digits", "base.epochs=1"])
    config = dataclasses.replace(
        config, base=dataclasses.replace(config.base, cache_dir=str(tmp_path / "cache"))
    )
    data = load_dataset(config.data)
    _, trained, where = custom.base_variables(config, data, tmp_path / "run")
    assert where == str((tmp_path / "run" / "base_checkpoint").resolve())
    assert not (tmp_path / "run" / "base_checkpoint.partial").exists()
    cache = custom.cached_base(config, data)
    assert cache.is_dir() and not list(cache.parent.glob("*.training.msgpack"))

    def no_training(*args, **kwargs):
        raise AssertionError("the base model was trained again")

    monkeypatch.setattr(custom, "train_base", no_training)
    # the resumed run reads its own copy; another run of the same settings reads the cache
    for run in (tmp_path / "run", tmp_path / "other"):
        _, again, where = custom.base_variables(config, data, run)
        assert where == str((run / "base_checkpoint").resolve())
        for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(again), strict=True):
            np.testing.assert_array_equal(a, b)
    # other base settings are another cache entry: trained (here: refused) again
    other = dataclasses.replace(config, base=dataclasses.replace(config.base, epochs=2))
    with pytest.raises(AssertionError, match="trained again"):
        custom.base_variables(other, data, tmp_path / "third")


def test_a_cached_op_list_base_model_is_converted_once_for_its_zoo_module(tmp_path, monkeypatch):
    """``experiment=digits`` now runs ``autocomp.models.zoo.LeNetDigits``; the base model an
    older autocomp trained from the same experiment's op list is converted, not retrained."""
    import dataclasses

    from autocomp.data import load_dataset
    from autocomp.models.ops import base_ops
    from autocomp.run import compose
    from autocomp.training.loop import train_base
    from autocomp.workflow import custom

    config = compose(["base.epochs=1", f"base.cache_dir={tmp_path / 'cache'}"])
    assert config.model._target_ == "autocomp.models.zoo.LeNetDigits"
    data = load_dataset(config.data)
    op_list = dataclasses.replace(config.model, _target_="", kwargs={})
    params, cached = train_base(op_list, base_ops(op_list), data, config.base, config.seed)
    assert not cached

    def no_training(*args, **kwargs):
        raise AssertionError("the base model was trained again")

    monkeypatch.setattr(custom, "train_base", no_training)
    _, variables, _ = custom.base_variables(config, data, tmp_path / "run")
    assert custom.cached_base(config, data).is_dir()  # converted once, then read as any entry
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(variables["params"]), strict=True):
        np.testing.assert_array_equal(a, b)
    from autocomp.models.zoo import LeNetDigits
    from autocomp.training.loop import predict

    x = data.x_test[:64]  # the module computes what the op list did
    np.testing.assert_allclose(LeNetDigits().apply(variables, x),
                               predict(base_ops(op_list), params, x), atol=1e-5)  # fmt: skip


def test_survey_of_a_users_model(tmp_path):
    """``python -m autocomp.bench survey`` on a user's model: each technique on every layer it
    fits, priced by its search space, measured on the compressed model itself."""
    from autocomp.run import compose
    from autocomp.survey.builtin import run_survey

    config = compose([
        "experiment=custom", "model._target_=own_models.SmallResNet", "data=digits",
        "+model.apply_kwargs.train=false", "base.epochs=2", "device=analytic_cortex_a76",
        "env.techniques=[keep,filter,gap]", "env.ratios=[0,0.5]", "survey.ratios=[0.5]",
        "survey.finetune_epochs=1", f"survey.out_dir={tmp_path}", f"base.cache_dir={tmp_path}",
    ])  # fmt: skip
    rows = {r.technique: r for r in run_survey(config)}
    assert list(rows) == ["original", "filter", "gap"]
    assert rows["original"].test_accuracy > 0.85
    assert rows["filter"].layers == "stem,block_a,down,fc"  # the prunable groups' roots
    assert rows["filter"].macs < rows["original"].macs / 2
    assert rows["filter"].max_feature_bytes == rows["original"].max_feature_bytes // 2
    assert rows["gap"].layers == "fc" and rows["gap"].params < rows["original"].params
    assert rows["filter"].measured_ms > 0


def test_nnx_model_analysed_pruned_and_exported_like_its_linen_twin():
    from flax import nnx
    from own_models import NnxTinyMobileNetV2

    from autocomp.models.nnx import NnxNetwork
    from autocomp.models.nnx import materialize as materialize_nnx

    model = NnxTinyMobileNetV2(rngs=nnx.Rngs(0))
    for path, mod in nnx.iter_modules(model):  # batch statistics away from (0, 1)
        if isinstance(mod, nnx.BatchNorm):
            n = mod.num_features
            k = jax.random.key(len(path))
            mod.mean.set_value(0.3 * jax.random.normal(k, (n,)))
            mod.var.set_value(0.5 + jax.random.uniform(k, (n,)))
            mod.bias.set_value(0.3 * jax.random.normal(jax.random.fold_in(k, 1), (n,)))
    before = jax.tree.map(np.asarray, nnx.state(model))
    x = np.random.default_rng(0).normal(size=(16, 16, 16, 3)).astype(np.float32)
    net = NnxNetwork(model, x[:1])
    linen_net, _ = _mobilenet()
    assert [la.name for la in net.layers] == [la.name for la in linen_net.layers]
    assert _groups(net) == _groups(linen_net)
    aux = prepare_aux(net.layers, net.base_params(), TECHS, ops=net)
    plan = _pruning_plan(net)
    small = materialize_nnx(
        net, aux, TECHS, plan_from_indices("m", net.layers, TECHS, RATIOS, plan)
    )
    assert isinstance(small, nnx.Module)
    graphdef, state = nnx.split(small)
    real = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x))
    sim = _simulate(net, aux, plan, x)
    assert np.abs(real - sim).max() <= 1e-4 * (np.abs(sim).max() + 1)
    assert small.block1.expand_bn.mean[...].shape == (16,)  # 32 channels, half pruned
    assert small.block1.depthwise.kernel[...].shape == (3, 3, 1, 16)
    # the user's object is untouched
    after = jax.tree.map(np.asarray, nnx.state(model))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after))
    tflite = TfliteModel(function_to_tflite(lambda xb: nnx.merge(graphdef, state)(xb), x.shape[1:]))
    lite = np.stack([tflite(xi[None])[0] for xi in x])
    assert np.mean(lite.argmax(-1) == real.argmax(-1)) >= 0.999


def test_compress_a_trained_nnx_model_end_to_end(trained_small_resnet, tmp_path):
    from flax import nnx
    from own_models import NnxSmallResNet, train_nnx

    import autocomp

    _, _, data = trained_small_resnet
    model = train_nnx(NnxSmallResNet(rngs=nnx.Rngs(0)), data.x_train, data.y_train)
    before = jax.tree.map(np.asarray, nnx.state(model))
    result = autocomp.compress(
        model,
        None,
        data,
        TINY_SEARCH,
    )
    m = result.metrics
    assert m["base"]["test_accuracy"] > 0.9
    assert m["compressed"]["latency_ms"] <= 0.6 * m["base"]["latency_ms"] * (1 + 1e-6)
    assert m["compressed"]["test_accuracy"] > m["base"]["test_accuracy"] - 0.1
    assert isinstance(result.model, nnx.Module) and result.variables is None
    logits = np.asarray(result.model(data.x_test[:64]))  # the returned object runs as it is
    assert np.allclose(logits, result.logits(data.x_test[:64]), atol=1e-4)
    after = jax.tree.map(np.asarray, nnx.state(model))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after))  # the user's model untouched
    assert result.export(tmp_path / "export", data, int8=False)["tflite_top1_agreement"] >= 0.999


def test_plan_evaluation_of_a_user_model_compiles_once():
    from own_models import SmallResNet

    model = SmallResNet()
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    net = LinenNetwork(model, model.init(jax.random.key(0), x[:1]), x[:1], {"train": False})
    techs = make_techniques(["keep", "filter", "svd"])
    aux = prepare_aux(net.layers, net.base_params(), techs, ops=net)
    profile = load_profile("analytic_cortex_a76")
    space = build_search_space(
        (), net.layers, techs, RATIOS, profile, (8, 8, 1), [], net.num_groups
    )
    env = CompressionEnv(net, space)
    reward = make_reward_params(RewardConfig(), tuple(space.base[:3]), 0.5)
    params = env.make_params(net.base_params(), aux, x, np.zeros(len(x), int), reward)
    traces = []
    forward = net.forward
    net.forward = lambda *a, **k: traces.append(1) or forward(*a, **k)
    rng = np.random.default_rng(0)
    for _ in range(3):  # three different batches of plans: one trace
        plans = np.stack([rng.integers(0, 2, (len(net.layers), 2)) for _ in range(4)])
        out = env.evaluate_plans(jnp.asarray(plans, jnp.int32), params)
        jax.block_until_ready(out["reward"])
    assert len(traces) == 1


@pytest.mark.slow  # a search and three conversions of a ResNet-20, about 1 min: `make test-slow`
def test_q8_layers_of_a_batch_normed_residual_model_run_int8_in_the_mixed_file(tmp_path):
    """Through the linen front end, a ResNet-20 with batch norm (folded by the converter into
    the kernels, a per-channel scale) and residual adds: every ``+q8`` layer of the plan is
    found on its 8-bit grid and runs int8 in ``model_mixed.tflite``."""
    import autocomp
    from autocomp.data import load_dataset
    from autocomp.export.tflite import tflite_op_names
    from autocomp.models.zoo import ResNet20
    from autocomp.run import compose

    data = load_dataset(compose(["experiment=digits"]).data)
    model = ResNet20(num_classes=10)
    variables = model.init(jax.random.key(0), data.x_train[:1], train=False)
    overrides = ["agent.episodes=32", "finetune.epochs=0", "reward.max_latency_frac=0.7",
                 "env.techniques=[keep,keep+q8,filter+q8]", "logger=none"]  # fmt: skip
    result = autocomp.compress(model, variables, data, overrides, apply_kwargs={"train": False})
    q8 = sum(c.technique.endswith("+q8") for c in result.plan.layers)
    assert q8 > 0
    report = result.export(tmp_path, data, int8=True)
    assert "error" not in report["mixed"] and report["checks"]["mixed_within_1pt_ok"]
    assert report["mixed"]["top1_agreement"] > 0.9
    names = tflite_op_names((tmp_path / "model_mixed.tflite").read_bytes())
    assert "QUANTIZE" in names and "DEQUANTIZE" in names
