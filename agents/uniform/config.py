"""Config of the uniform-compression agent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class UniformConfig:
    """Uniform compression, the setting of the survey of Nan, Liu, Du and Liu (Tsinghua Science
    and Technology 24(6), 2019, doi:10.26599/TST.2018.9010103), which measures each technique
    applied alike to a whole model, and AMC's "uniform" baseline (He et al., ECCV 2018): one
    (technique, ratio bin) for every layer that technique fits, the identity elsewhere.

    Attributes:
        name: agent name (selects the agent in ``autocomp.train``).
        episodes: the most plans evaluated; the search covers the grid of the ``T * R``
            (technique, ratio bin) pairs once, so it evaluates ``min(episodes, T * R)`` plans
            rounded up to whole batches (the last batch padded by repeating grid plans).
        batch_episodes: plans evaluated per chunk (one chunk is one batch).
    """

    name: str = "uniform"
    episodes: int = 2048
    batch_episodes: int = 32

    def __post_init__(self) -> None:
        if self.batch_episodes < 1 or self.episodes < 1:
            raise ValueError(
                f"agent.episodes={self.episodes} and agent.batch_episodes="
                f"{self.batch_episodes} must be >= 1"
            )
