"""Compressor-critic agent: ``make_train(config, env, env_params) -> train(key)``."""

from agents.compressor_critic.config import CompressorCriticConfig
from agents.compressor_critic.train import TrainState, make_policy, make_train
from autocomp.search.agent import Agent

AGENT = Agent(CompressorCriticConfig, make_train, make_policy)

__all__ = ["AGENT", "CompressorCriticConfig", "TrainState", "make_policy", "make_train"]
