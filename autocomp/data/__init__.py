"""Data sources. The embedded default is scikit-learn's bundled 8x8 digits: no network needed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from autocomp.config import DataConfig


class DataError(ValueError):
    """A data set that cannot be loaded; the message says how to fix it."""


class Dataset(NamedTuple):
    """Train/validation/test splits as float32 NHWC images in [0, 1] and int32 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def fingerprint(self) -> str:
        """A short hash of the data, part of the base-model cache key."""
        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_val, self.y_val):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def arrays(x_train, y_train, x_val, y_val, x_test, y_test, name: str = "arrays") -> Dataset:
    """A data set from the user's own arrays (NHWC images, uint8 or float; integer labels)."""
    splits = [np.asarray(a) for a in (x_train, y_train, x_val, y_val, x_test, y_test)]
    for (label, x), y in zip(
        (("train", splits[0]), ("val", splits[2]), ("test", splits[4])), splits[1::2], strict=True
    ):
        if len(x) != len(y) or len(x) == 0:
            raise DataError(
                f"the {label} split has {len(x)} inputs and {len(y)} labels; give each split "
                "as many labels as inputs, at least one"
            )
    xs = [images(x) for x in splits[0::2]]
    ys = [y.astype(np.int32) for y in splits[1::2]]
    classes = int(max(y.max() for y in ys)) + 1
    return Dataset(name, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], classes)


def images(x: np.ndarray) -> np.ndarray:
    """NHWC float32 in [0, 1] from uint8 images (float features pass through)."""
    if x.ndim == 3:
        x = x[..., None]
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return x.astype(np.float32) / np.float32(scale)


def _with_val(x, y, x_test, y_test, cfg: DataConfig, name: str) -> Dataset:
    """Float images and int32 labels, with a fixed, seeded validation split carved out of the
    training data."""
    x, x_test = images(x), images(x_test)
    y, y_test = y.astype(np.int32), y_test.astype(np.int32)
    order = np.random.default_rng(cfg.split_seed).permutation(len(x))
    n_val = int(round(cfg.val_fraction * len(x)))
    val, train = order[:n_val], order[n_val:]
    classes = int(max(y.max(), y_test.max())) + 1
    return Dataset(name, x[train], y[train], x[val], y[val], x_test, y_test, classes)


def load_digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled digits with a fixed, seeded train/val/test split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(cfg.split_seed).permutation(len(x))
    n_test = int(round(cfg.test_fraction * len(x)))
    n_val = int(round(cfg.val_fraction * (len(x) - n_test)))
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return Dataset("digits", x[train], y[train], x[val], y[val], x[test], y[test], 10)


def load_local(cfg: DataConfig) -> Dataset:
    """Files on disk (see :mod:`autocomp.data.local`); works offline."""
    from autocomp.data.local import LocalDataError, load_arrays

    try:
        x_train, y_train, x_test, y_test = load_arrays(cfg)
    except LocalDataError as err:
        raise DataError(str(err)) from err
    return _with_val(x_train, y_train, x_test, y_test, cfg, cfg.name)


def load_tfds(cfg: DataConfig) -> Dataset:
    """tensorflow-datasets (see :mod:`autocomp.data.tfds`); never downloads unless asked."""
    from autocomp.data.tfds import TfdsDataError, load_arrays

    try:
        x_train, y_train, x_test, y_test = load_arrays(cfg)
    except TfdsDataError as err:
        raise DataError(str(err)) from err
    return _with_val(x_train, y_train, x_test, y_test, cfg, cfg.name)


SOURCES: dict[str, Callable[[DataConfig], Dataset]] = {
    "digits": load_digits,
    "local": load_local,
    "tfds": load_tfds,
}


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the data set named by ``cfg.source`` (checked by ``DataConfig``)."""
    data = SOURCES[cfg.source](cfg)
    if cfg.max_examples is not None:
        n = cfg.max_examples
        data = data._replace(
            x_train=data.x_train[:n],
            y_train=data.y_train[:n],
            x_val=data.x_val[:n],
            y_val=data.y_val[:n],
            x_test=data.x_test[:n],
            y_test=data.y_test[:n],
        )
    return data
