"""Search agents. Each is one folder exporting ``AGENT`` (an :class:`autocomp.search.agent.Agent`);
this registry is the only other place that names it (``agent=<name>`` in config)."""

from agents.compressor_critic import AGENT as _compressor_critic
from agents.ddpg import AGENT as _ddpg
from agents.evolution import AGENT as _evolution
from agents.greedy import AGENT as _greedy
from agents.random import AGENT as _random
from agents.uniform import AGENT as _uniform

AGENTS = {
    "compressor_critic": _compressor_critic,
    "random": _random,
    "uniform": _uniform,
    "greedy": _greedy,
    "evolution": _evolution,
    "ddpg": _ddpg,
}
