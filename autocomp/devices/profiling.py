"""Profilers that measure device cost tables on real runtimes.

Every configuration the search can deploy (:func:`search_configs`) is built as a one-op TFLite
model with the export's converter path (:func:`micro_model`) and timed where it will run:

- **host**: in the LiteRT interpreter on this machine (:func:`time_tflite`: fixed threads,
  warm-up, rounds of back-to-back calls, median and spread); energy from RAPL where the kernel
  exposes it (:func:`host_energy_counters`), else marked as estimated.
- **android**: pushed with ``adb`` and timed with TensorFlow Lite's ``benchmark_model`` on the
  phone (:class:`AndroidRunner`); energy from the battery's current and voltage sampled during a
  long run (:func:`parse_battery`), or from a power-monitor CSV (:func:`power_from_csv`).

The interpreter's per-call overhead is measured once on a trivial model and taken out of each
row; the lookup adds it back once per model (``invoke_overhead_ms`` in the table).
"""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from autocomp.devices.opkeys import FREE_OPS, op_key
from autocomp.export.tflite import Timing
from autocomp.models.ops import PARAMETRIC, Op, Shape, param_shapes, walk_shapes


# ------------------------------------------------------------------ what to measure
def search_configs(
    base_ops: Sequence[Op],
    layers,
    techniques,
    ratios: Sequence[float],
    input_shape: Sequence[int],
    graph=None,
) -> dict[str, tuple[Op, Shape]]:
    """Every op configuration a plan of this search space deploys, by table key: each
    technique at each ratio bin on each layer it fits, at every input width the previous
    layer can leave, with the layer's trailing ops, plus the ops before the first layer (or,
    for a user's model, ``graph``: every op outside its layers at every width its channel group
    can keep; kinds no one-op model can stand for, ``other``, are left to the roofline)."""
    from autocomp.models.graph_costs import at_width
    from autocomp.search.space import cells, fixed_ops
    from autocomp.techniques import kept

    configs: dict[str, tuple[Op, Shape]] = {}

    def add(ops: Sequence[Op], shape: Sequence[int]) -> None:
        for op, op_shape in zip(ops, walk_shapes(ops, shape, strict=False), strict=False):
            if op.kind not in FREE_OPS and op.kind != "other":
                op = replace(op, bits=32)  # k-bit layers: the float key (and its int8 row)
                configs.setdefault(op_key(op, op_shape), (op, tuple(op_shape)))

    if graph is None:
        add(fixed_ops(base_ops), input_shape)
    else:
        roots = {la.out_group: la for la in layers if la.out_group >= 0}
        for g, gop in graph:
            size = roots[g].features if g in roots else None
            for ratio in ratios if size else ratios[:1]:
                op, shape = at_width(gop, size, kept(size, ratio)) if size else (gop.op, gop.shape)
                add((op,), shape)
    for *_, ops, shape in cells(layers, techniques, ratios):
        add(ops, shape)
    return configs


GRAPH_KINDS = ("mul", "act", "affine", "pad", "reduce", "concat")


def _graph_micro(kind: str, channels: int):
    """A one-op stand-in for what a user's model runs between its layers
    (:mod:`autocomp.models.graph_costs`); ``concat`` gives ``channels`` from two halves."""
    import jax
    import jax.numpy as jnp

    def concat(x):
        return jnp.concatenate([x, x[..., : channels - x.shape[-1]]], -1)

    return {
        "mul": lambda x: x * x,  # two activations multiplied (a gate)
        "act": jax.nn.sigmoid,
        "affine": lambda x: x * 1.5,  # a scale by a constant the converter cannot fold
        "pad": lambda x: jnp.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)][: x.ndim]),
        "reduce": lambda x: jnp.max(x, axis=-1),
        "concat": concat,
    }[kind]


