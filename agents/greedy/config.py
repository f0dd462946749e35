"""Config of the greedy (equal-slope) agent."""

from __future__ import annotations

from dataclasses import dataclass

from autocomp.search.agent import check_batches


@dataclass
class GreedyConfig:
    """Greedy per-layer selection swept over a Lagrange multiplier (AIMET / NetAdapt style).

    Attributes:
        name: agent name (selects the agent in ``autocomp.train``).
        episodes: plans evaluated, one per multiplier lambda of the sweep (rounded up to whole
            chunks of ``steps_per_chunk * batch_episodes``; the grid has that many points).
        batch_episodes: multipliers (plans) evaluated per step.
        steps_per_chunk: steps run in one jitted ``lax.scan`` between host-side logging.
        lambda_min: smallest non-zero multiplier of the log grid (lambda = 0 is always in it).
        lambda_max: largest multiplier of the log grid.
    """

    name: str = "greedy"
    episodes: int = 2048
    batch_episodes: int = 32
    steps_per_chunk: int = 4
    lambda_min: float = 1e-3
    lambda_max: float = 1e3

    def __post_init__(self) -> None:
        check_batches(self)
        if not 0 < self.lambda_min < self.lambda_max:
            raise ValueError(
                f"agent.lambda_min={self.lambda_min} and agent.lambda_max={self.lambda_max} "
                "must satisfy 0 < lambda_min < lambda_max"
            )
