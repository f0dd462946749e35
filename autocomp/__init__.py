"""autocomp: automatic per-layer compression of Flax models for phones.

Entry points: ``python -m autocomp.train`` (search, compress, fine-tune),
``python -m autocomp.export`` (TFLite files, verification, model card) and
``python -m autocomp.bench search``. The library never imports ``envs`` or ``agents``.
"""

__version__ = "0.1.0"


def apply_plan(model, params, plan):
    """Re-apply a saved plan without searching; see :func:`autocomp.plan.apply_plan`."""
    from autocomp.plan import apply_plan as _apply_plan

    return _apply_plan(model, params, plan)


def inspect(model, variables, example, apply_kwargs=None, output_fn=None) -> str:
    """A table of what autocomp sees in a user's linen model; see
    :func:`autocomp.inspection.inspect`."""
    from autocomp.inspection import inspect as _inspect

    return _inspect(model, variables, example, apply_kwargs, output_fn)


def compress(model, variables, data, overrides=(), **kwargs):
    """Search, compress and fine-tune a user's own linen model; see
    :func:`autocomp.api.compress`."""
    from autocomp.api import compress as _compress

    return _compress(model, variables, data, overrides, **kwargs)
