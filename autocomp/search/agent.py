"""What an agent gives the search: its config schema and two factories. Each agent lives in its
own folder of ``agents/`` and is named once, in the registry of ``agents/__init__.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Agent(NamedTuple):
    """An agent as the run sees it.

    Attributes:
        config: its config dataclass (Hydra group ``agent/<name>``; ``name`` names the agent).
        make_train: ``(config, env, env_params) -> train`` with ``train.init(key)``,
            ``train.run_chunk(state) -> (state, metrics)`` and ``train.num_chunks(episodes)``.
        make_policy: ``(config, env, env_params) -> policy`` with ``policy(params)`` the plan it
            would choose (action indices per layer).
    """

    config: type
    make_train: Callable[..., Any]
    make_policy: Callable[..., Any]
