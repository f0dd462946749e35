"""End to end: the real CLI on the default experiment with a tiny budget, and reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from autocomp.search.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "agent.episodes=64",
    "agent.batch_episodes=16",
    "agent.updates_per_chunk=2",
    "base.epochs=3",
    "finetune.epochs=1",
    "env.distill.steps=0",  # least-squares distillation only (Adam steps: test_techniques)
]


def _setups_file(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()  # a worker's own; their parent is the session's
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cli_setups.txt"


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory, cache_dir):
    """One tiny run of the default experiment through the real CLI, with the export; read by
    the tests of this group (one xdist worker runs them: ``--dist loadgroup``)."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    # One line per set-up in the directory all workers share: the group test below fails if
    # the scheduler splits the group (pytest 9 broke xdist 3.8's loadgroup; pytest is pinned).
    with open(_setups_file(tmp_path_factory), "a") as f:
        f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}\n")
    env = {**os.environ, "WANDB_MODE": "offline", "AUTOCOMP_CACHE": cache_dir}
    proc = subprocess.run(
        [sys.executable, "-m", "autocomp.train", f"hydra.run.dir={run_dir}", *TINY, "export=true"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, run_dir


@pytest.mark.xdist_group("cli_run")
def test_default_experiment_cli_end_to_end(cli_run):
    proc, run_dir = cli_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "base vs compressed" in proc.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for side in ("base", "compressed"):
        for key in ("test_accuracy", "params", "bytes", "macs", "latency_ms", "energy_mj"):
            assert isinstance(metrics[side][key], int | float), (side, key)
    assert metrics["compressed"]["latency_ms"] <= metrics["search"]["budgets"]["latency_ms"]
    assert metrics["materialize_check"]["prediction_agreement"] == 1.0
    # The run says first which cost table priced it (the default: the Pixel 4 table calibrated
    # on published phone measurements) and where its answers came from.
    table = metrics["device_table"]
    logs = proc.stderr + proc.stdout
    assert "device table: " + table["name"] in logs
    first_log = next(line for line in logs.splitlines() if "[INFO] - " in line)
    assert "target device: pixel4-a76 [calibrated on published" in first_log
    assert (table["platform"], table["kind"]) == ("android", "calibrated")
    assert table["search_space_sources"]["calibrated"] == 1.0
    assert sum(table["search_space_sources"].values()) == pytest.approx(1.0)
    plan = Plan.load(run_dir / "plan.json")
    assert [c.name for c in plan.layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert all(c.latency_ms is not None and c.shape for c in plan.layers)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["seed"] == 0 and run["git_sha"] and run["config"]["name"] == "digits"
    blob = serialization.msgpack_restore((run_dir / "compressed_params.msgpack").read_bytes())
    n = sum(np.size(v) for v in jax.tree.leaves(blob["params"]))
    assert n == metrics["compressed"]["stored_scalars"]
    assert (run_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run_dir.glob("**/.*.tmp"))  # atomic writes leave no temp files
    # wandb ran offline and wrote its binary log, the plan table and the Pareto image.
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb"))
    assert list(offline[0].glob("files/media/images/*.png"))
    assert list(offline[0].glob("files/media/table/*.table.json"))
    # export=true: TFLite files run in the LiteRT interpreter and verified against JAX.
    verify = json.loads((run_dir / "export" / "verify.json").read_text())
    assert verify["examples"] == 359 and verify["passed"], verify["checks"]
    assert verify["tflite_top1_agreement"] >= 0.999 and verify["tflite_max_abs_logit_diff"] < 1e-3
    assert verify["int8_test_accuracy"] >= verify["float_test_accuracy"] - 0.01
    assert verify["float_test_accuracy"] == metrics["compressed"]["test_accuracy"]
    assert verify["int8"]["bytes"] < verify["float32"]["bytes"]
    # the table's int8 prediction for the phone, next to the int8 file measured on the host
    predicted = verify["int8"]["table_latency_ms"]
    assert predicted["table"] == "pixel4-a76" and predicted["predicted_ms"] > 0
    assert predicted["predicted_ms"] == metrics["compressed"]["latency_int8_ms"]
    assert metrics["compressed"]["latency_int8_ms"] < metrics["compressed"]["latency_ms"]
    assert "int8 latency (ms)" in proc.stdout
    assert verify["int8"]["latency_ms"]["median"] > 0
    lat = verify["float32"]["latency_ms"]
    assert 0 < lat["p10"] <= lat["median"] <= lat["p90"] and lat["repeats"] >= 21
    assert set(verify["float32"]["ops"]) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D",
                                             "RESHAPE", "FULLY_CONNECTED"}  # fmt: skip
    for name in ("model.tflite", "model_int8.tflite"):
        assert (run_dir / "export" / name).read_bytes()[4:8] == b"TFL3"
    card = (run_dir / "export" / "MODEL_CARD.md").read_text()
    assert "| conv1 |" in card and "python -m autocomp.export" in card and "export=true" in card


@pytest.mark.slow  # 20-40 s: keeps the default run under 10 minutes
@pytest.mark.xdist_group("cli_run")
def test_same_config_and_seed_give_the_same_plan(
    cli_run, tmp_path, tmp_path_factory, cache_dir, monkeypatch
):
    """The CLI's run again, in this process (its base model now from the cache): the same plan
    and the same reward."""
    from autocomp.run import compose, run

    proc, run_dir = cli_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    setups = _setups_file(tmp_path_factory).read_text().split()
    assert len(setups) == 1, f"the CLI run was set up on {setups}: --dist loadgroup not honoured"
    monkeypatch.setenv("AUTOCOMP_CACHE", cache_dir)
    metrics = run(compose(TINY), tmp_path, {"seed": 0}, show_progress=False)
    first = json.loads((run_dir / "metrics.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())["layers"]
    assert json.loads((tmp_path / "plan.json").read_text())["layers"] == plan
    assert metrics["compressed"]["reward"] == first["compressed"]["reward"]


def test_resume_continues_a_killed_search(tiny_config, tmp_path):
    """Killed in its second chunk, a search resumes from the first chunk's checkpoint and ends
    exactly where an uninterrupted search ends."""
    import jax

    from agents import AGENTS
    from autocomp.run import build_env
    from autocomp.search.loop import load_checkpoint, run_search
    from autocomp.workflow.pipeline import prepare
    from autocomp.workflow.tracking import NullTracker

    config = tiny_config()
    p = prepare(config)
    env, params = build_env(p)
    trainer = AGENTS["compressor_critic"].make_trainer(config.agent, env)
    ckpt = tmp_path / "search.msgpack"
    per_chunk = trainer.episodes_per_chunk
    assert trainer.num_chunks >= 2

    class Killed(Exception):
        pass

    class KillInSecondChunk(NullTracker):
        def log(self, metrics, step=None):
            if step == 2 * per_chunk - 1:
                raise Killed

    try:
        run_search(trainer, params, jax.random.key(0), KillInSecondChunk(), ckpt, "fp", False)
    except Killed:
        pass
    saved, saved_history = load_checkpoint(ckpt, trainer.init(jax.random.key(0)), "fp")
    assert int(saved.update) == config.agent.updates_per_chunk
    assert len(saved_history["reward"]) == per_chunk
    state, history, _ = run_search(
        trainer, params, jax.random.key(0), NullTracker(), ckpt, "fp", False
    )
    _, full, _ = run_search(trainer, params, jax.random.key(0), NullTracker(), None, "fp", False)
    np.testing.assert_array_equal(history["plan"], full["plan"])
    np.testing.assert_allclose(history["reward"], full["reward"])
    # A checkpoint of another config is refused with a clear error.
    import pytest

    from autocomp.training.loop import CheckpointError

    with pytest.raises(CheckpointError, match="another config"):
        run_search(trainer, params, jax.random.key(0), NullTracker(), ckpt, "other", False)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        run_search(trainer, params, jax.random.key(0), NullTracker(), ckpt, "fp", False)


def test_default_experiment_meets_its_bars(tmp_path, cache_dir):
    """The full default run: >= 3x lower latency and >= 3x fewer parameters than the base model
    with a test-accuracy drop of at most 1.5 points (about a minute on 2 CPU cores)."""
    from hydra import compose, initialize
    from omegaconf import OmegaConf

    from autocomp.run import register, run, to_config

    register()
    with initialize(version_base="1.3", config_path="../experiments"):
        cfg = compose("config", overrides=["logger=none", f"base.cache_dir={cache_dir}"])
    metrics = run(
        to_config(cfg), tmp_path, OmegaConf.to_container(cfg, resolve=True), show_progress=False
    )
    ratios = metrics["ratios"]
    assert ratios["latency_ms_x"] >= 3.0, ratios
    assert ratios["params_x"] >= 3.0, ratios
    assert ratios["accuracy_drop_points"] <= 1.5, ratios


def test_base_cache_is_an_orbax_checkpoint_and_bad_entries_are_refused(tiny_config, tmp_path):
    import dataclasses

    import jax
    import pytest
    from flax import serialization

    from autocomp.training.loop import CheckpointError
    from autocomp.workflow.pipeline import prepare

    config = tiny_config()
    config = dataclasses.replace(
        config, base=dataclasses.replace(config.base, epochs=1, cache_dir=str(tmp_path))
    )
    first = prepare(config)
    (entry,) = (tmp_path / "base").iterdir()
    assert entry.is_dir() and (entry / "_CHECKPOINT_METADATA").is_file()  # orbax's layout
    again = prepare(config)
    assert again.base_from_cache and not first.base_from_cache
    jax.tree.map(np.testing.assert_array_equal, again.base_params, first.base_params)
    # A cache entry from before orbax (flax msgpack) is read and converted.
    import shutil

    shutil.rmtree(entry)
    legacy = entry.with_name(entry.name + ".msgpack")
    legacy.write_bytes(serialization.to_bytes(first.base_params))
    converted = prepare(config)
    assert converted.base_from_cache and entry.is_dir()
    jax.tree.map(np.testing.assert_array_equal, converted.base_params, first.base_params)
    legacy.unlink()
    for f in entry.rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt.*delete the folder"):
        prepare(config)


def test_epoch_bar_logs_epochs_when_output_is_not_a_terminal(caplog):
    from autocomp.workflow.report import EpochBar

    with caplog.at_level("INFO"), EpochBar("base model", 2) as bar:
        bar.callback(0, 1.5)
        bar.callback(1, 0.5)
    assert "base model: epoch 2/2, loss 0.5000" in caplog.text
