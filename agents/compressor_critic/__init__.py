"""Compressor-critic agent (DeepIoT-style actor-critic over the layer sequence)."""

from agents.compressor_critic.config import CompressorCriticConfig
from agents.compressor_critic.train import TrainState, make_trainer
from autocomp.search.agent import Agent

AGENT = Agent(CompressorCriticConfig, make_trainer)

__all__ = ["AGENT", "CompressorCriticConfig", "TrainState", "make_trainer"]
