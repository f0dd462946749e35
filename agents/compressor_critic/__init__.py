"""Compressor-critic agent: ``make_train(config, env, env_params) -> train(key)``."""

from agents.compressor_critic.config import CompressorCriticConfig
from agents.compressor_critic.train import TrainState, make_policy, make_train

__all__ = ["CompressorCriticConfig", "TrainState", "make_policy", "make_train"]
