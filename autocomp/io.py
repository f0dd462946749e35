"""Atomic file output: a reader sees the old file or the whole new one, never a partial write."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Folders another process writes (a multi-process run: process 0 writes the run directory).
_WRITTEN_ELSEWHERE: list[Path] = []


@contextmanager
def written_elsewhere(folder: str | os.PathLike) -> Iterator[None]:
    """Inside, the atomic writes under ``folder`` do nothing: another process of the same run
    writes the same bytes there (see :func:`autocomp.cluster.is_writer`)."""
    folder = Path(folder).resolve()
    _WRITTEN_ELSEWHERE.append(folder)
    try:
        yield
    finally:
        _WRITTEN_ELSEWHERE.remove(folder)


def writes_here(path: str | os.PathLike) -> bool:
    """Whether this process writes ``path`` (false under a :func:`written_elsewhere` folder)."""
    path = Path(path).resolve()
    return not any(path.is_relative_to(folder) for folder in _WRITTEN_ELSEWHERE)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``
    (nothing under a :func:`written_elsewhere` folder)."""
    path = Path(path)
    if not writes_here(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # what open() would give (mkstemp makes it 0600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it: rows of a long job that a re-run can pick up."""
    path = Path(path)
    if not writes_here(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a file written by :func:`append_jsonl`, in order; a torn last line (the
    job was killed mid-write) is dropped. Empty if there is no file."""
    records = []
    path = Path(path)
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "key" in record:
                records.append(record)
    return records


def git_sha(cwd: str | os.PathLike | None = None) -> str:
    """The current commit (with ``-dirty`` if the tree has changes), or ``unknown``."""
    here = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha
