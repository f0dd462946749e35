"""Where the environment, the agents and the library meet. The entry points and
:func:`autocomp.compress` call these; nothing below this package imports ``envs`` or ``agents``.

- :func:`compose`: the run config of ``experiments/`` with Hydra overrides, as the CLI has it;
- :func:`run`: one whole run into a run directory (a built-in model or a user's own);
- :func:`compress`: a user's own model from Python (:class:`Result`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from autocomp.cluster import one_writer
from autocomp.config import LoggerConfig, RootConfig
from autocomp.devices.tables import CostTableError, load_profile
from autocomp.run.builtin import build_env, run_builtin
from autocomp.run.compose import USER_ERRORS, compose, register, to_config
from autocomp.run.custom import compress, compress_config, run_custom
from autocomp.run.result import Result

log = logging.getLogger("autocomp.train")


def run(
    config: RootConfig,
    run_dir: Path,
    resolved: dict,
    show_progress: bool = True,
    overrides: Sequence[str] = (),
) -> dict:
    """The whole run; returns the metrics written to ``run_dir/metrics.json``. In a run of
    several processes (``jax.distributed``) each computes it, over all of their devices, and
    process 0 alone writes the run directory, tracks it and exports it."""
    with one_writer(run_dir) as writer:
        if not writer:
            config = dataclasses.replace(config, logger=LoggerConfig(name="none"), export=False)
        return _run(config, run_dir, resolved, show_progress, overrides)


def _run(config, run_dir, resolved, show_progress, overrides) -> dict:
    # First thing a run says: which device its latency and energy numbers are for.
    try:
        log.info("target device: %s", load_profile(config.device.profile).describe())
    except CostTableError as err:
        if config.device.profile != "host":
            raise
        from autocomp.devices.profiling import profiling_estimate

        log.info("device=host has no table of this machine: timing a few configurations")
        raise CostTableError(f"{err}; {profiling_estimate(config)}") from err
    if config.model._target_:  # a user's own linen or NNX model
        return run_custom(config, run_dir, resolved, show_progress, overrides)
    return run_builtin(config, run_dir, resolved, show_progress, overrides)


__all__ = [
    "USER_ERRORS",
    "Result",
    "build_env",
    "compose",
    "compress",
    "compress_config",
    "register",
    "run",
    "run_builtin",
    "run_custom",
    "to_config",
]
