"""Slurm through Hydra's submitit launcher, checked without a cluster, and multi-host JAX.

The launcher configs in launch/hydra/launcher/ compose; the sbatch script they would submit is
built by the real launcher and submitit, with fake ``srun``/``sbatch``/``sacct`` on PATH that
only record; :func:`autocomp.cluster.initialize` calls ``jax.distributed`` only when multi-task.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from tiny_runs import TINY

from autocomp import cluster
from autocomp.run import register

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
submitit = pytest.importorskip("submitit")

ROOT = Path(__file__).resolve().parents[1]
# Records its argv and the script it was given, then answers as sbatch does.
FAKE_SBATCH = """#!/bin/sh
echo "$@" > "$AUTOCOMP_TEST_CAPTURE/argv.tmp" && mv "$AUTOCOMP_TEST_CAPTURE/argv.tmp" \
  "$AUTOCOMP_TEST_CAPTURE/argv"
cp "$1" "$AUTOCOMP_TEST_CAPTURE/script.tmp" && mv "$AUTOCOMP_TEST_CAPTURE/script.tmp" \
  "$AUTOCOMP_TEST_CAPTURE/sbatch.sh"
echo "Submitted batch job 1234"
"""
FAKE_SACCT = """#!/bin/sh
echo "JobID|State|NodeList"
"""  # no job known yet: submitit keeps waiting (state UNKNOWN)
FAKE_SRUN = "#!/bin/sh\nexit 1\n"  # submitit only checks that srun exists
SLURM_STEP = {  # what srun sets in each task of a 2-node, 1-task-per-node job
    "SLURM_JOB_ID": "1234",
    "SLURM_STEP_NODELIST": "node[001-002]",
    "SLURM_NTASKS": "2",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}


def _fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", FAKE_SRUN)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _compose(overrides):
    register()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "experiments")):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.fixture
def at_root(monkeypatch):
    # hydra.searchpath's file://launch is relative to the working directory (see config.yaml)
    monkeypatch.chdir(ROOT)
    for name in [n for n in os.environ if n.startswith(("SLURM_", "AUTOCOMP_SLURM_"))]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("AUTOCOMP_DISTRIBUTED", raising=False)


def test_slurm_launcher_composes_with_its_fields(at_root, monkeypatch):
    monkeypatch.setenv("AUTOCOMP_SLURM_PARTITION", "gpu-short")
    launcher = _compose(["hydra/launcher=slurm", "hydra.sweep.dir=/scratch/sweep"]).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 1, 1)
    assert (launcher.cpus_per_task, launcher.mem_gb, launcher.timeout_min) == (4, 16, 60)
    assert launcher.partition == "gpu-short" and launcher.account is None
    assert launcher.submitit_folder == "/scratch/sweep/.submitit/%j"
    multi = _compose(["hydra/launcher=slurm_multinode"]).hydra.launcher
    assert (multi.nodes, multi.tasks_per_node, multi.cpus_per_task) == (2, 1, 4)


def test_unset_partition_is_left_to_slurm(at_root):
    assert _compose(["hydra/launcher=slurm"]).hydra.launcher.partition is None


def _submitted_script(tmp_path, monkeypatch, overrides, jobs) -> tuple[str, object]:
    """The sbatch script and executor Hydra's real ``SlurmLauncher.launch`` builds for
    ``jobs`` (lists of overrides); ``map_array`` returns stand-in jobs instead of submitting."""
    from hydra.core.utils import JobReturn

    monkeypatch.setenv("PATH", f"{_fake_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    cfg = _compose(["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    captured = {}

    class Submitted:
        def results(self):
            return [JobReturn()]

    def map_array(executor, fn, *args):
        captured.update(executor=executor, fn=fn, args=args)
        return [Submitted() for _ in args[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    assert len(launcher.launch(jobs, initial_job_idx=0)) == len(jobs)
    assert captured["fn"] is launcher and list(captured["args"][0]) == jobs
    slurm = captured["executor"]._executor
    slurm.parameters["map_count"] = len(jobs)  # what SlurmExecutor does for an array
    return slurm._make_submission_file_text(slurm._submitit_command_str, "uid"), slurm


def test_multinode_sbatch_script_asks_for_its_nodes(at_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMP_SLURM_PARTITION", "big")
    jobs = [["seed=0"]]
    script, slurm = _submitted_script(
        tmp_path, monkeypatch, ["hydra/launcher=slurm_multinode", "hydra.launcher.nodes=4"], jobs
    )
    lines = script.splitlines()
    for flag in (
        "--nodes=4",
        "--ntasks-per-node=1",
        "--gpus-per-node=1",
        "--cpus-per-task=4",
        "--mem=16GB",
        "--time=60",
        "--partition=big",
        "--job-name=app",
    ):
        assert f"#SBATCH {flag}" in lines, flag
    assert slurm._num_tasks() == 4  # 4 processes: one jax.distributed runtime
    assert "export XLA_PYTHON_CLIENT_PREALLOCATE=false" in lines
    assert lines[-1].startswith("srun --unbuffered") and "-u -m submitit.core._submit" in lines[-1]


def _submit_from_cli(tmp_path: Path, overrides: list[str], jobs: int) -> Path:
    """Run ``python -m autocomp.train -m hydra/launcher=slurm <overrides>`` against the fake
    sbatch; stop it once its ``jobs`` pickled jobs are in place. Returns the sweep directory."""
    (tmp_path / "capture").mkdir()
    sweep = tmp_path / "sweep"
    env = {
        **os.environ,
        "PATH": f"{_fake_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}",
        "AUTOCOMP_TEST_CAPTURE": str(tmp_path / "capture"),
        "AUTOCOMP_SLURM_PARTITION": "gpu",
    }
    command = [
        sys.executable,
        "-m",
        "autocomp.train",
        "-m",
        "hydra/launcher=slurm",
        *overrides,
        f"hydra.sweep.dir={sweep}",
    ]
    log_path = tmp_path / "out.log"
    with log_path.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # After sbatch answers, submitit moves each job's pickle under its job id and then
            # waits for results that never come: stop it once all of them are in place.
            deadline = time.monotonic() + 120
            while len(list(sweep.glob(".submitit/1234*/*_submitted.pkl"))) < jobs:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait()
    return sweep


def test_cli_multirun_submits_one_array_task_per_combination(at_root, tmp_path):
    overrides = ["reward.max_latency_frac=0.2,0.3,0.5", "seed=0,1", "logger=none"]
    sweep = _submit_from_cli(tmp_path, overrides, jobs=6)
    lines = (tmp_path / "capture" / "sbatch.sh").read_text().splitlines()
    for flag in (
        "--array=0-5%6",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--gpus-per-node=1",
        "--cpus-per-task=4",
        "--time=60",
        "--partition=gpu",
        "--job-name=train",
    ):
        assert f"#SBATCH {flag}" in lines, flag
    assert f"--output={sweep}/.submitit/%A_%a/%A_%a_0_log.out" in "\n".join(lines)
    assert lines[-1].endswith(f"-u -m submitit.core._submit {sweep}/.submitit/%j")
    argv = (tmp_path / "capture" / "argv").read_text().split()  # sbatch <its script>
    assert len(argv) == 1 and Path(argv[0]).is_relative_to(sweep / ".submitit")
    delayed = [
        submitit.helpers.DelayedSubmission.load(p)
        for p in sorted(sweep.glob(".submitit/1234_*/*_submitted.pkl"))
    ]
    combos = {tuple(d.args[0]) for d in delayed}
    assert combos == {
        (f"reward.max_latency_frac={f}", f"seed={s}", "logger=none")
        for f in (0.2, 0.3, 0.5)
        for s in (0, 1)
    }
    assert sorted(d.args[2] for d in delayed) == list(range(6))  # hydra.job.num of each


@pytest.mark.slow
def test_submitted_array_task_runs_as_slurm_would(at_root, tmp_path, cache_dir):
    """Task 1 of a submitted array, run here with the variables Slurm and srun would set."""
    tiny = [*TINY, f"base.cache_dir={cache_dir}"]
    sweep = _submit_from_cli(tmp_path, ["seed=0,1", *tiny], jobs=2)
    slurm = {
        "SLURM_JOB_ID": "1236",  # an array task has its own id
        "SLURM_ARRAY_JOB_ID": "1234",
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_STEP_NODELIST": "localhost",
        # a real jax.distributed runtime of one process (coordinator on localhost): the path a
        # multi-task job takes, through autocomp.train's call of autocomp.cluster.initialize
        "AUTOCOMP_DISTRIBUTED": "1",
        "SUBMITIT_EXECUTOR": "slurm",
    }
    command = (tmp_path / "capture" / "sbatch.sh").read_text().splitlines()[-1].split()
    python_onwards = command[command.index("-u") - 1 :]  # the srun-launched command, without srun
    proc = subprocess.run(
        python_onwards,
        cwd=ROOT,
        env={**os.environ, **slurm},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (sweep / "1" / "metrics.json").is_file() and not (sweep / "0").exists()
    assert "jax.distributed: process 0 of 1" in (sweep / "1" / "train.log").read_text()
    outcome, _ = submitit.core.utils.pickle_load(sweep / ".submitit/1234_1/1234_1_0_result.pkl")
    assert outcome == "success"


@pytest.fixture
def fake_distributed(monkeypatch):
    """``jax.distributed.initialize`` recorded, never run; the environment cleared of Slurm."""
    for name in [n for n in os.environ if n.startswith("SLURM_") or n == "AUTOCOMP_DISTRIBUTED"]:
        monkeypatch.delenv(name)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(calls))
    return calls


def test_single_machine_does_not_initialize(fake_distributed, monkeypatch):
    cluster.initialize()
    for name, value in {**SLURM_STEP, "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(name, value)  # a one-task Slurm job is a single machine too
    cluster.initialize()
    assert fake_distributed == []


@pytest.mark.parametrize("multi", [{"SLURM_NTASKS": "2"}, {"SLURM_JOB_NUM_NODES": "2"}])
def test_multi_task_slurm_job_initializes_once(fake_distributed, monkeypatch, caplog, multi):
    for name, value in {**SLURM_STEP, "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(name, value)
    for name, value in multi.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.INFO, logger="autocomp.cluster"):
        cluster.initialize()
        cluster.initialize()  # already initialized: not again
    assert fake_distributed == [((), {})]  # no arguments: JAX reads Slurm's variables itself
    assert "process 0 of 1" in caplog.text and "devices" in caplog.text


def test_allocation_without_srun_runs_alone(fake_distributed, monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")  # salloc -N 2, then python without srun
    with caplog.at_level(logging.WARNING, logger="autocomp.cluster"):
        cluster.initialize()
    assert fake_distributed == [] and "SLURM_STEP_NODELIST" in caplog.text


def test_autocomp_distributed_forces_it_on_and_off(fake_distributed, monkeypatch):
    for name, value in SLURM_STEP.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTOCOMP_DISTRIBUTED", "0")
    cluster.initialize()
    assert fake_distributed == []
    for name in SLURM_STEP:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AUTOCOMP_DISTRIBUTED", "1")  # e.g. JAX_COORDINATOR_ADDRESS is set
    cluster.initialize()
    assert fake_distributed == [((), {})]


def test_jax_reads_the_slurm_variables_the_docs_name(monkeypatch):
    from jax._src.clusters.slurm_cluster import SlurmCluster

    for name, value in SLURM_STEP.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JAX_COORDINATOR_PORT", raising=False)
    assert SlurmCluster.is_env_present()
    assert SlurmCluster.get_coordinator_address(None, None) == f"node001:{61440 + 1234 % 4096}"
    assert (SlurmCluster.get_process_count(), SlurmCluster.get_process_id()) == (2, 1)
    assert SlurmCluster.get_local_process_id() == 0
    for name in cluster.JAX_SLURM_VARIABLES:
        monkeypatch.delenv(name)
        assert not SlurmCluster.is_env_present(), name
        monkeypatch.setenv(name, SLURM_STEP[name])
