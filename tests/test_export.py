"""Export and plans: TFLite conversion of every op kind, apply_plan, and untrusted plan files."""

from __future__ import annotations

import json
from dataclasses import replace

import jax
import numpy as np
import pytest

from autocomp.config import LayerConfig, ModelConfig
from autocomp.export import ExportError, TfliteModel, to_tflite
from autocomp.export.__main__ import main
from autocomp.export.tflite import tflite_op_names
from autocomp.models.ops import base_ops, init_params
from autocomp.search.plan import LayerChoice, Plan, PlanError, apply_plan
from autocomp.techniques import TechniqueError


def test_residual_depthwise_and_gap_models_convert_and_agree():
    """Every op kind the models use converts to builtin TFLite ops with float parity."""
    layers = [
        LayerConfig("conv", "stem", 8, 3),
        LayerConfig("save"),
        LayerConfig("conv", "a", 16, 3, stride=2),
        LayerConfig("conv", "b", 16, 3, activation="none"),
        LayerConfig("add"),
        LayerConfig("relu"),
        LayerConfig("dwconv", "dw", kernel=3),
        LayerConfig("conv", "pw", 24, 1),
        LayerConfig("maxpool", kernel=2, stride=2),
        LayerConfig("gap"),
        LayerConfig("dense", "fc", 5, activation="none"),
    ]
    ops = base_ops(ModelConfig("mix", [16, 16, 3], 5, layers))
    params = init_params(ops, (16, 16, 3), jax.random.key(0))
    x = np.random.default_rng(0).random((8, 16, 16, 3), np.float32)
    from autocomp.training.loop import predict

    reference = predict(ops, params, x)
    content = to_tflite(ops, params, (16, 16, 3))
    np.testing.assert_allclose(TfliteModel(content)(x), reference, atol=1e-4)
    names = tflite_op_names(content)
    assert "ADD" in names and "DEPTHWISE_CONV_2D" in names and "CUSTOM" not in names
    int8 = TfliteModel(to_tflite(ops, params, (16, 16, 3), calibration=x))
    assert int8.input["dtype"] == np.int8
    assert np.abs(int8(x) - reference).max() < 0.1 * np.abs(reference).max() + 0.05


def test_apply_plan_reproduces_the_materialized_model(prepared, tmp_path):
    from autocomp.search.plan import materialize, plan_from_indices

    p = prepared
    names = [t.name for t in p.techniques]
    indices = np.array(
        [[names.index(t), r] for t, r in (("filter", 1), ("svd", 3), ("magnitude", 5), ("keep", 0))]
    )
    plan = plan_from_indices(p.config.model.name, p.layers, p.techniques, p.config.env.ratios,
                             indices)  # fmt: skip
    ops, params, masks = materialize(p.ops, p.layers, p.base_params, p.aux, p.techniques, plan)
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    ops2, params2, masks2 = apply_plan(p.config.model, p.base_params, path)
    assert ops2 == ops and masks2.keys() == masks.keys() and ops != p.ops
    jax.tree.map(np.testing.assert_array_equal, params2, params)
    import autocomp

    assert autocomp.apply_plan(p.config.model, p.base_params, plan)[0] == ops


def _plan_doc(prepared, **layer0):
    layers = [{"name": la.name, "technique": "keep", "ratio": 0.0} for la in prepared.layers]
    layers[0].update(layer0)
    return {"version": 1, "model": prepared.config.model.name, "layers": layers}


def test_untrusted_plans_fail_with_clear_errors(prepared, tmp_path):
    model, params = prepared.config.model, prepared.base_params

    def apply(doc):
        path = tmp_path / "plan.json"
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return apply_plan(model, params, path)

    ops, _, _ = apply(_plan_doc(prepared))
    assert ops == prepared.ops  # all keep: the base model
    ops, _, _ = apply(_plan_doc(prepared, technique="keep+q8"))  # composed names are valid
    assert ops[0].bits == 8
    with pytest.raises(PlanError, match="not JSON"):
        apply("{'version': 1")
    with pytest.raises(PlanError, match="plan.schema.json at layers/0/ratio"):
        apply(_plan_doc(prepared, ratio=1.5))
    with pytest.raises(PlanError, match="plan.schema.json at layers/0"):
        apply(_plan_doc(prepared, code="__import__('os').system('true')"))
    with pytest.raises(TechniqueError, match="unknown technique 'exec'.*conv1|conv1.*'exec'"):
        apply(_plan_doc(prepared, technique="exec"))
    with pytest.raises(TechniqueError, match="'filter' does not fit layer 'fc2'"):
        doc = _plan_doc(prepared)
        doc["layers"][-1].update(technique="filter", ratio=0.5)
        apply(doc)
    other = _plan_doc(prepared)
    other["model"] = "resnet20"
    with pytest.raises(PlanError, match="made for model 'resnet20'"):
        apply(other)
    shifted = _plan_doc(prepared)
    shifted["layers"] = shifted["layers"][1:]
    with pytest.raises(PlanError, match="lists layers"):
        apply(shifted)


