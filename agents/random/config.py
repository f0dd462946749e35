"""Config of the random-search agent."""

from __future__ import annotations

from dataclasses import dataclass


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
        if self.batch_episodes < 1 or self.episodes < self.batch_episodes:
            raise ValueError(
                f"agent.episodes={self.episodes} must be >= agent.batch_episodes="
                f"{self.batch_episodes} >= 1"
            )
        if self.steps_per_chunk < 1:
            raise ValueError(f"agent.steps_per_chunk={self.steps_per_chunk} must be >= 1")
