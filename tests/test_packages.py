"""`agents` and `envs` are also names of unrelated PyPI packages: ours must be the ones imported."""

from pathlib import Path

import agents
import autocomp
import envs
import experiments

ROOT = Path(__file__).resolve().parents[1]


def test_packages_import_from_this_repo():
    for module in (autocomp, agents, envs, experiments):
        assert Path(module.__file__).resolve().is_relative_to(ROOT), module.__file__


def test_pyproject_lists_packages_explicitly():
    text = (ROOT / "pyproject.toml").read_text()
    for name in ('"agents"', '"envs"', '"autocomp"', '"experiments"'):
        assert name in text


def test_importing_autocomp_pulls_in_no_heavy_or_optional_package():
    """`import autocomp` is cheap: TensorFlow, LiteRT, wandb and the agents load only when a
    command needs them (checked in a fresh interpreter, from sys.modules)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys, autocomp; print(json.dumps(sorted(m for m in sys.modules if "
        "m.split('.')[0] in ('tensorflow', 'ai_edge_litert', 'wandb', 'agents', 'envs'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
