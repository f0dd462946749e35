"""Config of the DDPG agent (AMC's search agent, extended to choose the technique)."""

from __future__ import annotations

from dataclasses import dataclass

from autocomp.search.agent import check_batches


@dataclass
class DDPGConfig:
    """AMC's DDPG (He et al., ECCV 2018; ``mit-han-lab/amc`` ``lib/agent.py``, ``amc_search.py``)
    with a parameterized-action technique choice (P-DQN, Xiong et al. 2018).

    The defaults are AMC's released search settings where AMC has one (hidden 300/300, learning
    rates, tau, batch, replay size per layer, noise schedule, baseline alpha, discount 1); the
    others are ours and say so.

    Attributes:
        name: agent name (selects the agent in ``autocomp.train``).
        episodes: total episodes, i.e. plans evaluated (rounded up to whole chunks of
            ``steps_per_chunk * batch_episodes``, since a chunk is one compiled program).
        batch_episodes: episodes rolled out in lockstep per step (one policy for all of them);
            at most ``replay_per_layer`` so a step's transitions fit the replay ring.
        steps_per_chunk: steps run in one jitted ``lax.scan`` between host-side logging.
        warmup: episodes played with uniformly random actions before any update (rounded up
            to whole steps of ``batch_episodes``). AMC: 100 of its 800 episodes; the default 256
            keeps that share (12.5 %) of the default 2048 episodes (scale it with ``episodes``); a
            warm-up as long as the search makes it a random search, with no update.
        hidden: width of both hidden layers of actor and critic (AMC: 300).
        actor_lr: Adam step size of the actor (AMC: 1e-4).
        critic_lr: Adam step size of the critic (AMC: 1e-3).
        tau: soft target-update rate, ``target <- (1 - tau) target + tau online`` (AMC: 0.01).
        batch_size: transitions per gradient update (AMC: 64).
        replay_per_layer: replay ring capacity per layer, i.e. in episodes (AMC: 100).
        discount: gamma of the critic's target (AMC: 1).
        noise_init: sigma of the truncated-normal ratio noise at the first episode after
            warm-up (AMC ``init_delta``: 0.5).
        noise_decay: sigma's factor per episode after warm-up (AMC ``delta_decay``: 0.95).
        epsilon: probability of a uniformly random allowed technique at the first episode after
            warm-up (ours: AMC has one continuous action and no technique choice).
        epsilon_decay: epsilon's factor per episode after warm-up (ours).
        baseline_alpha: step of the moving-average reward baseline,
            ``b <- b + alpha (mean(batch rewards) - b)`` (AMC ``moving_alpha``: 0.5).
        updates_per_step: gradient updates after each step; 0 means one per transition the step
            stored (``num_layers * batch_episodes``), AMC's ratio (it updates once per stored
            transition after warm-up).
    """

    name: str = "ddpg"
    episodes: int = 2048
    batch_episodes: int = 32
    steps_per_chunk: int = 4
    warmup: int = 256
    hidden: int = 300
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    replay_per_layer: int = 100
    discount: float = 1.0
    noise_init: float = 0.5
    noise_decay: float = 0.95
    epsilon: float = 0.1
    epsilon_decay: float = 0.99
    baseline_alpha: float = 0.5
    updates_per_step: int = 0

    def __post_init__(self) -> None:
        check_batches(self)
        if self.batch_episodes > self.replay_per_layer:
            raise ValueError(
                f"agent.replay_per_layer={self.replay_per_layer} must be >= "
                f"agent.batch_episodes={self.batch_episodes} (a step's transitions must fit)"
            )
        if self.warmup < 0:
            raise ValueError(f"agent.warmup={self.warmup} must be >= 0")
        for field in ("hidden", "batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"agent.{field}={getattr(self, field)} must be >= 1")
        for field in ("actor_lr", "critic_lr"):
            if getattr(self, field) <= 0:
                raise ValueError(f"agent.{field}={getattr(self, field)} must be > 0")
        for field in ("tau", "discount", "epsilon", "baseline_alpha"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"agent.{field}={getattr(self, field)} must be in [0, 1]")
        for field in ("noise_decay", "epsilon_decay"):
            if not 0.0 < getattr(self, field) <= 1.0:
                raise ValueError(f"agent.{field}={getattr(self, field)} must be in (0, 1]")
        if self.noise_init < 0:
            raise ValueError(f"agent.noise_init={self.noise_init} must be >= 0")
        if self.updates_per_step < 0:
            raise ValueError(
                f"agent.updates_per_step={self.updates_per_step} must be >= 0 (0: one per "
                "stored transition)"
            )
