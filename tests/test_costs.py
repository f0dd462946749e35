"""Device cost tables: the lookup's tiers, the profilers' parsing and command construction, and
a real (tiny) host profile that resumes."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from autocomp.devices.costs import format_shares, price_op, price_ops
from autocomp.devices.opkeys import op_key, parse_key
from autocomp.devices.profiler import append_partial, load_partial
from autocomp.devices.profiling import (
    AndroidRunner,
    ProfileError,
    host_energy_counters,
    parse_battery,
    parse_benchmark_output,
    power_from_csv,
    read_rapl_uj,
    search_configs,
)
from autocomp.devices.tables import CostTableError, load_profile
from autocomp.models.ops import Op

DATA = Path(__file__).parent / "data"


def _measured_table(tmp_path, rows, overhead=0.0):
    table = json.loads(Path(load_profile("analytic_cortex_a76").path).read_text())
    table["kind"] = "measured"
    table["device"].update(name="test-host", platform="host", measured=True)
    table["invoke_overhead_ms"] = overhead
    table["rows"] = [
        {"key": k, "latency_ms": v, "latency_spread_ms": 0.0, "energy_mj": None}
        for k, v in rows.items()
    ]
    path = tmp_path / "measured.json"
    path.write_text(json.dumps(table))
    return path


def test_parse_key_inverts_op_key_for_every_op_of_a_search_space():
    from contract_net import LAYERS, OPS, RATIOS, TECHS

    configs = search_configs(OPS, LAYERS, TECHS, RATIOS, (8, 8, 1))
    kinds = {op.kind for op, _ in configs.values()}
    assert {"conv", "dense", "dwconv", "expand", "gap"} <= kinds, kinds
    for key, (_, shape) in configs.items():
        parsed, parsed_shape = parse_key(key)
        assert op_key(parsed, parsed_shape) == key and parsed_shape == shape


def test_lookup_tiers_exact_interpolated_roofline_and_analytic(tmp_path):
    """Rows of conv 8x8x4 -> n at n = 8 and 32 (latency linear in MACs); a 16-filter conv is
    interpolated between them, a 64-filter one is outside the range (roofline), and the
    analytic table (no rows) answers with its own model."""
    conv = lambda n: Op("conv", "c", n, 3)  # noqa: E731
    shape = (8, 8, 4)
    rows = {op_key(conv(n), shape): 0.01 + 1e-6 * n * 2304 for n in (8, 32)}
    rows[op_key(Op("dense", "d", 10), (64,))] = 0.002
    rows[op_key(Op("maxpool", kernel=2, stride=2), (8, 8, 16))] = 0.001
    profile = load_profile(str(_measured_table(tmp_path, rows)))
    exact = price_op(profile, conv(8), shape)
    assert exact.source == "table" and exact.latency_ms == pytest.approx(0.01 + 1e-6 * 8 * 2304)
    mid = price_op(profile, conv(16), shape)
    assert mid.source == "interpolated"
    assert mid.latency_ms == pytest.approx(0.01 + 1e-6 * 16 * 2304)
    far = price_op(profile, conv(64), shape)
    assert (
        far.source == "roofline" and far.latency_ms > price_op(profile, conv(32), shape).latency_ms
    )
    assert price_op(profile, Op("relu"), shape).source == "free"
    analytic = price_op(load_profile("analytic_cortex_a76"), conv(16), shape)
    assert analytic.source == "analytic"
    cost = price_ops(profile, (conv(8), Op("relu"), conv(16)), (8, 8, 4), strict=False)
    assert format_shares(cost.sources) == (
        "table 50.0%, interpolated 50.0%, roofline 0.0%, calibrated 0.0%, analytic 0.0%"
    )


def test_a_rows_measured_energy_is_used_and_other_shapes_fall_back(tmp_path):
    table = json.loads(Path(load_profile("analytic_cortex_a76").path).read_text())
    op = Op("dense", "fc", 10)
    table["rows"] = [
        {"key": op_key(op, (32,)), "latency_ms": 0.5, "latency_spread_ms": 0.01, "energy_mj": 0.25}
    ]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(table))
    profile = load_profile(str(path))
    cost = price_op(profile, op, (32,))
    assert (cost.latency_ms, cost.energy_mj, cost.source) == (0.5, 0.25, "table")
    assert price_op(profile, op, (64,)).source == "analytic"


def test_k_bit_layers_without_int8_data_are_priced_as_their_float_op_but_stored_smaller(tmp_path):
    op = Op("dense", "d", 10)
    profile = load_profile(str(_measured_table(tmp_path, {op_key(op, (64,)): 0.5})))
    assert profile.int8_table is None
    q8 = price_op(profile, Op("dense", "d", 10, bits=8), (64,))
    assert q8.source == "table" and q8.latency_ms == 0.5
    assert q8.bytes < price_op(profile, op, (64,)).bytes


def test_q8_layers_are_priced_as_the_mixed_export_runs_them():
    """With int8 data, an 8-bit layer costs its int8 kernel plus a QUANTIZE of its input and a
    DEQUANTIZE of its output; a big conv on an A76 (SDOT) then runs faster than in float."""
    from autocomp.devices.costs import conversion_ms, int8_latency_ms

    profile = load_profile("pixel4_a76")
    op, shape = Op("conv", "c", 64, 3), (16, 16, 64)
    q8 = price_op(profile, replace(op, bits=8), shape)
    expected = int8_latency_ms(profile, op, shape) + conversion_ms(profile, shape)
    expected += conversion_ms(profile, (16, 16, 64))
    assert q8.latency_ms == pytest.approx(expected)
    assert 0 < conversion_ms(profile, shape) < q8.latency_ms / 4
    assert q8.latency_ms < 0.75 * price_op(profile, op, shape).latency_ms


def test_the_call_overhead_is_added_once_per_model(tmp_path):
    op = Op("dense", "d", 10)
    profile = load_profile(str(_measured_table(tmp_path, {op_key(op, (64,)): 0.5}, 0.25)))
    assert price_ops(profile, (op,), (64,)).latency_ms == pytest.approx(0.75)
    assert price_ops(profile, (op,), (64,), strict=False).latency_ms == pytest.approx(0.5)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda t: t["device"].pop("platform"), "platform"),
        (lambda t: t["device"].update(platform="android"), "analytic table cannot claim"),
        (lambda t: t.update(kind="measured"), "measured table needs device.measured"),
        (lambda t: t["rows"].append({"key": "conv|in=8", "latency_ms": 1}), "not an op key"),
        (
            lambda t: t["rows"].extend(
                [{"key": "relu|in=4|out=4|k=1|s=1|g=1|float32", "latency_ms": 1}] * 2
            ),
            "appears twice",
        ),  # fmt: skip
        (
            lambda t: t["rows"].append(
                {"key": "relu|in=4|out=4|k=1|s=1|g=1|float32", "latency_ms": 1, "energy_mj": -1}
            ),
            "energy_mj",
        ),  # fmt: skip
        (lambda t: t.update(conversion_gbs=0), "conversion_gbs must be a positive number"),
        (lambda t: t.update(schema_version=1), "schema_version is 1, expected 2"),
        (lambda t: t.update(schema_version=7), "schema_version is 7"),
        (lambda t: t.pop("device"), "missing object 'device'"),
        (lambda t: t["device"].update(measured=True), "cannot claim"),
        ("{not json", "not valid JSON"),
    ],
)
def test_corrupt_or_mismatched_tables_are_clear_errors(tmp_path, edit, match):
    """Every way a table can be wrong, in one place: each a `CostTableError` naming the field."""
    path = tmp_path / "bad.json"
    if isinstance(edit, str):
        path.write_text(edit)
    else:
        table = json.loads(Path(load_profile("analytic_cortex_a76").path).read_text())
        edit(table)
        path.write_text(json.dumps(table))
    with pytest.raises(CostTableError, match=match):
        load_profile(str(path))


def test_every_shipped_table_loads_and_says_what_it_is():
    from importlib import resources

    names = [p.stem for p in resources.files("autocomp.devices").iterdir()
             if p.name.endswith(".json")]  # fmt: skip
    assert {"analytic_cortex_a55", "analytic_cortex_a76", "analytic_cortex_x1"} <= set(names)
    for name in names:
        profile = load_profile(name)
        if name.startswith("analytic"):
            assert profile.kind == "analytic" and not profile.device["measured"]
            assert "not a measurement" in profile.describe()
        elif profile.platform == "android":  # built from published phone measurements
            assert profile.kind in ("measured", "calibrated") and profile.provenance
            assert "Android phone" in profile.describe() or "calibrated" in profile.describe()
        else:  # a measured host table is labelled with its CPU, never as a phone
            assert profile.platform == "host" and profile.device["cpu"]
            assert profile.rows and profile.energy["method"]


def test_host_and_auto_resolve_to_this_machines_table(tmp_path, monkeypatch):
    from autocomp.devices import host

    monkeypatch.setattr(host, "user_tables_dir", lambda: tmp_path)
    monkeypatch.setattr(host, "host_id", lambda: "host-test-cpu")
    with pytest.raises(CostTableError, match="no measured cost table.*host-test-cpu.*profile"):
        load_profile("host")
    assert load_profile("auto").name == "pixel4-a76"  # the fallback, said as such
    mine = _measured_table(tmp_path, {"relu|in=4|out=4|k=1|s=1|g=1|float32": 0.1})
    mine.rename(tmp_path / "host-test-cpu.json")
    assert load_profile("host").name == load_profile("auto").name == "test-host"


# ------------------------------------------------------------------ android: recorded outputs
def test_benchmark_model_output_is_parsed_from_recorded_phone_logs():
    timing = parse_benchmark_output((DATA / "benchmark_model_android.txt").read_text())
    assert (timing.median_ms, timing.spread_ms, timing.repeats) == (33.2094, 0.45, 50)
    old = parse_benchmark_output((DATA / "benchmark_model_android_2018.txt").read_text())
    assert old.median_ms == pytest.approx(37.6257) and old.repeats == 13
    with pytest.raises(ProfileError, match="no 'count=.*ERROR: Could not open"):
        parse_benchmark_output("STARTING!\nERROR: Could not open '/data/local/tmp/x.tflite'.")


def test_battery_readings_are_parsed_from_recorded_phone_uevents():
    mi8 = parse_battery((DATA / "battery_uevent_mi8.txt").read_text())
    assert mi8 == pytest.approx(0.326171 * 3.888173)  # magnitude: the sign differs per phone
    pixel = parse_battery((DATA / "battery_uevent_pixel3a.txt").read_text())
    assert pixel == pytest.approx(976e-6 * 3.815175)
    prefixed = "POWER_SUPPLY_CURRENT_NOW=-500\nPOWER_SUPPLY_VOLTAGE_NOW=4000"
    assert parse_battery(prefixed, "mA", "mV") == pytest.approx(2.0)
    with pytest.raises(ProfileError, match="power-monitor CSV"):
        parse_battery("NAME=battery\nCAPACITY=50")


def test_power_monitor_csv(tmp_path):
    path = tmp_path / "monsoon.csv"
    path.write_text("time_s,current_a,voltage_v\n0,0.5,4.0\n0.1,0.7,4.0\n")
    assert power_from_csv(path) == pytest.approx(2.4)
    path.write_text("time_s,amps\n0,1\n")
    with pytest.raises(ProfileError, match="power_w.*current_a"):
        power_from_csv(path)


def test_android_commands_use_the_serial_threads_and_delegate():
    runner = AndroidRunner("R58M123", threads=4, delegate="gpu", num_runs=200)
    assert runner.push_command(Path("/tmp/m.tflite")) == [
        "adb", "-s", "R58M123", "push", "/tmp/m.tflite", "/data/local/tmp/autocomp/m.tflite",
    ]  # fmt: skip
    cmd = runner.benchmark_command("m.tflite")
    assert cmd[:4] == ["adb", "-s", "R58M123", "shell"]
    assert cmd[4] == (
        "/data/local/tmp/benchmark_model --graph=/data/local/tmp/autocomp/m.tflite "
        "--num_threads=4 --warmup_runs=20 --num_runs=200 --use_xnnpack=false --use_gpu=true"
    )
    assert runner.battery_command()[-1] == "cat /sys/class/power_supply/battery/uevent"
    with pytest.raises(ProfileError, match="not found: install Android platform-tools"):
        AndroidRunner("x", adb="/nonexistent/adb").run(["/nonexistent/adb", "devices"])


# ------------------------------------------------------------------ host
def test_energy_counters_are_found_where_the_kernel_exposes_them(tmp_path):
    none = host_energy_counters(tmp_path / "powercap", tmp_path / "power_supply")
    assert none["rapl"] == [] and "no energy counter" in none["summary"]
    rapl = tmp_path / "powercap" / "intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "energy_uj").write_text("123456\n")
    battery = tmp_path / "power_supply" / "BAT0"
    battery.mkdir(parents=True)
    (battery / "current_now").write_text("1")
    (battery / "voltage_now").write_text("1")
    found = host_energy_counters(tmp_path / "powercap", tmp_path / "power_supply")
    assert found["rapl"] == [str(rapl / "energy_uj")] and found["batteries"] == [str(battery)]
    assert read_rapl_uj(found["rapl"]) == 123456


def test_partial_rows_survive_a_torn_last_line(tmp_path):
    out = tmp_path / "t.json"
    append_partial(out, {"key": "a", "latency_ms": 1.0})
    with (tmp_path / "t.json.partial.jsonl").open("a") as f:
        f.write('{"key": "b", "lat')  # killed mid-write
    assert list(load_partial(out)) == ["a"]


def test_host_profile_measures_resumes_and_validates(tmp_path, monkeypatch, caplog):
    """A real profile of a tiny search space (keep only): every configuration timed in the
    LiteRT interpreter, a row measured before the 'kill' kept as it was, and the whole model
    measured against the table's prediction."""
    from autocomp.profile import parse_args, run_profile

    out = tmp_path / "host.json"
    overrides = ["experiment=digits", "env.techniques=[keep]", "env.ratios=[0.0]"]
    opts, rest = parse_args(["device=host", f"out={out}", "rounds=5", *overrides])
    from autocomp.models.layers import compressible_layers
    from autocomp.models.ops import base_ops
    from autocomp.run import compose
    from autocomp.techniques import make_techniques

    config = compose(rest)
    ops = base_ops(config.model)
    configs = search_configs(ops, compressible_layers(ops, (8, 8, 1)),
                             make_techniques(["keep"]), [0.0], (8, 8, 1))  # fmt: skip
    first = next(iter(configs))
    append_partial(out, {"key": first, "latency_ms": 123.0, "latency_spread_ms": 0.0,
                         "energy_mj": None, "repeats": 1})  # fmt: skip
    run_profile(opts, rest)
    table = json.loads(out.read_text())
    assert {r["key"] for r in table["rows"]} == set(configs)
    resumed = next(r for r in table["rows"] if r["key"] == first)
    assert resumed["latency_ms"] == 123.0 and resumed["latency_int8_ms"] >= 0  # int8 added
    assert all(
        r["latency_ms"] >= 0 and r["repeats"] >= 5 for r in table["rows"] if r["key"] != first
    )
    # every row also timed as the export's int8 file runs it, with its own call overhead
    assert all(r["latency_int8_ms"] >= 0 for r in table["rows"])
    assert table["invoke_overhead_int8_ms"] > 0
    # and the QUANTIZE/DEQUANTIZE rate around +q8 layers, which then prices them (a host whose
    # noise hides them after three tries says so and leaves the rate out of the table)
    if "conversion_gbs" in table or "not measured" not in caplog.text:
        assert table["conversion_gbs"] > 0
        from autocomp.devices.costs import conversion_ms

        rate = 5 * 64 / (load_profile(str(out)).conversion_gbs * 1e9) * 1e3
        assert conversion_ms(load_profile(str(out)), (8, 8, 1)) == pytest.approx(rate)
    assert table["device"]["platform"] == "host" and table["kind"] == "measured"
    assert not table["energy"]["measured"] or "RAPL" in table["energy"]["method"]
    [check] = table["validation"]
    assert check["model"] == "lenet_digits" and check["measured_ms"] > 0
    assert math.isfinite(check["error_pct"])
    assert not (tmp_path / "host.json.partial.jsonl").exists()
    profile = load_profile(str(out))
    assert profile.describe().startswith(profile.name) and "measured on the host" in (
        profile.describe()
    )
    from autocomp.devices.costs import price_ops_int8

    assert price_ops_int8(profile, ops, (8, 8, 1)) > 0  # every op has its int8 row
    assert price_ops_int8(load_profile("host_amd_epyc_f25m1"), ops, (8, 8, 1)) is None


