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
from autocomp.techniques.quantize import make_quantized, parse_name
from autocomp.techniques.sparse_code import make_sparse_code
from autocomp.techniques.sparse_conv import make_sparse_conv
from autocomp.techniques.spatial import make_spatial
from autocomp.techniques.svd import make_svd

# The survey's families (each technique's ``family``): weight factorization and pruning (svd =
# W1 and C1's channel form, sparse_code = W2, magnitude = W3, filter = DeepIoT's structured
# pruning), convolution decomposition (spatial = C1's spatial form, sparse_conv = C2, dwsep = C3,
# group = C4) and special layer designs (fire = L1, gap = L2, mlpconv = L3). Adding a technique is
# its module and one line here; everything else asks the Technique's fields, never its name.
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
# k-bit weight quantization composes with the ``quantizable`` techniques as
# ``<technique>+q<bits>`` (any width from 2 to 16, see ``techniques/quantize.py``); the 8-bit
# ones are registered.
for _name, _make in list(REGISTRY.items()):
    if _make().quantizable:
        REGISTRY[f"{_name}+q8"] = lambda _name=_name: make_quantized(REGISTRY[_name](), 8)


def quantizable() -> list[str]:
    """The registered techniques that compose with quantization, in registry order."""
    return [n for n, make in REGISTRY.items() if parse_name(n) is None and make().quantizable]


def family(name: str) -> str:
    """The survey's code of a technique (``+Q`` for a quantized one), or ``""``."""
    try:
        return make_technique(name).family
    except TechniqueError:
        return ""


def make_technique(name: str) -> Technique:
    """A technique by config name: a registered one or ``<technique>+q<bits>``."""
    if name in REGISTRY:
        return REGISTRY[name]()
    parsed = parse_name(name)
    if parsed is None or parsed[0] not in REGISTRY:
        raise TechniqueError(
            f"unknown technique {name!r}; available: {sorted(REGISTRY)}, "
            f"and quantized ones <technique>+q<bits> with technique in {quantizable()}"
        )
    base = REGISTRY[parsed[0]]()
    if not base.quantizable:
        raise TechniqueError(
            f"technique {name!r}: quantization composes with {quantizable()} (one layer whose "
            f"weights are the ones simulated), not with {parsed[0]!r}"
        )
    return make_quantized(base, parsed[1])


def identity_index(techniques: Sequence[Technique]) -> int:
    """The action index of the technique that leaves a layer as it is (``identity``).

    Raises:
        TechniqueError: where ``techniques`` holds none of it, or more than one.
    """
    found = [i for i, t in enumerate(techniques) if t.identity]
    names = [t.name for t in techniques]
    if len(found) > 1:
        raise TechniqueError(
            f"env.techniques={names} lists more than one technique that leaves a layer as it is "
            f"({[names[i] for i in found]}); list one of them"
        )
    if not found:
        identities = [n for n, make in REGISTRY.items() if make().identity]
        fix = ",".join([*identities[:1], *names])
        raise TechniqueError(
            f"env.techniques={names} must include the technique that leaves a layer as it is "
            f"({' or '.join(map(repr, identities)) or 'none is registered'}), so every layer has "
            f"a choice: add it, e.g. env.techniques=[{fix}], or leave env.techniques out for "
            "every registered technique"
        )
    return found[0]


def identity_technique() -> Technique:
    """The registered technique that leaves a layer as it is."""
    techniques = [make() for make in REGISTRY.values()]
    return techniques[identity_index(techniques)]


def make_techniques(names: Sequence[str] | None = None) -> tuple[Technique, ...]:
    """The techniques named in config (``env.techniques``), in action-index order; ``None`` or
    empty: every registered technique, in registry order.

    Raises:
        TechniqueError: an unknown or repeated name, or a list without the identity technique.
    """
    names = list(names or REGISTRY)
    if len(set(names)) != len(names):
        raise TechniqueError(f"env.techniques lists a technique twice: {names}")
    techniques = tuple(make_technique(n) for n in names)
    identity_index(techniques)
    return techniques


__all__ = [
    "REGISTRY",
    "Materialized",
    "PrepareContext",
    "Technique",
    "TechniqueError",
    "check_ratio",
    "family",
    "identity_index",
    "identity_technique",
    "kept",
    "layer_forward",
    "layer_out_mask",
    "make_technique",
    "make_techniques",
    "quantizable",
    "removed",
    "slice_outputs",
    "technique_fits",
]
