"""autocomp: automatic per-layer compression of Flax models for phones.

The public API, re-exported here and imported on first use (``import autocomp`` loads no
TensorFlow, LiteRT, wandb or agent):

- :func:`compress` (:func:`autocomp.run.compress`): search, compress and fine-tune a user's own
  linen or NNX model; returns a :class:`Result`;
- :func:`inspect` (:func:`autocomp.models.inspection.inspect`): what autocomp sees in a model;
- :func:`apply_plan` (:func:`autocomp.search.plan.apply_plan`): re-apply a saved plan;
- :mod:`autocomp.data` (``autocomp.data.arrays``, the local and TFDS sources) and
  :mod:`autocomp.models.zoo` (ready linen models).

Entry points: ``python -m autocomp.train`` (search, compress, fine-tune), ``python -m
autocomp.export`` (TFLite files, verification, model card), ``python -m autocomp.profile``
(device tables) and ``python -m autocomp.bench`` (benchmarks).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "compress": ("autocomp.run", "compress"),
    "Result": ("autocomp.run", "Result"),
    "inspect": ("autocomp.models.inspection", "inspect"),
    "apply_plan": ("autocomp.search.plan", "apply_plan"),
    "zoo": ("autocomp.models.zoo", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'autocomp' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["Result", "apply_plan", "compress", "inspect", "zoo"]
