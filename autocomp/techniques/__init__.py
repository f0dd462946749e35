"""Compression techniques. Each is one module returning a :class:`Technique`; the registry maps
config names to factories, and :func:`make_techniques` builds the tuple the environment indexes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autocomp.techniques.base import (
    Materialized,
    Technique,
    TechniqueError,
    check_ratio,
    kept,
    removed,
)
from autocomp.techniques.filter_prune import make_filter
from autocomp.techniques.keep import make_keep
from autocomp.techniques.magnitude import make_magnitude
from autocomp.techniques.svd import make_svd

REGISTRY: dict[str, Callable[[], Technique]] = {
    "keep": make_keep,
    "magnitude": make_magnitude,
    "filter": make_filter,
    "svd": make_svd,
}


def make_techniques(names: Sequence[str]) -> tuple[Technique, ...]:
    """The techniques named in config, in action-index order."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise TechniqueError(
            f"unknown technique(s) {unknown} in env.techniques; available: {sorted(REGISTRY)}"
        )
    if len(set(names)) != len(names):
        raise TechniqueError(f"env.techniques lists a technique twice: {list(names)}")
    return tuple(REGISTRY[n]() for n in names)


__all__ = [
    "REGISTRY",
    "Materialized",
    "Technique",
    "TechniqueError",
    "check_ratio",
    "kept",
    "make_techniques",
    "removed",
]
