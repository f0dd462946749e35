"""What an agent sees of an environment: specs, observations and the functional env protocol.

Agents import this module, never ``envs``: any environment with this shape can be searched.
"""

from typing import Any, NamedTuple, Protocol, runtime_checkable

from jaxtyping import Array, Bool, Float, Int


class EnvSpec(NamedTuple):
    """Static facts about an environment.

    Attributes:
        num_steps: steps per episode (one per compressible layer).
        num_techniques: size of the technique choice.
        num_ratios: size of the ratio choice.
        obs_dim: length of ``Observation.features``.
        technique_names: names, in action-index order.
        ratios: the ratio bins, in action-index order.
    """

    num_steps: int
    num_techniques: int
    num_ratios: int
    obs_dim: int
    technique_names: tuple[str, ...]
    ratios: tuple[float, ...]


class Observation(NamedTuple):
    """``features``: float32[obs_dim]; ``action_mask``: bool[T, R], True where (t, r) is allowed."""

    features: Float[Array, " obs_dim"]
    action_mask: Bool[Array, "techniques ratios"]


EPISODE_KEYS = ("plan", "reward", "accuracy", "latency_ms", "energy_mj", "bytes", "violation")


class StepInfo(NamedTuple):
    """Per-step diagnostics. ``applied_action`` is what the env really did (learn from it)."""

    applied_action: Int[Array, "2"]
    accuracy: Float[Array, ""]
    latency_ms: Float[Array, ""]
    energy_mj: Float[Array, ""]
    bytes: Float[Array, ""]
    violation: Bool[Array, ""]


def episode_record(plan: Array, reward: Array, info: StepInfo) -> dict[str, Array]:
    """An episode's metrics (:data:`EPISODE_KEYS`) from its applied plan, its reward and the
    last step's info (any leading batch dims)."""
    return {
        "plan": plan,
        "reward": reward,
        "accuracy": info.accuracy,
        "latency_ms": info.latency_ms,
        "energy_mj": info.energy_mj,
        "bytes": info.bytes,
        "violation": info.violation,
    }


@runtime_checkable
class Environment(Protocol):
    """gymnax/jumanji-style functional environment; ``batch_*`` run a lockstep batch of episodes
    (all starting together) and must equal ``jax.vmap`` of the unbatched functions."""

    spec: EnvSpec

    def reset(self, key: Array, params: Any) -> tuple[Observation, Any]: ...

    def step(
        self, key: Array, state: Any, action: Array, params: Any
    ) -> tuple[Observation, Any, Array, Array, StepInfo]: ...

    def batch_reset(self, keys: Array, params: Any) -> tuple[Observation, Any]: ...

    def batch_step(
        self, keys: Array, state: Any, action: Array, params: Any
    ) -> tuple[Observation, Any, Array, Array, StepInfo]: ...

    def evaluate_plans(self, plans: Array, params: Any) -> dict[str, Array]:
        """Score fixed plans int[B, L, 2] as a search would (budget projections applied):
        the episode metrics of :data:`autocomp.search.agent.EPISODE_KEYS`, leading dim [B]."""
        ...

    def greedy_tables(self, params: Any) -> tuple[Array, Array]:
        """Per-layer sensitivity and cost share, float[L, T, R] each (the ``greedy`` agent)."""
        ...

    def greedy_fits(self, params: Any, plans: Array) -> Array:
        """bool[B]: plans int[B, L, 2] that meet every budget by an upper-bound estimate of
        their costs (the compressor-critic's greedy start aims at the line it draws)."""
        ...