def micro_model(op: Op, in_shape: Shape, seed: int = 0, int8: bool = False) -> bytes:
    """A batch-1 float32 TFLite model of ``op`` alone (``add``: the input added to itself;
    ``concat``: the first half of the channels concatenated with itself); ``int8``: converted
    as the export converts ``model_int8.tflite`` (full integer, calibrated on random inputs)."""
    import jax

    from autocomp.export import function_to_tflite, to_tflite

    def calibration(shape: Shape) -> np.ndarray | None:
        return np.random.default_rng(seed).random((8, *shape), np.float32) if int8 else None

    if op.kind in GRAPH_KINDS:
        shape, channels = tuple(in_shape), in_shape[-1]
        if op.kind == "concat":  # its key holds the output's shape
            shape = (*shape[:-1], (channels + 1) // 2)
        return function_to_tflite(_graph_micro(op.kind, channels), shape, calibration(shape))
    op = replace(op, name="op") if op.kind in PARAMETRIC else op
    ops = (Op("save"), op) if op.kind == "add" else (op,)
    rng = np.random.default_rng(seed)
    # Random weights from the shapes alone (no compilation per configuration).
    params = {}
    if op.kind in PARAMETRIC:
        params = jax.tree.map(
            lambda s: rng.standard_normal(s.shape, np.float32) * 0.1, param_shapes(ops, in_shape)
        )
    return to_tflite(ops, params, tuple(in_shape), calibration(tuple(in_shape)))


# ------------------------------------------------------------------ host timing
def time_tflite(content: bytes, threads: int = 1, **kwargs) -> Timing:
    """Latency of a TFLite model's ``invoke`` in the LiteRT interpreter on this host, on a
    random input (:meth:`autocomp.export.TfliteModel.timing`)."""
    from autocomp.export import TfliteModel

    model = TfliteModel(content, threads)
    x = np.random.default_rng(0).random(tuple(model.input["shape"][1:]), dtype=np.float32)
    return model.timing(x, **kwargs)


def overhead_model(int8: bool = False) -> bytes:
    """A model that does almost nothing through the same delegate as the measured ops (a 1x1
    conv of one channel on one pixel): its latency is the interpreter's per-call overhead."""
    return micro_model(Op("conv", "op", 1, 1), (1, 1, 1), int8=int8)


# ------------------------------------------------------------------ energy counters
RAPL_ROOT = Path("/sys/class/powercap")
POWER_SUPPLY_ROOT = Path("/sys/class/power_supply")


def host_energy_counters(
    rapl_root: Path = RAPL_ROOT, power_supply_root: Path = POWER_SUPPLY_ROOT
) -> dict:
    """What this machine offers to measure energy: RAPL package counters (``energy_uj``) and
    batteries with current/voltage or power readings."""
    rapl = (
        sorted(str(p) for p in rapl_root.glob("intel-rapl:*/energy_uj"))
        if rapl_root.is_dir()
        else []
    )
    batteries = []
    if power_supply_root.is_dir():
        for supply in sorted(power_supply_root.iterdir()):
            names = {p.name for p in supply.iterdir()} if supply.is_dir() else set()
            if {"current_now", "voltage_now"} <= names or "power_now" in names:
                batteries.append(str(supply))
    if rapl:
        summary = f"RAPL energy counters: {', '.join(rapl)}"
    elif batteries:
        summary = f"battery readings: {', '.join(batteries)}"
    else:
        summary = (
            f"no energy counter: no RAPL under {rapl_root}, no battery under {power_supply_root}"
        )
    return {"rapl": rapl, "batteries": batteries, "summary": summary}


def read_rapl_uj(paths: Iterable[str]) -> int:
    """Sum of the RAPL package counters, in microjoules."""
    return sum(int(Path(p).read_text().strip()) for p in paths)


def rapl_energy_mj(call: Callable[[], object], paths: Sequence[str], seconds: float = 1.0) -> float:
    """Energy of one ``call`` from RAPL: counter difference over a loop of calls lasting
    about ``seconds`` (package energy: includes the idle share of the package)."""
    start_uj, start, calls = read_rapl_uj(paths), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
    used_uj = read_rapl_uj(paths) - start_uj
    if used_uj < 0:  # the counter wrapped
        return float("nan")
    return used_uj * 1e-3 / calls


# ------------------------------------------------------------------ android
@dataclass(frozen=True)
class AndroidRunner:
    """Runs micro-models on a phone through ``adb`` and TFLite's ``benchmark_model``.

    Attributes:
        serial: the phone's adb serial (``adb devices``).
        benchmark_binary: path of ``benchmark_model`` on the phone (push the build for its ABI
            first, see docs/android-profiling.md).
        remote_dir: where micro-models are pushed.
        threads: CPU threads of the interpreter.
        delegate: ``xnnpack`` (TFLite's default CPU path), ``cpu`` (reference kernels), ``gpu``
            or ``nnapi``.
        warmup_runs, num_runs: ``benchmark_model``'s warm-up and timed runs.
        adb: the adb executable.
    """

    serial: str
    benchmark_binary: str = "/data/local/tmp/benchmark_model"
    remote_dir: str = "/data/local/tmp/autocomp"
    threads: int = 1
    delegate: str = "xnnpack"
    warmup_runs: int = 20
    num_runs: int = 100
    adb: str = "adb"

    def adb_command(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def push_command(self, local: Path) -> list[str]:
        return self.adb_command("push", str(local), f"{self.remote_dir}/{local.name}")

    def benchmark_command(self, model_name: str, num_runs: int | None = None) -> list[str]:
        flags = [
            f"--graph={self.remote_dir}/{model_name}",
            f"--num_threads={self.threads}",
            f"--warmup_runs={self.warmup_runs}",
            f"--num_runs={num_runs or self.num_runs}",
            f"--use_xnnpack={'true' if self.delegate == 'xnnpack' else 'false'}",
        ]
        if self.delegate == "gpu":
            flags.append("--use_gpu=true")
        elif self.delegate == "nnapi":
            flags.append("--use_nnapi=true")
        return self.adb_command("shell", shlex.join([self.benchmark_binary, *flags]))

    def battery_command(self) -> list[str]:
        return self.adb_command("shell", "cat /sys/class/power_supply/battery/uevent")

    def run(self, command: list[str], timeout: float = 600) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as err:
            raise ProfileError(
                f"{command[0]!r} not found: install Android platform-tools and put adb on PATH "
                "(or pass adb=<path>)"
            ) from err
        if done.returncode != 0:
            raise ProfileError(
                f"`{shlex.join(command)}` failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        return done.stdout + done.stderr

    def time_model(self, local: Path) -> Timing:
        self.run(self.push_command(local))
        return parse_benchmark_output(self.run(self.benchmark_command(local.name)))

    def battery_watts(self, samples: int = 10) -> float:
        """Mean battery power over ``samples`` readings (about 50 ms apart over adb)."""
        return float(np.mean([parse_battery(self.run(self.battery_command()))
                              for _ in range(samples)]))  # fmt: skip

    def energy_mj(self, model_name: str, latency_ms: float, seconds: float = 5.0) -> float:
        """Energy of one inference from the battery: power sampled while ``benchmark_model``
        loops on the model for about ``seconds``, minus the idle power sampled before it,
        times the latency. Needs the phone on battery (unplugged; adb over Wi-Fi)."""
        idle = self.battery_watts()
        runs = max(self.num_runs, int(seconds * 1e3 / max(latency_ms, 1e-3)))
        proc = subprocess.Popen(
            self.benchmark_command(model_name, num_runs=runs),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        busy = []
        while proc.poll() is None:
            busy.append(parse_battery(self.run(self.battery_command())))
        if len(busy) < 3:
            raise ProfileError(
                f"only {len(busy)} battery readings during the {seconds} s loop on "
                f"{model_name}; raise the loop length"
            )
        return max(0.0, float(np.mean(busy)) - idle) * latency_ms


class ProfileError(RuntimeError):
    """A profiler that cannot run or whose tool's output cannot be read."""


_COUNT_LINE = re.compile(
    r"count=(?P<count>\d+) first=\S+ curr=\S+ min=(?P<min>[\d.]+) max=(?P<max>[\d.]+) "
    r"avg=(?P<avg>[\d.e+]+) std=(?P<std>[\d.e+]+)"
)


def parse_benchmark_output(text: str) -> Timing:
    """The timed runs of a ``benchmark_model`` log (the last ``count=...`` line: TFLite prints
    the warm-up first, then the timed runs), in ms. ``benchmark_model`` reports the mean and
    the standard deviation, which stand in for median and spread.

    Raises:
        ProfileError: if the log has no timing line (the tool failed; its log is quoted).
    """
    matches = list(_COUNT_LINE.finditer(text))
    if not matches:
        raise ProfileError(
            "benchmark_model printed no 'count=... avg=... std=...' line; its output ends "
            f"with: {text.strip()[-400:]!r}"
        )
    last = matches[-1]
    return Timing(float(last["avg"]) / 1e3, float(last["std"]) / 1e3, int(last["count"]))


def parse_battery(uevent: str, current_unit: str = "uA", voltage_unit: str = "uV") -> float:
    """Power drawn from the battery in watts, from ``/sys/class/power_supply/battery/uevent``
    (``POWER_SUPPLY_CURRENT_NOW`` / ``POWER_SUPPLY_VOLTAGE_NOW``, or without the prefix as
    some tools print them). The sign convention of the current differs between phones, so the
    magnitude is used: sample only while discharging (unplugged, adb over Wi-Fi).
    """
    values = {}
    for line in uevent.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key.removeprefix("POWER_SUPPLY_")] = value
    try:
        current = abs(float(values["CURRENT_NOW"]))
        voltage = float(values["VOLTAGE_NOW"])
    except (KeyError, ValueError) as err:
        raise ProfileError(
            f"battery reading without CURRENT_NOW and VOLTAGE_NOW ({err}); this phone does not "
            "expose them: give a power-monitor CSV instead (power_csv=<file>)"
        ) from err
    scale = {"uA": 1e-6, "mA": 1e-3, "A": 1.0}
    vscale = {"uV": 1e-6, "mV": 1e-3, "V": 1.0}
    return current * scale[current_unit] * voltage * vscale[voltage_unit]


def power_from_csv(path: Path) -> float:
    """Mean power in watts of a power-monitor CSV with a ``power_w`` column, or ``current_a``
    and ``voltage_v`` columns (e.g. exported from a Monsoon monitor)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ProfileError(f"power-monitor CSV {str(path)!r} has no rows")
    if "power_w" in rows[0]:
        watts = [float(r["power_w"]) for r in rows]
    elif {"current_a", "voltage_v"} <= set(rows[0]):
        watts = [float(r["current_a"]) * float(r["voltage_v"]) for r in rows]
    else:
        raise ProfileError(
            f"power-monitor CSV {str(path)!r} needs a power_w column, or current_a and "
            f"voltage_v; it has {list(rows[0])}"
        )
    return float(np.mean(watts))


# ------------------------------------------------------------------ an experiment's space
def experiment_configs(config) -> dict[str, tuple[Op, Shape]]:
    """:func:`search_configs` of an experiment's search space (built-in or user model)."""
    from autocomp.techniques import make_techniques

    techniques = make_techniques(config.env.techniques)
    if config.model._target_:
        from autocomp.workflow.custom import random_network

        net, data = random_network(config)
        shape = tuple(data.x_train.shape[1:])
        return search_configs((), net.layers, techniques, config.env.ratios, shape,
                              net.graph_priced())  # fmt: skip
    from autocomp.models.layers import compressible_layers
    from autocomp.models.ops import base_ops

    ops, shape = base_ops(config.model), tuple(config.model.input_shape)
    layers = compressible_layers(ops, shape)
    return search_configs(ops, layers, techniques, config.env.ratios, shape)


def profiling_estimate(config, samples: int = 3, threads: int = 1) -> str:
    """How long ``python -m autocomp.profile device=host`` takes for this experiment on this
    machine: its configurations counted, and ``samples`` of them converted and timed here."""
    configs = list(experiment_configs(config).values())
    start = time.perf_counter()
    picked = configs[:: max(1, len(configs) // samples)][:samples]
    for op, shape in picked:
        time_tflite(micro_model(op, shape), threads)
    each = (time.perf_counter() - start) / max(1, len(picked))
    return (
        f"profiling this experiment's search space here takes about {len(configs) * each:.0f} s "
        f"({len(configs)} configurations, {each:.2f} s each, measured on {len(picked)}): "
        f"python -m autocomp.profile device=host experiment={config.name}"
    )