def test_host_profile_with_one_and_four_threads_writes_a_table_each(tmp_path, monkeypatch):
    from autocomp.devices import host
    from autocomp.profile import main

    monkeypatch.setattr(host, "user_tables_dir", lambda: tmp_path)
    args = ["device=host", "threads=1,4", "rounds=3", "limit=1", "experiment=digits",
            "env.techniques=[keep]", "env.ratios=[0.0]"]  # fmt: skip
    assert main(args) == 0
    one, four = tmp_path / f"{host.host_id()}.json", tmp_path / f"{host.host_id()}-4t.json"
    assert load_profile(str(one)).device["threads"] == 1
    assert load_profile(str(four)).device["threads"] == 4
    assert "; 4 threads;" in load_profile(str(four)).describe()
    assert load_profile("host").path == str(one)  # device=host: the one-thread table


FAKE_ADB = """#!{python}
# A stand-in adb that answers like a phone: benchmark_model reports a mean time that grows
# with the pushed file's size (1 us per byte), the battery a recorded uevent.
import os, pathlib, re, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(" ".join(args) + "\\n")
state = pathlib.Path({state!r})
if "push" in args:
    local, remote = args[args.index("push") + 1 : args.index("push") + 3]
    (state / os.path.basename(remote)).write_text(str(os.path.getsize(local)))
    with open(state.parent / "pushed_sizes", "a") as f:
        f.write(f"{{os.path.getsize(local)}}\\n")
joined = " ".join(args)
if "benchmark_model" in joined:
    size = int((state / os.path.basename(re.search(r"--graph=(\\S+)", joined)[1])).read_text())
    print(f"count=50 first={{size}} curr={{size}} min={{size}} max={{size}} avg={{size}}.0 std=5")
elif "uevent" in joined:
    print(open({uevent!r}).read())
"""


