"""Data sources: the embedded digits and local files (real data sets from ../shared/data)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from autocomp.config import DataConfig
from autocomp.data import DataError, load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_dataset(DataConfig()), load_dataset(DataConfig())
    assert a.fingerprint() == b.fingerprint()
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert a.x_train.dtype == np.float32 and 0 <= a.x_train.min() and a.x_train.max() <= 1


@needs_shared
def test_local_mnist_npz():
    d = load_dataset(
        DataConfig(source="local", name="mnist", path=str(SHARED / "mnist.npz"), val_fraction=0.1)
    )
    assert d.x_train.shape == (54000, 28, 28, 1) and d.x_val.shape == (6000, 28, 28, 1)
    assert d.x_test.shape == (10000, 28, 28, 1) and d.num_classes == 10
    assert d.y_test[:3].tolist() == [7, 2, 1]  # the official test set's first labels


@needs_shared
def test_local_cifar_split_files_in_a_folder():
    d = load_dataset(DataConfig(source="local", name="cifar10", path=str(SHARED), val_fraction=0.1))
    assert d.x_train.shape == (45000, 32, 32, 3) and d.x_test.shape == (10000, 32, 32, 3)
    assert d.y_test[:4].tolist() == [3, 8, 8, 0]  # cat, ship, ship, airplane


@needs_shared
def test_local_audio_becomes_logmel():
    d = load_dataset(
        DataConfig(source="local", name="fsdd", path=str(SHARED / "fsdd.npz"), val_fraction=0.1)
    )
    assert d.x_train.shape[1:] == (61, 40, 1) and len(d.x_test) == 300
    assert np.isfinite(d.x_train).all()
    np.testing.assert_allclose(d.x_train.mean(axis=(1, 2, 3)), 0, atol=1e-4)


def test_missing_data_fails_fast_with_the_fix(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError, match="does not exist; point it at"):
        load_dataset(DataConfig(source="local", name="mnist", path=str(tmp_path / "no.npz")))
    with pytest.raises(DataError, match="needs data.path="):
        load_dataset(DataConfig(source="local", name="mnist"))
    with pytest.raises(DataError, match="no cifar10_train"):
        load_dataset(DataConfig(source="local", name="cifar10", path=str(tmp_path)))
    assert time.perf_counter() - start < 10


def test_corrupt_or_incomplete_npz_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(DataConfig(source="local", name="x", path=str(bad)))
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 4, 4, 1), np.uint8), y_train=np.zeros(2))
    with pytest.raises(DataError, match=r"lacks arrays \['x_test', 'y_test'\]"):
        load_dataset(DataConfig(source="local", name="x", path=str(partial)))


def test_unknown_source():
    from autocomp.config import ConfigError

    with pytest.raises(ConfigError, match="data.source='ftp': use digits, local or tfds"):
        DataConfig(source="ftp")


def test_tfds_source_reads_mock_data(tmp_path):
    """The tensorflow-datasets code path, on TFDS's own mock data (nothing is downloaded)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        mnist = load_dataset(DataConfig(source="tfds", name="mnist", data_dir=str(tmp_path)))
        cifar = load_dataset(
            DataConfig(source="tfds", name="cifar10", data_dir=str(tmp_path), max_examples=30)
        )
        imagenet = load_dataset(
            DataConfig(
                source="tfds",
                name="imagenet2012",
                data_dir=str(tmp_path),
                test_split="validation",
                image_size=[24, 24],
            )  # fmt: skip
        )
    assert mnist.x_train.shape[1:] == (28, 28, 1) and mnist.x_train.dtype == np.float32
    assert len(mnist.x_train) + len(mnist.x_val) == 40 and len(mnist.x_test) == 40
    assert 0.0 <= mnist.x_train.min() and mnist.x_train.max() <= 1.0
    assert mnist.y_train.dtype == np.int32
    assert cifar.x_train.shape[1:] == (32, 32, 3) and len(cifar.x_test) == 30
    assert imagenet.x_test.shape == (40, 24, 24, 3)  # varying sizes resized


def test_tfds_missing_offline_fails_fast_with_the_fix(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(source="tfds", name="mnist", data_dir=str(tmp_path)))
    assert time.perf_counter() - start < 10.0  # TFDS's own download would retry for minutes
    message = str(err.value)
    assert "data.download=true" in message and "data.source=local data.path=" in message
    assert str(tmp_path) in message
    with pytest.raises(DataError, match="not a tensorflow-datasets data set"):
        load_dataset(DataConfig(source="tfds", name="no_such_set", data_dir=str(tmp_path)))
