"""Config of the regularized-evolution agent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvolutionConfig:
    """Regularized (aging) evolution (Real, Aggarwal, Huang and Le, "Regularized Evolution for
    Image Classifier Architecture Search", AAAI 2019): tournament selection, one-layer
    mutation, and the oldest member dies.

    Attributes:
        name: agent name (selects the agent in ``autocomp.train``).
        episodes: plans evaluated in a search, the ``population`` random ones first (rounded
            up to whole chunks of ``steps_per_chunk * batch_episodes``).
        batch_episodes: children bred and evaluated per step (they replace the
            ``batch_episodes`` oldest members); must divide ``population``.
        population: members alive at once (P in the paper).
        tournament: members drawn (uniformly, with replacement) per parent selection (S).
        steps_per_chunk: steps run in one jitted ``lax.scan`` between host-side logging.
    """

    name: str = "evolution"
    episodes: int = 2048
    batch_episodes: int = 32
    population: int = 64
    tournament: int = 16
    steps_per_chunk: int = 4

    def __post_init__(self) -> None:
        if self.batch_episodes < 1 or self.population % self.batch_episodes:
            raise ValueError(
                f"agent.population={self.population} must be a multiple of "
                f"agent.batch_episodes={self.batch_episodes} >= 1"
            )
        if self.episodes < self.population:
            raise ValueError(
                f"agent.episodes={self.episodes} must be >= agent.population={self.population}"
            )
        if not 1 <= self.tournament <= self.population:
            raise ValueError(
                f"agent.tournament={self.tournament} must be in [1, agent.population="
                f"{self.population}]"
            )
        if self.steps_per_chunk < 1:
            raise ValueError(f"agent.steps_per_chunk={self.steps_per_chunk} must be >= 1")