def test_export_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["run=" + str(tmp_path)]) == 2
    assert "not a finished autocomp run" in capsys.readouterr().err
    assert main(["runn=x"]) == 2 and "unknown argument" in capsys.readouterr().err
    assert main(["run=x", "threads=two"]) == 2 and "threads" in capsys.readouterr().err
    with pytest.raises(ExportError, match="required"):
        from autocomp.export.__main__ import parse_args

        parse_args([])


def test_export_finds_relative_data_paths_from_another_directory(tmp_path, monkeypatch):
    """A run started in one folder with a relative ``data.path`` exports from anywhere."""
    from flax import serialization

    from autocomp.export import export_run

    start = tmp_path / "project"
    (start / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 60)
    np.savez(start / "data" / "toy.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:],
             y_test=y[40:])  # fmt: skip
    layers = [LayerConfig("conv", "c1", 4, 3), LayerConfig("flatten"),
              LayerConfig("dense", "fc", 3, activation="none")]  # fmt: skip
    ops = base_ops(ModelConfig("toy", [8, 8, 1], 3, layers))
    ops = tuple(replace(op, bits=8) if op.name == "fc" else op for op in ops)  # keep+q8
    params = jax.tree.map(np.asarray, init_params(ops, (8, 8, 1), jax.random.key(0)))
    run = tmp_path / "run"
    run.mkdir()
    blob = {"ops": [op.__dict__ for op in ops], "params": params, "masks": {}}
    (run / "compressed_params.msgpack").write_bytes(serialization.msgpack_serialize(blob))
    plan = {"version": 1, "model": "toy", "layers": [
        {"name": "c1", "technique": "keep", "ratio": 0.0, "shape": [[3, 3, 1, 4]]},
        {"name": "fc", "technique": "keep+q8", "ratio": 0.0, "shape": [[256, 3]]}]}  # fmt: skip
    (run / "plan.json").write_text(json.dumps(plan))
    side = {"test_accuracy": 0.5, "params": 1, "macs": 1, "latency_ms": 1.0, "energy_mj": 1.0}
    metrics = {"base": side, "compressed": dict(side, latency_int8_ms=0.5),
               "device_table": {"name": "t", "kind": "analytic"}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    data = {"source": "local", "name": "toy", "path": "data/toy.npz", "val_fraction": 0.1}
    record = {"seed": 0, "git_sha": "x", "cwd": str(start), "overrides": [],
              "config": {"name": "toy", "data": data,
                         "model": {"input_shape": [8, 8, 1], "num_classes": 3}}}  # fmt: skip
    (run / "run.json").write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)  # not where the run started: data/toy.npz is not here
    report = export_run(run, calibration_examples=10)
    assert report["examples"] == 20 and report["tflite_top1_agreement"] == 1.0
    assert (run / "export" / "model_int8.tflite").is_file()
    # the q8 dense layer runs int8 in the mixed file, priced beside it as the plan's latency
    assert (run / "export" / "model_mixed.tflite").is_file()
    assert report["checks"]["mixed_within_1pt_ok"]
    assert report["mixed"]["table_latency_ms"]["predicted_ms"] == 1.0
    # the run's log line: the int8 file's latency here beside the table's int8 prediction
    from autocomp.export.verify import summary

    line = summary(run, report)
    here = report["int8"]["latency_ms"]["median"]
    assert f"int8 latency {here:.4f} ms here, 0.5000 ms on t" in line
    card = (run / "export" / "MODEL_CARD.md").read_text()
    assert "| c1 | keep | 0 | 3x3x1x4 |" in card and "`model_mixed.tflite`" in card


