"""Multi-host JAX: join one ``jax.distributed`` runtime when a run is one task of several.

A Slurm job of several tasks (``hydra/launcher=slurm_multinode``, or ``srun -n 2 python -m
autocomp.train``) runs the same command in every task. :func:`initialize` connects them; it
costs nothing (no JAX backend, no network) on a single machine. ``jax.distributed.initialize()``
reads the rest from Slurm itself (``jax/_src/clusters/slurm_cluster.py``): the coordinator is
the first host of ``SLURM_STEP_NODELIST`` on port ``61440 + SLURM_JOB_ID % 4096`` (or
``JAX_COORDINATOR_PORT``), the process count ``SLURM_NTASKS``, the process index
``SLURM_PROCID`` and the local GPU ``SLURM_LOCALID`` (one GPU per process unless
``JAX_LOCAL_DEVICE_IDS`` says otherwise).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import jax
import numpy as np

from autocomp.io import written_elsewhere

log = logging.getLogger(__name__)

# What jax's Slurm detection needs; `srun` sets the step ones, an `sbatch` script alone does not.
JAX_SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)


def _count(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env.get(name, "1"))
    except ValueError:
        return 1


def wants_distributed(env: Mapping[str, str]) -> bool:
    """Whether a process with this environment is one task of several.

    ``AUTOCOMP_DISTRIBUTED=1`` forces it (any cluster ``jax.distributed`` detects, or
    ``JAX_COORDINATOR_ADDRESS`` and friends), ``0`` turns it off; otherwise a Slurm job of more
    than one task or node is.
    """
    flag = env.get("AUTOCOMP_DISTRIBUTED", "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    return _count(env, "SLURM_NTASKS") > 1 or _count(env, "SLURM_JOB_NUM_NODES") > 1


def initialize() -> None:
    """Call ``jax.distributed.initialize()`` once if this process is one task of several.

    Must run before anything touches a JAX device (JAX refuses afterwards). A Slurm allocation
    of several nodes entered without ``srun`` (no ``SLURM_STEP_NODELIST``) is one process: it
    runs alone, with a warning, where JAX would fail to find its coordinator.
    """
    env = os.environ
    if not wants_distributed(env) or jax.distributed.is_initialized():
        return
    forced = env.get("AUTOCOMP_DISTRIBUTED", "").strip() == "1"
    missing = [name for name in JAX_SLURM_VARIABLES if name not in env]
    if missing and not forced:
        log.warning(
            "Slurm job of several tasks or nodes but %s unset (not started by srun?): running "
            "as one process; AUTOCOMP_DISTRIBUTED=1 forces jax.distributed, 0 silences this",
            ", ".join(missing),
        )
        return
    jax.distributed.initialize()
    log.info(
        "jax.distributed: process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def is_writer() -> bool:
    """Whether this process writes the run's outputs: process 0 of a multi-process run (every
    process computes the same search; its work is split over all of their devices)."""
    return jax.process_index() == 0


@contextmanager
def one_writer(run_dir: Path) -> Iterator[bool]:
    """The scope of one run in ``run_dir``; yields :func:`is_writer`. In the other processes of a
    multi-process run the run directory's files are left to process 0 (they read them, e.g. a
    checkpoint to resume from, but do not write them)."""
    if jax.process_count() > 1:
        _check_same_run_dir(run_dir)
    if is_writer():
        yield True
        return
    with written_elsewhere(run_dir):
        yield False


def _check_same_run_dir(run_dir: Path) -> None:
    """Every process must name the same run directory (Hydra's default one has a timestamp)."""
    from jax.experimental import multihost_utils

    from autocomp.config import ConfigError

    digest = hashlib.sha256(str(Path(run_dir).resolve()).encode()).digest()[:8]
    every = np.asarray(multihost_utils.process_allgather(np.frombuffer(digest, dtype=np.int32)))
    if not (every == every[0]).all():  # every process sees it, so every process stops
        others = [i for i, row in enumerate(every) if not np.array_equal(row, every[0])]
        raise ConfigError(
            f"the processes of this run have different run directories (this one, process "
            f"{jax.process_index()}: {str(run_dir)!r}; processes {others} differ from process "
            "0): the default one has the start time in it; give every process the same one with "
            "hydra.run.dir=..."
        )


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
