"""Uniform compression: one technique at one ratio for every layer it fits (a baseline)."""

from agents.uniform.config import UniformConfig
from agents.uniform.train import UniformState, grid_plans, identity_action, make_trainer
from autocomp.search.agent import Agent

AGENT = Agent(UniformConfig, make_trainer)

__all__ = [
    "AGENT",
    "UniformConfig",
    "UniformState",
    "grid_plans",
    "identity_action",
    "make_trainer",
]
