"""Phone cost tables built from published phone measurements (a slice in tests/data/phones)."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from autocomp.devices import calibrate, published
from autocomp.devices.analytic import analytic_latency_ms, efficiency_key
from autocomp.devices.costs import price_ops, source_shares
from autocomp.devices.opkeys import op_counts, op_key, parse_key
from autocomp.devices.tables import CostTableError, load_profile, profile_from_data
from autocomp.models.ops import Op

SLICE = Path(__file__).parent / "data" / "phones"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "phones"


@pytest.fixture(scope="module")
def pixel1():
    return calibrate.pixel1_table(SLICE)


def test_every_block_is_broken_into_ops_with_the_upstream_mac_count():
    blocks = published.nnmeter_blocks(SLICE)
    assert {b.kind for b in blocks} == {"mbconv", "mbpool_head", "stem_conv"}
    for block in blocks:
        assert sum(op_counts(op, shape)[0] for op, shape in block.ops) == block.macs, block.key
        assert all(v > 0 for v in block.latency_ms.values())
    se = next(b for b in blocks if b.key.endswith("_se"))
    assert [op.kind for op, _ in se.ops].count("mul") == 1  # the squeeze-excite gate


def test_the_pixel1_table_is_keyed_as_autocomp_looks_ops_up(pixel1):
    profile = profile_from_data(pixel1, "<pixel1>")
    assert profile.kind == "measured" and profile.platform == "android"
    # MobileNet-V1's first layer: a 3x3 stride-2 conv from 224x224x3 to 32 channels
    key = op_key(Op("conv", "op", 32, 3, 2), (224, 224, 3))
    with (SLICE / published.AMC_CSV).open() as f:
        first = [r for r in csv.DictReader(f) if r["tflite_name"].endswith("Conv2d_0/Relu6")]
    proxyless = 3.246  # ProxylessNAS-Mobile's first conv has the same shape
    times = sorted([float(r["avg_ms"]) for r in first if r["out_c"] == "32"] + [proxyless])
    assert profile.rows[key]["latency_ms"] == pytest.approx(float(np.median(times)))
    assert profile.rows[key]["repeats"] == len(times)
    for key in profile.rows:  # every key parses back to the op that made it
        assert op_key(*parse_key(key)) == key
    # ops the profiles do not have are answered by the fallback fitted on the rows
    assert price_ops(profile, [Op("maxpool", kernel=2, stride=2)], (28, 28, 8)).sources == {
        "calibrated": 1
    }


def test_source_shares_of_a_model_priced_by_the_phone_table_add_up(pixel1):
    profile = profile_from_data(pixel1, "<pixel1>")
    ops = [Op("conv", "op", 32, 3, 2), Op("dwconv", "op", 0, 3, 1), Op("conv", "op", 40),
           Op("maxpool", kernel=2, stride=2), Op("gap"), Op("dense", "op", 10)]  # fmt: skip
    cost = price_ops(profile, ops, (224, 224, 3))
    shares = source_shares(cost.sources)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["table"] > 0 and shares["calibrated"] > 0 and shares["analytic"] == 0


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.pop("provenance"), "needs provenance"),
        (lambda t: t["provenance"]["sources"][0].pop("license"), r"sources\[0\]\.license"),
        (lambda t: t["provenance"].pop("threads"), r"provenance\.threads"),
        (lambda t: t["calibration"].pop("heldout"), "needs calibration"),
        (lambda t: t["device"].update(measured=True), "device.measured=false"),
        (lambda t: t["analytic"].update(combine="min"), "combine"),
        (lambda t: t["int8"].pop("method"), "int8 needs assumption"),
        (lambda t: t["int8"].update(assumption="yes"), "int8 needs assumption"),
    ],
)
def test_a_phone_table_without_provenance_or_license_is_refused(edit, match):
    table = copy.deepcopy(calibrate.phone_table(SLICE, "pixel4_a76"))
    profile_from_data(table, "<ok>")
    edit(table)
    with pytest.raises(CostTableError, match=match):
        profile_from_data(table, "<edited>")


def test_calibration_recovers_known_parameters_from_synthetic_rows():
    rng = np.random.default_rng(0)
    truth = dict(load_profile("analytic_cortex_a76").analytic, combine="sum",
                 efficiency={"conv": 0.5, "dwconv": 0.2, "dense": 0.3, "pool": 1.0},
                 kind_bandwidth_gbs={"conv": 6.0, "dwconv": 9.0, "dense": 4.0, "pool": 12.0},
                 bandwidth_gbs=12.0, op_overhead_us=3.0)  # fmt: skip
    examples, latency = [], []
    for _ in range(300):
        h, c, f = (
            int(rng.choice([7, 14, 28, 56])),
            int(rng.integers(8, 256)),
            int(rng.integers(8, 256)),
        )
        units, width = int(rng.integers(10, 500)), int(rng.integers(16, 2048))
        block = [(Op("conv", "op", f, int(rng.choice([1, 3]))), (h, h, c)),
                 (Op("dwconv", "op", 0, 3), (h, h, f)), (Op("add"), (h, h, f)),
                 (Op("dense", "op", units), (width,))]  # fmt: skip
        if rng.random() < 0.5:
            block = [block[int(rng.integers(4))]]  # some single ops, so every kind is seen alone
        total = 0.0
        for op, shape in block:
            macs, _, _, weight_read, act_bytes = op_counts(op, shape)
            kind = efficiency_key(op)
            total += float(analytic_latency_ms(truth, kind, macs, weight_read + act_bytes))
        examples.append(block)
        latency.append(total)
    start = load_profile("analytic_cortex_a76").analytic
    fit = calibrate.fit_analytic(start, examples, latency)
    for kind in calibrate.FITTED:
        assert fit["efficiency"][kind] == pytest.approx(truth["efficiency"][kind], rel=0.02)
    for kind, value in truth["kind_bandwidth_gbs"].items():
        assert fit["kind_bandwidth_gbs"][kind] == pytest.approx(value, rel=0.02)
    assert fit["op_overhead_us"] == pytest.approx(3.0, rel=0.02)


def test_the_fine_kind_fit_recovers_known_parameters_and_borrows_for_missing_kinds():
    from autocomp.devices.analytic import fine_kind
    from autocomp.devices.fine_kinds import L2_BYTES, fit_fine_kinds

    rng = np.random.default_rng(1)
    eff = {"conv_first": 0.1, "conv": 0.5, "dwconv3": 0.2, "dwconv5": 0.25, "dense": 0.3}
    bw = {"conv_first": 1.0, "conv": 6.0, "dwconv3": 9.0, "dwconv5": 7.0, "dense": 4.0,
          "add": 15.0, "pool": 5.0}  # fmt: skip
    base = load_profile("analytic_cortex_a76").analytic
    truth = dict(base, combine="sum", efficiency=dict(base["efficiency"], **eff),
                 kind_bandwidth_gbs=bw, op_overhead_us=2.0, l2_bytes=L2_BYTES,
                 dram_gbs=8.0)  # fmt: skip
    ops = []
    for _ in range(400):
        h, c, f = (
            int(rng.choice([7, 14, 28, 56])),
            int(rng.integers(8, 256)),
            int(rng.integers(8, 256)),
        )
        ops.append([(Op("conv", "op", f, 1), (h, h, c)), (Op("conv", "op", f, 3), (h, h, 3)),
                    (Op("dwconv", "op", 0, 3), (h, h, f)), (Op("dwconv", "op", 0, 5), (h, h, f)),
                    (Op("add"), (h, h, f)), (Op("gap"), (h, h, f)),
                    (Op("dense", "op", f), (c,))][int(rng.integers(7))])  # fmt: skip
    latency = []
    for op, shape in ops:
        macs, _, _, weight_read, act_bytes = op_counts(op, shape)
        kind = fine_kind(op, shape)
        latency.append(float(analytic_latency_ms(truth, kind, macs, weight_read + act_bytes)))
    fit = fit_fine_kinds(base, ops, latency, ridge=0.0)  # exact recovery: without the pull
    assert fit["fine_kinds"] is True
    for kind, value in eff.items():
        assert fit["efficiency"][kind] == pytest.approx(value, rel=0.02)
    for kind, value in bw.items():
        assert fit["kind_bandwidth_gbs"][kind] == pytest.approx(value, rel=0.02)
    assert fit["op_overhead_us"] == pytest.approx(2.0, rel=0.02)
    assert fit["dram_gbs"] == pytest.approx(8.0, rel=0.02)  # bytes beyond L2
    # kinds without examples take a neighbour's numbers (MAC-free kinds: the shared rate per
    # element, so a map activation moves 8 bytes per element where an add moves 12), and say so
    assert fit["borrowed"] == {
        "dwconv7": "dwconv5", "act": "add", "act_map": "element rate", "mul": "element rate"
    }  # fmt: skip
    assert fit["kind_bandwidth_gbs"]["act_map"] == pytest.approx(
        fit["kind_bandwidth_gbs"]["add"] * 8 / 12, rel=1e-3
    )
    assert fit["efficiency"]["dwconv7"] == fit["efficiency"]["dwconv5"]


def test_the_fine_kind_fit_prices_adds_per_element_and_pulls_unidentified_kinds_inward():
    """A network without adds prices them at its pools' rate per element (12 bytes per add
    element, 4 per pooled one); 3x3 depthwise rows all at stride 1 (one bytes-per-MAC ratio)
    leave compute and traffic unseparated, and the ridge keeps both off their bounds."""
    from autocomp.devices.analytic import fine_kind
    from autocomp.devices.fine_kinds import fit_fine_kinds

    base = load_profile("analytic_cortex_a76").analytic
    ops = [(Op("gap"), (7, 7, c)) for c in (256, 512, 768, 1024)]
    ops += [(Op("dwconv", "op", 0, 3), (h, h, c)) for h in (14, 28, 56) for c in (64, 128)]
    ops += [(Op("conv", "op", f, 1), (h, h, c)) for h in (7, 28) for c in (32, 96) for f in (64,)]
    latency = []
    for op, shape in ops:
        macs, _, _, weight_read, act_bytes = op_counts(op, shape)
        latency.append(0.002 + (macs / 2e9 + (weight_read + act_bytes) / 4e9) * 1e3)
    fit = fit_fine_kinds(base, ops, latency)
    assert fit["borrowed"]["add"] == "element rate"
    bw = fit["kind_bandwidth_gbs"]
    assert bw["add"] == pytest.approx(3 * bw["pool"], rel=1e-3)
    assert 1e-3 < fit["efficiency"]["dwconv3"] < 1.5 and 0.1 < bw["dwconv3"] < 64.0
    for (op, shape), measured in zip(ops, latency, strict=True):
        macs, _, _, weight_read, act_bytes = op_counts(op, shape)
        kind = fine_kind(op, shape)
        predicted = analytic_latency_ms(fit, kind, macs, weight_read + act_bytes)
        assert predicted == pytest.approx(measured, rel=0.1), (kind, shape)


def test_profile_cli_builds_the_tables_and_bench_phones_reports_them(tmp_path, capsys):
    from autocomp import bench, profile

    assert profile.main(["device=published", f"source={SLICE}", f"out={tmp_path}"]) == 0
    built = {p.stem for p in tmp_path.glob("*.json")}
    assert built == set(calibrate.TABLES)
    for name in built:
        table = load_profile(str(tmp_path / f"{name}.json"))
        assert table.provenance["sources"] and table.calibration["train_n"] > 0
    bench.main(["phones", f"source={SLICE}", f"plot={tmp_path / 'phones.png'}"])
    out = capsys.readouterr().out
    for name in calibrate.TABLES:
        assert f"table={name} MAPE=" in out
    assert "whole proxylessnas_mobile: measured 80.6 ms" in out
    assert (tmp_path / "phones.png").stat().st_size > 10_000
    # a source folder without the published files is one clear line
    assert profile.main(["device=published", f"source={tmp_path}"]) == 2
    assert "pass source=" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared phone data is not beside the repo")
def test_the_shipped_phone_tables_are_what_the_published_data_rebuild(tmp_path):
    """The tables in autocomp/devices come from the documented command, not from hand edits."""
    for name, table in calibrate.build_tables(SHARED).items():
        shipped = json.loads(
            resources.files("autocomp.devices").joinpath(f"{name}.json").read_text()
        )
        assert [r["key"] for r in table["rows"]] == [r["key"] for r in shipped["rows"]]
        assert [r["latency_ms"] for r in table["rows"]] == [
            r["latency_ms"] for r in shipped["rows"]
        ]
        for key in ("efficiency", "kind_bandwidth_gbs"):
            for kind, value in table["analytic"][key].items():
                assert shipped["analytic"][key][kind] == pytest.approx(value, rel=1e-3), (
                    name,
                    kind,
                )
        assert shipped["provenance"] == table["provenance"]


def test_device_host_without_a_table_says_how_long_profiling_takes(tmp_path, monkeypatch):
    from autocomp.devices import host
    from autocomp.run import compose, run

    monkeypatch.setattr(host, "user_tables_dir", lambda: tmp_path)
    monkeypatch.setattr(host, "host_id", lambda: "host-unprofiled-cpu")
    config = compose(["device=host", "env.techniques=[keep,filter]", "env.ratios=[0,0.5]"])
    with pytest.raises(CostTableError) as err:
        run(config, tmp_path / "run", {})
    message = str(err.value)
    assert "host-unprofiled-cpu" in message
    assert "search space here takes about" in message and "measured on 3" in message
    assert "python -m autocomp.profile device=host experiment=digits" in message
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_the_int8_column_is_a_labelled_assumption_and_prices_int8_faster():
    from autocomp.devices.costs import int8_latency_ms, price_op, price_ops_int8

    phone, host = load_profile("pixel4_a76"), load_profile("analytic_cortex_a76")
    assert phone.int8["assumption"] is True and "ASSUMPTION" in phone.int8["method"]
    cases = [(Op("conv", "c", 64, 3), (14, 14, 64)), (Op("dense", "d", 10), (256,)),
             (Op("add"), (14, 14, 64)), (Op("dwconv", "d", 0, 3), (28, 28, 32))]  # fmt: skip
    for op, shape in cases:
        float_ms = price_op(phone, op, shape).latency_ms
        assert 0 < int8_latency_ms(phone, op, shape) < float_ms
        assert int8_latency_ms(host, op, shape) is None  # no int8 column: no made-up number
    ops = (Op("conv", "c", 8, 3), Op("relu"), Op("flatten"), Op("dense", "d", 10))
    assert price_ops_int8(phone, ops, (8, 8, 1)) < price_ops(phone, ops, (8, 8, 1)).latency_ms
    assert price_ops_int8(host, ops, (8, 8, 1)) is None
    # In model_int8.tflite a layer with 8-bit weights runs as every other one: int8 once, with
    # no QUANTIZE/DEQUANTIZE (a search space priced on the view made it int8 twice before).
    for op, shape in cases[:2]:
        as_int8 = price_op(phone.int8_table, dataclasses.replace(op, bits=8), shape).latency_ms
        assert as_int8 == pytest.approx(int8_latency_ms(phone, op, shape))
