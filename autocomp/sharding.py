"""Every accelerator of the run, through ``jax.sharding``: examples split over a 1-D ``data`` mesh.

- Plan evaluation: the validation examples of the environment's params are split over the
  devices (:func:`shard_env_params`), everything else is replicated; the one compiled search
  program then runs data-parallel (XLA's SPMD partitioner inserts the cross-device sums). The
  split is exact: the examples are padded to a multiple of the device count with label ``-1``,
  which no prediction equals, and the accuracy divides by the real count.
- Training and fine-tuning: each batch is split over the devices (:func:`put_batch`), the
  params and optimizer state are replicated; a batch size the device count does not divide is
  trained on one device (logged once).

The mesh is ``jax.devices()``: this process's devices, and under ``jax.distributed`` (a job of
several processes, :mod:`autocomp.cluster`) those of every process. Each process then holds the
same host arrays and places its own devices' slices, and results come back replicated. With one
device (a laptop, CI) all of this is a no-op. Restrict the devices the usual way
(``CUDA_VISIBLE_DEVICES``; on CPU ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes
N host devices, as the tests and ``python -m autocomp.bench scale`` do).
"""

from __future__ import annotations

import logging
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)


@cache
def data_mesh() -> Mesh | None:
    """The 1-D ``data`` mesh of every process's devices; ``None`` with one device."""
    devices = jax.devices()
    if len(devices) < 2:
        return None
    log.info("%d %s devices: examples are split over them", len(devices), devices[0].platform)
    return Mesh(np.array(devices), ("data",))


def pad_examples(x: np.ndarray, y: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad to a multiple of ``multiple`` examples: copies of the first images, label ``-1``."""
    extra = -len(x) % multiple
    if extra == 0:
        return x, y
    x = np.concatenate([x, np.repeat(x[:1], extra, axis=0)])
    y = np.concatenate([np.asarray(y), np.full(extra, -1, dtype=np.asarray(y).dtype)])
    return x, y


def labelled_accuracy(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Share of correct predictions among the real (label >= 0) examples."""
    return jnp.sum(pred == y) / jnp.maximum(jnp.sum(y >= 0), 1)


def shard_env_params(params, mesh: Mesh | None = None):
    """The environment's params with ``x_val``/``y_val`` padded and split over ``mesh`` (default:
    :func:`data_mesh`) and every other array replicated; unchanged with one device."""
    mesh = mesh if mesh is not None else data_mesh()
    if mesh is None:
        return params
    x, y = pad_examples(np.asarray(params.x_val), np.asarray(params.y_val), mesh.size)
    replicated = NamedSharding(mesh, P())
    out = jax.tree.map(lambda a: _put(a, replicated), params._replace(x_val=None, y_val=None))
    split = NamedSharding(mesh, P("data"))
    return out._replace(x_val=_put(x, split), y_val=_put(y, split))


def _put(x, sharding: NamedSharding) -> jax.Array:
    """``x`` (the same value in every process) as a global array of ``sharding``: each process
    places its own devices' slices (``jax.device_put`` where this process has every device)."""
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def host_value(a) -> np.ndarray:
    """``a`` as one host array, also when it is split over the devices of several processes."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def batch_sharding(batch_size: int) -> NamedSharding | None:
    """How to split a training batch of ``batch_size`` (``None``: one device)."""
    mesh = data_mesh()
    if mesh is None:
        return None
    if batch_size % mesh.size:
        _warn_batch(batch_size, mesh.size)
        return None
    return NamedSharding(mesh, P("data"))


@cache
def _warn_batch(batch_size: int, devices: int) -> None:
    log.warning(
        "batch size %d is not a multiple of the %d devices: training on one device; "
        "set the batch size to a multiple of %d to use them all",
        batch_size,
        devices,
        devices,
    )


def put_batch(sharding: NamedSharding | None, *arrays):
    """The batch's arrays split over the devices (as they are with ``sharding=None``)."""
    if sharding is None:
        return arrays
    return tuple(None if a is None else _put(a, sharding) for a in arrays)
