"""autocomp: automatic per-layer compression of Flax models for phones.

Entry points: ``python -m autocomp.train`` (search, compress, fine-tune) and
``python -m autocomp.bench search``. The library never imports ``envs`` or ``agents``.
"""

__version__ = "0.1.0"
