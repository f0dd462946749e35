"""Compression techniques. Each is one module returning a :class:`Technique`; the registry maps
config names to factories, and :func:`make_techniques` builds the tuple the environment indexes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autocomp.techniques.base import (
    Materialized,
    PrepareContext,
    Technique,
    TechniqueError,
    check_ratio,
    kept,
    layer_forward,
    layer_out_mask,
    removed,
    slice_outputs,
    technique_fits,
)
from autocomp.techniques.dwsep import make_dwsep
from autocomp.techniques.filter_prune import make_filter
from autocomp.techniques.fire import make_fire
from autocomp.techniques.gap import make_gap
from autocomp.techniques.group import make_group
from autocomp.techniques.keep import make_keep
from autocomp.techniques.magnitude import make_magnitude
from autocomp.techniques.mlpconv import make_mlpconv
from autocomp.techniques.quantize import QUANTIZABLE, make_quantized, parse_name
from autocomp.techniques.sparse_code import make_sparse_code
from autocomp.techniques.sparse_conv import make_sparse_conv
from autocomp.techniques.spatial import make_spatial
from autocomp.techniques.svd import make_svd

# The survey's families: weight factorization and pruning (svd = W1 and C1's channel form,
# sparse_code = W2, magnitude = W3, filter = DeepIoT's structured pruning), convolution
# decomposition (spatial = C1's spatial form, sparse_conv = C2, dwsep = C3, group = C4) and
# special layer designs (fire = L1, gap = L2, mlpconv = L3).
REGISTRY: dict[str, Callable[[], Technique]] = {
    "keep": make_keep,
    "magnitude": make_magnitude,
    "filter": make_filter,
    "svd": make_svd,
    "sparse_code": make_sparse_code,
    "spatial": make_spatial,
    "sparse_conv": make_sparse_conv,
    "dwsep": make_dwsep,
    "group": make_group,
    "fire": make_fire,
    "gap": make_gap,
    "mlpconv": make_mlpconv,
}
# k-bit weight quantization composes with the single-op techniques as ``<technique>+q<bits>``
# (any width from 2 to 16, see ``techniques/quantize.py``); the 8-bit ones are registered.
for _base in QUANTIZABLE:
    REGISTRY[f"{_base}+q8"] = lambda _base=_base: make_quantized(REGISTRY[_base](), 8)

# The survey's code of each technique (DeepIoT's pruning and the channel form of C1 aside).
FAMILIES = {
    "magnitude": "W3",
    "filter": "DeepIoT",
    "svd": "W1/C1",
    "sparse_code": "W2",
    "spatial": "C1",
    "sparse_conv": "C2",
    "dwsep": "C3",
    "group": "C4",
    "fire": "L1",
    "gap": "L2",
    "mlpconv": "L3",
}


def family(name: str) -> str:
    """The survey's code of a technique (``+Q`` for a quantized one), or ``""``."""
    parsed = parse_name(name)
    if parsed is None:
        return FAMILIES.get(name, "")
    return "+".join(f for f in (FAMILIES.get(parsed[0], ""), "Q") if f)


def make_technique(name: str) -> Technique:
    """A technique by config name: a registered one or ``<technique>+q<bits>``."""
    if name in REGISTRY:
        return REGISTRY[name]()
    parsed = parse_name(name)
    if parsed is None:
        raise TechniqueError(
            f"unknown technique {name!r}; available: {sorted(REGISTRY)}, "
            f"and quantized ones <technique>+q<bits> with technique in {list(QUANTIZABLE)}"
        )
    return make_quantized(REGISTRY[parsed[0]](), parsed[1])


def make_techniques(names: Sequence[str]) -> tuple[Technique, ...]:
    """The techniques named in config, in action-index order."""
    if len(set(names)) != len(names):
        raise TechniqueError(f"env.techniques lists a technique twice: {list(names)}")
    return tuple(make_technique(n) for n in names)


__all__ = [
    "FAMILIES",
    "REGISTRY",
    "Materialized",
    "PrepareContext",
    "Technique",
    "TechniqueError",
    "check_ratio",
    "family",
    "kept",
    "layer_forward",
    "layer_out_mask",
    "make_technique",
    "make_techniques",
    "removed",
    "slice_outputs",
    "technique_fits",
]
