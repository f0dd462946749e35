"""The local-files data source (``data.source=local data.path=...``): works offline.

Accepted layouts:
- one ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8 NHWC images), like
  ``mnist.npz``;
- a folder of such files split in parts, ``<name>_train_<i>.npz`` / ``<name>_train.npz`` and
  ``<name>_test.npz`` (like the CIFAR-10 files), selected by ``data.name``;
- an audio ``.npz`` of concatenated clips (``x_*``, ``offsets_*``, ``lengths_*``, ``y_*``,
  ``sample_rate``; like ``fsdd.npz``), turned into log-mel spectrograms.

The validation split is carved from the training split with ``data.val_fraction`` and
``data.split_seed``; the test split is the file's own.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from autocomp.config import DataConfig


class LocalDataError(ValueError):
    """A local data set that is missing or unreadable; the message says how to fix it."""


def _open(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise LocalDataError(
            f"{str(path)!r} is not a readable .npz file ({err}); re-create it or point data.path "
            "at another copy"
        ) from err


def _need(arrays: dict, keys: tuple[str, ...], path: Path) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise LocalDataError(
            f"{str(path)!r} lacks arrays {missing} (it has {sorted(arrays)}); see the layouts "
            "accepted by data.source=local in autocomp/data/local.py"
        )


def _parts(folder: Path, name: str) -> tuple[list[Path], Path]:
    train = sorted(folder.glob(f"{name}_train_*.npz")) or sorted(folder.glob(f"{name}_train.npz"))
    test = folder / f"{name}_test.npz"
    if not train or not test.is_file():
        found = sorted(p.name for p in folder.glob("*.npz"))
        raise LocalDataError(
            f"no {name}_train[_<i>].npz and {name}_test.npz in {str(folder)!r} (found {found}); "
            "set data.name to the files' prefix or data.path to a single .npz"
        )
    return train, test


def load_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as stored (uint8 images, or float32 log-mel features
    for audio); :func:`autocomp.data.load_local` scales them."""
    if not cfg.path:
        raise LocalDataError(
            "data.source=local needs data.path=<file.npz or folder>, e.g. "
            "data.path=../shared/data/mnist.npz"
        )
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise LocalDataError(
            f"data.path={str(path)!r} does not exist; point it at the .npz file or folder"
        )
    if path.is_dir():
        train_files, test_file = _parts(path, cfg.name)
        parts = [_open(p) for p in train_files]
        for part, p in zip(parts, train_files, strict=True):
            _need(part, ("x_train", "y_train"), p)
        test = _open(test_file)
        _need(test, ("x_test", "y_test"), test_file)
        x_train = np.concatenate([p["x_train"] for p in parts])
        y_train = np.concatenate([p["y_train"] for p in parts])
        x_test, y_test = test["x_test"], test["y_test"]
    else:
        arrays = _open(path)
        if "offsets_train" in arrays:
            from autocomp.data.audio import clips_to_logmel

            _need(
                arrays,
                (
                    "x_train",
                    "offsets_train",
                    "lengths_train",
                    "y_train",
                    "x_test",
                    "offsets_test",
                    "lengths_test",
                    "y_test",
                    "sample_rate",
                ),
                path,
            )
            rate = int(arrays["sample_rate"])
            x_train = clips_to_logmel(arrays, "train", rate)
            x_test = clips_to_logmel(arrays, "test", rate)
            return x_train, arrays["y_train"], x_test, arrays["y_test"]
        _need(arrays, ("x_train", "y_train", "x_test", "y_test"), path)
        x_train, y_train = arrays["x_train"], arrays["y_train"]
        x_test, y_test = arrays["x_test"], arrays["y_test"]
    return x_train, y_train, x_test, y_test
