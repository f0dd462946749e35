"""The tensorflow-datasets source (``data.source=tfds data.name=mnist``): for users with data
prepared by TFDS, or with a network and ``data.download=true``.

A run never starts a download by itself: offline, TFDS retries a failed download for minutes
before it gives up, so the source first asks TFDS for the prepared data with ``download=False``
(a fraction of a second) and, when it is not there, fails with the ways out.
TensorFlow is imported only here, when this source is used.
"""

from __future__ import annotations

import numpy as np

from autocomp.config import DataConfig


class TfdsDataError(ValueError):
    """A TFDS data set that is not available; the message says how to fix it."""


def _missing_message(cfg: DataConfig, where: str) -> str:
    return (
        f"tensorflow-datasets has no prepared {cfg.name!r} in {where}, and autocomp does not "
        "download during a run unless asked. Fix one of: (1) with a network, add "
        "data.download=true (TFDS downloads and prepares it once); (2) point data.data_dir at a "
        f"folder holding a prepared {cfg.name!r}; (3) for data sets with a manual download "
        f"(imagenet2012) put the archives in <data_dir>/downloads/manual and add "
        "data.download=true; (4) use files on disk instead: data.source=local "
        "data.path=<.npz file or folder> (see autocomp/data/local.py)"
    )


def load_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as uint8/float NHWC images and int labels."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        tfds.builder(cfg.name, data_dir=cfg.data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise TfdsDataError(
            f"data.name={cfg.name!r} is not a tensorflow-datasets data set (see "
            "https://www.tensorflow.org/datasets/catalog); for files on disk use data.source=local"
        ) from err

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            ds = tfds.load(
                cfg.name,
                split=name,
                data_dir=cfg.data_dir,
                download=cfg.download,
                as_supervised=True,
            )
        except AssertionError as err:  # TFDS's "could not find data in <dir>"
            raise TfdsDataError(_missing_message(cfg, cfg.data_dir or "TFDS's data dir")) from err
        except ValueError as err:  # unknown split, no supervised keys
            raise TfdsDataError(f"tensorflow-datasets {cfg.name!r}: {err}") from err
        if cfg.max_examples is not None:
            ds = ds.take(cfg.max_examples)
        if cfg.image_size is not None:
            size = tuple(cfg.image_size)
            ds = ds.map(
                lambda x, y: (tf.cast(tf.image.resize(x, size), tf.uint8), y),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        xs, ys = [], []
        for x, y in tfds.as_numpy(ds.batch(1024).prefetch(tf.data.AUTOTUNE)):
            xs.append(x)
            ys.append(y)
        if not xs:
            raise TfdsDataError(f"tensorflow-datasets {cfg.name!r} split {name!r} is empty")
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = split(cfg.train_split)
    x_test, y_test = split(cfg.test_split)
    return x_train, y_train, x_test, y_test
