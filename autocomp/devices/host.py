"""This machine's identity: its CPU (from /proc/cpuinfo), the table name it is profiled under
(:func:`host_id`), and where its measured cost table lies (:func:`host_table_path`).

Other modules call these through the module (``host.host_id()``), so one patch of this module
changes what every caller sees."""

from __future__ import annotations

import platform
import re
from importlib import resources
from pathlib import Path


def cpu_info() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (``model name``, ``cpu family``, ...); empty
    where that file is absent or unreadable."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_model() -> str:
    """This machine's CPU model name (``platform.processor()`` where /proc/cpuinfo lacks it)."""
    return cpu_info().get("model name") or platform.processor() or "unknown"


def host_id() -> str:
    """This machine's CPU as a table name, e.g. ``host-amd-epyc-f25m1`` (vendor model name,
    family and model from /proc/cpuinfo; ``platform.machine()`` where that file is absent)."""
    info = cpu_info()
    name = info.get("model name") or info.get("Hardware") or platform.processor()
    name = name or platform.machine() or "unknown"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if "cpu family" in info and "model" in info:
        slug += f"-f{info['cpu family']}m{info['model']}"
    return f"host-{slug}"


def user_tables_dir() -> Path:
    """Where ``python -m autocomp.profile`` writes tables by default."""
    return Path("~/.cache/autocomp/devices").expanduser()


def host_table_path() -> Path | None:
    """A measured table of this machine's CPU: the user's own first, then a shipped one."""
    stem = host_id()
    for path in (
        user_tables_dir() / f"{stem}.json",
        Path(str(resources.files("autocomp.devices").joinpath(f"{stem.replace('-', '_')}.json"))),
    ):
        if path.is_file():
            return path
    return None
