"""Regularized (aging) evolution over plans (Real et al., AAAI 2019), a baseline."""

from agents.evolution.config import EvolutionConfig
from agents.evolution.train import EvolutionState, make_trainer
from autocomp.search.agent import Agent

AGENT = Agent(EvolutionConfig, make_trainer)

__all__ = ["AGENT", "EvolutionConfig", "EvolutionState", "make_trainer"]
