"""Random search: uniformly random allowed actions at every step (a baseline)."""

from agents.random.config import RandomConfig
from agents.random.train import RandomState, make_trainer
from autocomp.search.agent import Agent

AGENT = Agent(RandomConfig, make_trainer)

__all__ = ["AGENT", "RandomConfig", "RandomState", "make_trainer"]
