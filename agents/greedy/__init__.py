"""Greedy agent (AIMET / NetAdapt-style per-layer selection swept over a Lagrange multiplier)."""

from agents.greedy.config import GreedyConfig
from agents.greedy.train import GreedyState, make_trainer
from autocomp.search.agent import Agent

AGENT = Agent(GreedyConfig, make_trainer)

__all__ = ["AGENT", "GreedyConfig", "GreedyState", "make_trainer"]
