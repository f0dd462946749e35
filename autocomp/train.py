"""``python -m autocomp.train [experiment=digits] [overrides...]``: search, compress, fine-tune.

The whole run is :func:`autocomp.run.run`; this module only reads Hydra's config and run
directory, and turns bad input into one clear line and exit status 2.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from autocomp.cluster import initialize
from autocomp.run import USER_ERRORS, register, run, to_config

log = logging.getLogger("autocomp.train")


@hydra.main(version_base="1.3", config_path="../experiments", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" chatter
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save progress lines
    initialize()  # jax.distributed in a Slurm job of several tasks; a no-op otherwise
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        overrides = list(HydraConfig.get().overrides.task)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        metrics = run(to_config(cfg), run_dir, resolved, overrides=overrides)
    except USER_ERRORS as err:  # bad input: one clear line, no traceback
        log.error("%s: %s", type(err).__name__, err)
        raise SystemExit(2) from err
    log.info("run directory: %s", run_dir)
    # the reward of the chosen plan (Hydra's sweepers optimize it); a `sweep.*` run has several
    return metrics["compressed"]["reward"] if "compressed" in metrics else None


if __name__ == "__main__":
    register()
    main()