def test_android_profile_runs_end_to_end_through_adb(tmp_path):
    """The android profiler against a stand-in ``adb`` whose timings depend on the model it was
    handed (the pushed file's size): pushes, timing, overhead, energy and the table."""
    import sys

    from autocomp.profile import parse_args, run_profile

    log, state = tmp_path / "adb.log", tmp_path / "phone"
    state.mkdir()
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable, log=str(log), state=str(state),
                                   uevent=str(DATA / "battery_uevent_mi8.txt")))  # fmt: skip
    adb.chmod(0o755)
    out = tmp_path / "phone.json"
    opts, rest = parse_args(["device=android", "serial=R58M123", f"adb={adb}", f"out={out}",
                             "threads=4", "experiment=digits", "env.techniques=[keep]",
                             "env.ratios=[0.0]", "limit=2"])  # fmt: skip
    run_profile(opts, rest)
    table = load_profile(str(out))
    assert table.platform == "android" and table.name == "android-R58M123"
    assert "measured on an Android phone" in table.describe()
    assert table.provenance["threads"] == 4 and table.provenance["sources"][0]["commit"]
    calls = log.read_text().splitlines()
    assert any(c.startswith("-s R58M123 push ") for c in calls)
    assert any("--num_threads=4" in c and "--use_xnnpack=true" in c for c in calls)
    # Each row is its own model's time less the trivial model's: a file of b bytes "runs" in
    # b us here, so the rows add back up to the files' sizes.
    sizes = {float(s) for s in (tmp_path / "pushed_sizes").read_text().split()}
    overhead_ms = table.invoke_overhead_ms
    assert overhead_ms > 0 and 1e3 * overhead_ms in sizes
    # The experiment's first two configurations: its first conv, then the max-pool between
    # its layers (a file no bigger than the trivial model's: its row is clamped at zero).
    rows = {key.split("|")[0]: r["latency_ms"] for key, r in table.rows.items()}
    assert sorted(rows) == ["conv", "maxpool"] and rows["conv"] > 0
    for r in rows.values():
        assert r == 0.0 or any(abs(1e3 * (r + overhead_ms) - s) < 1e-6 for s in sizes), r
    assert rows["maxpool"] == 0.0 or rows["maxpool"] != rows["conv"]


