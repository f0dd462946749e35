"""DDPG agent: AMC's search agent (He et al., ECCV 2018; ``mit-han-lab/amc``), extended to
choose the technique as a parameterized action (P-DQN, Xiong et al. 2018, arXiv 1810.06394).

Design: one actor outputs a continuous ratio per technique (sigmoid, [T]); one critic scores
``Q(s, t, ratio_t)`` from the state, the technique's one-hot and the ratio; the technique is the
argmax of Q over the allowed techniques at their walled ratios (epsilon-greedy), and the actor
ascends ``sum_t Q(s, t, actor(s)_t)`` over the allowed techniques. We took this over one AMC
DDPG per technique because T separate agents would share no experience (each sees only the
episodes of its own technique) and could not mix techniques across layers within one plan;
here every transition trains one critic on every technique's data and the choice between
techniques is made per layer, by the same Q.

What is AMC's, what is ours:

- AMC's: actor FC-300-300 with sigmoid output; critic ``relu(fc_s(s) + fc_a(a))``, FC-300,
  FC-1; Adam 1e-4 (actor) / 1e-3 (critic); soft targets, tau 0.01; batch 64; replay ring of
  ``100 * n_layers`` transitions; warm-up of uniform random ratios (AMC: 100 of 800 episodes;
  here ``warmup=256`` of 2048, the same share); truncated-normal ratio noise on [0, 1] with
  ``sigma = 0.5 * 0.95 ** (episode - warmup)``; every transition of an episode stored with the
  episode's final reward; at each update the moving average ``b <- b + 0.5 (mean(r_batch) - b)``
  of the sampled batch's rewards (the first update takes the batch mean) is subtracted from
  that batch's rewards (AMC subtracts at update time, not when storing); the critic's target
  ``y = (r - b) + gamma (1 - done) Q'(s', mu'(s'))`` with gamma 1 (AMC's ``terminal_batch`` is
  ``1 - done``); critic step first, then the actor on the updated critic, then both targets.
- Ours: the technique choice above (``Q'(s', mu'(s'))`` becomes the max over the next state's
  allowed techniques of ``Q'`` at the target actor's walled ratios); the action wall is the
  env's mask (the ratio is clipped to the range the chosen technique's mask allows, then
  rounded to the nearest allowed bin of ``env.spec.ratios``) instead of AMC's FLOPs formula;
  the critic learns from the APPLIED action (``info.applied_action``, its ratio bin's value),
  whereas AMC stores the actor's unwalled action; the next observation is stored with each
  transition (AMC's memory reads it from the next slot and never samples the first step of an
  episode, a keras-rl quirk we do not copy); lockstep batches of episodes with
  ``num_layers * batch_episodes`` updates per step (AMC's one update per stored transition).
- The policy is the best in-budget plan seen in the search (AMC's ``env.best_strategy``);
  :func:`make_greedy_policy` gives the trained actor's noise-free plan.
"""

from agents.ddpg.config import DDPGConfig
from agents.ddpg.train import DDPGState, make_greedy_policy, make_trainer
from autocomp.search.agent import Agent

AGENT = Agent(DDPGConfig, make_trainer)

__all__ = ["AGENT", "DDPGConfig", "DDPGState", "make_greedy_policy", "make_trainer"]