def test_mixed_precision_file_runs_exactly_the_q8_layers_in_int8():
    """``model_mixed.tflite``: the layers with 8-bit weights int8 (with QUANTIZE/DEQUANTIZE
    around them), every other op float, close to the JAX model; a count that does not match
    the graph is refused."""
    from autocomp.export.tflite import MixedPrecisionError, mixed_tflite, on_8bit_grid
    from autocomp.models.ops import Op, SequentialNet, bake_quantized

    ops = (Op("conv", "c1", 8, 3), Op("relu"), Op("conv", "c2", 16, 3, bits=8), Op("relu"),
           Op("maxpool", None, 0, 2, 2), Op("flatten"), Op("dense", "fc1", 32, bits=8),
           Op("relu"), Op("dense", "fc2", 10))  # fmt: skip
    params = init_params(ops, (8, 8, 2), jax.random.key(0))
    baked_ops, baked = bake_quantized(ops, params)
    assert on_8bit_grid(np.asarray(baked["c2"]["kernel"]), 3)
    assert not on_8bit_grid(np.asarray(baked["c1"]["kernel"]), 3)
    net = SequentialNet(baked_ops)
    fn = lambda x: net.apply({"params": baked}, x)  # noqa: E731
    x = np.random.default_rng(0).random((40, 8, 8, 2), np.float32)
    content = mixed_tflite(fn, (8, 8, 2), x[:20], int8_layers=2)
    model = TfliteModel(content)
    dtypes = {t["index"]: t["dtype"] for t in model.interpreter.get_tensor_details()}
    ran = [(o["op_name"], dtypes[o["outputs"][0]]) for o in model.interpreter._get_ops_details()
           if o["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]  # fmt: skip
    assert ran == [("CONV_2D", np.float32), ("CONV_2D", np.int8),
                   ("FULLY_CONNECTED", np.int8), ("FULLY_CONNECTED", np.float32)]  # fmt: skip
    names = tflite_op_names(content)
    assert names.count("QUANTIZE") == 2 and names.count("DEQUANTIZE") == 2, names
    reference = np.asarray(fn(x[20:]))
    assert np.abs(model(x[20:]) - reference).max() < 0.05 * np.abs(reference).max()
    with pytest.raises(MixedPrecisionError, match="3 layer"):
        mixed_tflite(fn, (8, 8, 2), x[:20], int8_layers=3)
    # what bench costs times for a plan: the mixed file where the table prices int8, else float
    from autocomp.devices.mixed import deployed_ops_file
    from autocomp.devices.tables import load_profile

    for table, quantized in (("pixel4_a76", True), ("host_amd_epyc_f25m1", False)):
        names = tflite_op_names(deployed_ops_file(ops, params, (8, 8, 2), load_profile(table)))
        assert ("QUANTIZE" in names) == quantized, (table, names)


def test_every_technique_converts_to_tflite_and_agrees():
    """The deployed form of every technique (k x 1 convs, grouped convs, depthwise with a
    multiplier, fire's concatenation, the pooled head) is builtin TFLite with float parity."""
    from contract_net import LAYERS, OPS, RATIOS, TECHS

    from autocomp.config import DistillConfig
    from autocomp.search.plan import LayerChoice, Plan, materialize, prepare_aux
    from autocomp.techniques import PrepareContext
    from autocomp.training.loop import predict

    params = init_params(OPS, (8, 8, 1), jax.random.key(1))
    x = np.random.default_rng(1).random((16, 8, 8, 1), np.float32)
    ctx = PrepareContext(ratios=RATIOS, distill=DistillConfig(steps=0, examples=16))
    aux = prepare_aux(LAYERS, params, TECHS, ctx, OPS, x)
    seen = set()
    for tech in TECHS:
        ratio = 0.0 if tech.ratio_free else 0.5
        choices = [
            LayerChoice(la.name, tech.name if tech.fits(la) is None else "keep",
                        ratio if tech.fits(la) is None else 0.0)
            for la in LAYERS
        ]  # fmt: skip
        ops, new_params, _ = materialize(OPS, LAYERS, params, aux, TECHS,
                                         Plan("contract_net", tuple(choices)))  # fmt: skip
        content = to_tflite(ops, new_params, (8, 8, 1))
        np.testing.assert_allclose(
            TfliteModel(content)(x), predict(ops, new_params, x), atol=1e-4, err_msg=tech.name
        )
        names = tflite_op_names(content)
        assert "CUSTOM" not in names and "FLEX" not in " ".join(names), (tech.name, names)
        if tech.name == "group":  # one grouped CONV_2D, not the per-group convs of training
            assert "SPLIT" not in names and "CONCATENATION" not in names, names
        if tech.name == "dwsep":
            assert "DEPTHWISE_CONV_2D" in names, names
        seen.update(names)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "CONCATENATION"} <= seen, seen


def test_apply_plan_redistills_replacements_with_training_images(prepared):
    """A plan with distilled replacements needs the training images, and then reproduces the
    search's layers."""
    from autocomp.search.plan import materialize
    from autocomp.workflow.pipeline import prepare_context

    p = prepared
    choices = {"conv1": ("dwsep", 0.75), "conv2": ("fire", 0.5), "fc1": ("gap", 0.0)}
    plan = Plan(
        p.config.model.name,
        tuple(LayerChoice(la.name, *choices.get(la.name, ("keep", 0.0))) for la in p.layers),
    )
    ops, params, _ = materialize(p.ops, p.layers, p.base_params, p.aux, p.techniques, plan)
    with pytest.raises(TechniqueError, match="training data"):
        apply_plan(p.config.model, p.base_params, plan)
    ops2, params2, _ = apply_plan(
        p.config.model, p.base_params, plan, p.data.x_train, prepare_context(p.config)
    )
    assert ops2 == ops
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params2, params)
