"""Config of the compressor-critic agent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CompressorCriticConfig:
    """Compressor-critic (DeepIoT-style actor-critic over the layer sequence).

    Attributes:
        name: agent name (selects the agent in ``autocomp.train``).
        episodes: total episodes, i.e. plans evaluated (rounded up to whole chunks of
            ``updates_per_chunk * batch_episodes``, since a chunk is one compiled program).
        batch_episodes: episodes rolled out (in lockstep) per policy-gradient update.
        updates_per_chunk: updates run in one jitted ``lax.scan`` between host-side logging.
        hidden: width of the LSTM compressor (DeepIoT uses 64).
        learning_rate: Adam step size.
        entropy_coef: weight of the entropy bonus (exploration).
        entropy_final_frac: entropy weight at the end as a share of the start (linear decay).
        value_coef: weight of the critic's squared error.
        max_grad_norm: global gradient-norm clip.
        top_share: the share of each batch's plans the policy gradient learns from (1: all,
            with the critic's baseline; below 1: risk-seeking policy gradient, Petersen et al.,
            ICLR 2021, the batch's best plans pushed up relative to the batch's quantile).
        elite: size of the queue of the best distinct in-budget plans seen so far, the
            parents of the one-layer variants (0: no queue, no variants, and the delivered
            plan is the greedy rollout of the policy).
        local_share: the share of each batch that are one-layer variants of queued plans: a
            plan drawn from the queue, one layer drawn uniformly, a new action for it sampled
            from the policy (its other layers keep the plan's actions where the budget still
            allows them). They feed the queue, not the policy gradient (they are not the
            policy's own samples). 0: every plan is the policy's own.
        parent_decay: how strongly the variants' parents favour the queue's best plans: a
            queued plan of rank r (0: the best) is drawn with weight exp(-parent_decay * r)
            (0: uniformly, the 16 best alike; larger: closer to evolution's tournaments).
        greedy_start: for this many first updates the variant rows are the greedy agent's
            equal-slope plans (:func:`agents.greedy.selection.select`) instead of variants:
            half of them the distinct plans nearest the budget line (by the environment's
            ``greedy_fits`` on a grid of 1,024 multipliers), the rest a log grid of multipliers
            from 1e-3 to 1e3, coarse to fine; so the queue starts from plans the per-layer
            sensitivity recommends and the local search refines them (needs an environment
            with ``greedy_tables`` and ``greedy_fits``; others start without them). They are
            evaluated and counted like every other plan. 0: off.
        front: size of an archive of the accuracy-latency front of the in-budget plans seen
            (non-dominated plans, spread evenly along the front when there are more), a second
            source of the variants' parents (0: none). It widens the front the search
            explores (hypervolume) at some cost to refining the best plan (docs/agents.md).
        front_share: the share of the variant rows whose parents are drawn uniformly from the
            front archive instead of the queue (with ``front`` > 0).
        uniform_share: the share of the variant rows whose new action is drawn uniformly over
            the allowed ones, as evolution mutates, instead of from the policy.
        pair_share: the probability that a variant changes a second layer (drawn uniformly,
            possibly the same one) as well.
        joint_finetune: DeepIoT's joint fine-tuning: after each chunk, the network's weights
            take ``joint_steps`` Adam steps under the chunk's in-budget plans
            (:mod:`autocomp.search.joint`); the chosen plan is materialized from the tuned
            weights. Off: the search scores plans on the frozen base model.
        joint_steps: Adam steps of the network per chunk (a chunk is ``updates_per_chunk``
            policy updates).
        joint_learning_rate: their step size.
        joint_batch_size: training examples per step.
    """

    name: str = "compressor_critic"
    episodes: int = 2048
    batch_episodes: int = 32
    updates_per_chunk: int = 4
    hidden: int = 64
    learning_rate: float = 3e-3
    entropy_coef: float = 0.02
    entropy_final_frac: float = 0.1
    value_coef: float = 0.5
    max_grad_norm: float = 1.0
    top_share: float = 0.1
    elite: int = 16
    local_share: float = 0.5
    parent_decay: float = 0.0
    greedy_start: int = 4
    front: int = 0
    front_share: float = 0.0
    uniform_share: float = 0.0
    pair_share: float = 0.0
    joint_finetune: bool = False
    joint_steps: int = 16
    joint_learning_rate: float = 1e-4
    joint_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.episodes < self.batch_episodes or self.batch_episodes < 2:
            raise ValueError(
                f"agent.episodes={self.episodes} must be >= agent.batch_episodes="
                f"{self.batch_episodes} >= 2"
            )
        if not 0.0 < self.top_share <= 1.0:
            raise ValueError(f"agent.top_share={self.top_share} must be in (0, 1]")
        if self.elite < 0 or self.parent_decay < 0 or self.greedy_start < 0:
            raise ValueError(
                f"agent.elite={self.elite}, agent.parent_decay={self.parent_decay} and "
                f"agent.greedy_start={self.greedy_start} must be >= 0"
            )
        shares = {"front_share": self.front_share, "uniform_share": self.uniform_share,
                  "pair_share": self.pair_share}  # fmt: skip
        if self.front < 0 or any(not 0.0 <= v <= 1.0 for v in shares.values()):
            raise ValueError(
                f"agent.front={self.front} must be >= 0 and "
                + ", ".join(f"agent.{k}={v}" for k, v in shares.items())
                + " in [0, 1]"
            )
        if not 0.0 <= self.local_share < 1.0 or self.batch_episodes - self.variants_per_batch < 2:
            raise ValueError(
                f"agent.local_share={self.local_share} must be in [0, 1) and leave at least 2 of "
                f"agent.batch_episodes={self.batch_episodes} to the policy's own samples"
            )
        if self.updates_per_chunk < 1 or self.hidden < 1 or self.learning_rate <= 0:
            raise ValueError("agent.updates_per_chunk, hidden and learning_rate must be > 0")

    @property
    def variants_per_batch(self) -> int:
        """How many of each batch's plans ``local_share`` makes one-layer variants (the agent
        runs them only with a queue, ``elite`` > 0)."""
        return round(self.local_share * self.batch_episodes)
