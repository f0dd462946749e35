"""One run over several processes (``jax.distributed``, as a multi-node Slurm job runs it), for
real: the processes are started here, each with one CPU device, and join one runtime through a
coordinator on localhost (JAX's Slurm detection reads the variables ``srun`` would set).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import TINY

from autocomp.io import atomic_write_json, writes_here, written_elsewhere

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(processes: int, run_dirs: list[Path], overrides: list[str], cache_dir: str):
    """``python -m autocomp.train`` in ``processes`` processes of one job (process i in
    ``run_dirs[i]``); their CompletedProcess-like (returncode, output) pairs."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "AUTOCOMP_DIS"))}
    env |= {"AUTOCOMP_CACHE": cache_dir, "WANDB_MODE": "offline", "XLA_FLAGS": ""}
    procs = []
    for i in range(processes):
        slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "localhost",
                 "SLURM_NTASKS": str(processes), "SLURM_PROCID": str(i), "SLURM_LOCALID": "0",
                 "JAX_COORDINATOR_PORT": str(port)}  # fmt: skip
        command = [sys.executable, "-m", "autocomp.train", f"hydra.run.dir={run_dirs[i]}"]
        procs.append(subprocess.Popen([*command, *overrides], cwd=ROOT, env=env | slurm,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))  # fmt: skip
    return [(p.wait(timeout=600), p.stdout.read()) for p in procs]


def test_writes_under_a_folder_written_elsewhere_do_nothing(tmp_path):
    ours, theirs = tmp_path / "cache" / "a.json", tmp_path / "run" / "sub" / "b.json"
    with written_elsewhere(tmp_path / "run"):
        assert writes_here(ours) and not writes_here(theirs)
        atomic_write_json(ours, {"a": 1})
        atomic_write_json(theirs, {"b": 1})
    assert json.loads(ours.read_text()) == {"a": 1} and not (tmp_path / "run").exists()
    assert writes_here(theirs)  # only inside the block


def test_processes_with_different_run_dirs_stop_with_a_clear_error(tmp_path, cache_dir):
    """Hydra's default run directory has the start time in it, so it can differ between the
    processes: every process stops, before any work, and names the way out."""
    runs = [tmp_path / "run0", tmp_path / "run1"]
    for code, out in _train(2, runs, TINY, cache_dir):
        assert code == 2, out[-3000:]
        assert "different run directories" in out and "hydra.run.dir=" in out, out[-3000:]


@pytest.mark.slow
def test_two_processes_run_one_search_and_write_it_once(tmp_path, cache_dir):
    """The validation examples and the fine-tuning batches are split over both processes'
    devices; the run is the one a single process makes, and process 0 alone writes it."""
    overrides = [*TINY, "finetune.epochs=1", "logger=wandb", "export=true"]
    run = tmp_path / "two"
    results = _train(2, [run, run], overrides, cache_dir)
    for i, (code, out) in enumerate(results):
        assert code == 0, out[-3000:]
        assert f"process {i} of 2, 1 local of 2 devices" in out
        assert "2 cpu devices: examples are split over them" in out
    assert "exported" in results[0][1] and "exported" not in results[1][1]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # process 0's run only
    (code, out), = _train(1, [tmp_path / "one"], overrides, cache_dir)  # fmt: skip
    assert code == 0, out[-3000:]
    two, one = (json.loads((d / "metrics.json").read_text()) for d in (run, tmp_path / "one"))
    assert json.loads((run / "plan.json").read_text()) == json.loads(
        (tmp_path / "one" / "plan.json").read_text()
    )
    for side in ("base", "compressed"):
        assert two[side]["test_accuracy"] == pytest.approx(one[side]["test_accuracy"], abs=1e-9)
    assert two["compressed"]["reward"] == pytest.approx(one["compressed"]["reward"], rel=1e-5)
    assert (run / "export" / "model.tflite").is_file()
