"""Config of the random-search agent."""

from __future__ import annotations

from dataclasses import dataclass

from autocomp.search.agent import check_batches


@dataclass
class RandomConfig:
    """Random search (Bergstra & Bengio, "Random Search for Hyper-Parameter Optimization",
    JMLR 2012): every step of every episode takes a uniformly random action among those the
    environment allows (its budget masks apply).

    Attributes:
        name: agent name (selects the agent in ``autocomp.train``).
        episodes: plans evaluated in a search (rounded up to whole chunks of
            ``steps_per_chunk * batch_episodes``, since a chunk is one compiled program).
        batch_episodes: episodes rolled out in lockstep per step.
        steps_per_chunk: steps run in one jitted ``lax.scan`` between host-side logging.
    """

    name: str = "random"
    episodes: int = 2048
    batch_episodes: int = 32
    steps_per_chunk: int = 4

    def __post_init__(self) -> None:
        check_batches(self)