@pytest.mark.slow
def test_bench_costs_times_random_plans_against_the_table(capsys):
    from autocomp.bench import main

    main(["costs", "plans=3", "device=analytic_cortex_a76", "env.techniques=[keep,filter,svd]"])
    out = capsys.readouterr().out
    assert (
        "lookup sources: table 0.0%, interpolated 0.0%, roofline 0.0%, calibrated 0.0%, "
        "analytic 100.0%" in out
    )
    assert out.strip().splitlines()[-1].startswith("MAPE=") and "plans=3" in out


def test_the_per_op_correction_is_fitted_on_whole_plans_and_taken_off_row_prices(tmp_path):
    from autocomp.devices.plan_timing import TimedPlan, fit_per_op_correction

    # whole plans that run 2 us per row-priced op faster than their rows add up to
    truth = 0.002
    timed = [
        TimedPlan(f"p{n}", 0.01 * n + 0.05, 0.01 * n + 0.05 + truth * n, n) for n in (2, 4, 7, 9)
    ]
    assert fit_per_op_correction(timed) == pytest.approx(truth)
    assert fit_per_op_correction([TimedPlan("user", 1.0, 1.2, None)]) == 0.0  # nothing counted
    conv = Op("conv", "c", 8, 3)
    path = _measured_table(tmp_path, {op_key(conv, (8, 8, 4)): 0.05})
    table = json.loads(path.read_text())
    table["per_op_correction_ms"] = truth
    path.write_text(json.dumps(table))
    assert price_op(load_profile(str(path)), conv, (8, 8, 4)).latency_ms == pytest.approx(0.048)
    table["per_op_correction_ms"] = -1.0
    path.write_text(json.dumps(table))
    with pytest.raises(CostTableError, match="per_op_correction_ms must be a non-negative"):
        load_profile(str(path))


def test_conversion_rate_is_timed_again_within_noise_and_left_out_when_hidden(monkeypatch, caplog):
    """``conversion_gbs``: pairs timed again while a difference is within noise (the median
    kept); no rate at all, with a warning, where none rises above it."""
    from autocomp.devices import mixed

    models = [(n, f"mixed{n}", f"int8{n}") for n in (100, 200)]
    monkeypatch.setattr(mixed, "conversion_models", lambda: models)
    calls = []

    def noisy_then_clear(content):  # first round: mixed no slower; later: 1 ms per 500 bytes
        calls.append(content)
        n = int(content.removeprefix("mixed").removeprefix("int8"))
        return 5 * n / 500 if content.startswith("mixed") and len(calls) > 4 else 0.0

    rate = mixed.conversion_gbs(noisy_then_clear)
    # two tries: medians 0.5 and 1 ms for 500 and 1,000 bytes, above the noise, so no third
    assert len(calls) == 8 and rate == pytest.approx(500 / 0.5e-3 / 1e9)
    assert mixed.conversion_gbs(lambda content: 1.0) is None and "not measured" in caplog.text
