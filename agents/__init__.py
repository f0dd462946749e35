"""RL agents. Each is one folder exporting ``AGENT`` (an :class:`autocomp.search.agent.Agent`);
this registry is the only other place that names it (``agent=<name>`` in config)."""

from agents.compressor_critic import AGENT as _compressor_critic

AGENTS = {"compressor_critic": _compressor_critic}
