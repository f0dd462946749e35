"""Plans scored and models trained over 2 (forced) host devices give what one device gives.

The 2-device side runs in a fresh process (``XLA_FLAGS=--xla_force_host_platform_device_count``
only takes effect before jax starts); the 1-device side in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sharding_child import measure

from autocomp.sharding import labelled_accuracy, pad_examples


def _run(devices: int, cache_dir: str) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "sharding_child", cache_dir], env=env,
                         cwd=os.path.dirname(here), capture_output=True, text=True, timeout=600,
                         check=False)  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_pad_examples_is_exact():
    x, y = np.arange(5 * 2, dtype=np.float32).reshape(5, 2), np.array([0, 1, 2, 1, 0])
    xp, yp = pad_examples(x, y, 4)
    assert xp.shape == (8, 2) and yp.tolist() == [0, 1, 2, 1, 0, -1, -1, -1]
    pred = np.array([0, 1, 0, 1, 0, 0, 0, 0])  # 4 of the 5 real ones right; padding never counts
    assert float(labelled_accuracy(pred, yp)) == pytest.approx(0.8)


@pytest.mark.slow  # about 70 s: two processes each compile a search and a training (make test-slow)
@pytest.mark.xdist_group("sharding")
def test_two_devices_score_plans_and_train_as_one_does(cache_dir):
    """An odd number of validation examples (so the 2-way split pads), 16 random plans: the same
    plans, the same accuracies, and data-parallel training ends at the same weights."""
    one, two = measure(cache_dir), _run(2, cache_dir)  # this process has one device
    assert one["devices"] == 1 and two["devices"] == 2 and two["val_shards"] == 2
    assert one["n_val"] % 2 == 1 and two["n_val"] == one["n_val"] + 1
    assert one["plans"] == two["plans"]
    np.testing.assert_allclose(one["accuracy"], two["accuracy"], atol=1e-6)
    assert len(set(np.round(one["accuracy"], 6))) > 1  # the plans differ in accuracy
    assert two["tuned"] == pytest.approx(one["tuned"], rel=1e-4)
