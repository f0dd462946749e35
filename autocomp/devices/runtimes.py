"""The device a profile times on (:class:`Runtime`): how it times a TFLite file and measures
(or estimates) its energy, on this host (:func:`host_runtime`: the LiteRT interpreter, RAPL)
or on a phone over adb (:func:`android_runtime`: ``benchmark_model``, battery or power
monitor). The runners themselves are :mod:`autocomp.devices.profiling`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autocomp.devices.profiling import (
    AndroidRunner,
    host_energy_counters,
    power_from_csv,
    rapl_energy_mj,
    time_tflite,
)


@dataclass(frozen=True)
class Runtime:
    """How a device times a TFLite file and measures (or not) its energy."""

    measure: Callable[[bytes], object]  # a Timing
    energy: Callable[[bytes], float | None]
    energy_info: dict
    name: str


def host_runtime(threads: int, rounds: int) -> Runtime:
    """The LiteRT interpreter on this machine; energy from RAPL where the kernel exposes it."""
    counters = host_energy_counters()

    def measure(content: bytes):
        return time_tflite(content, threads, rounds=rounds)

    def energy(content: bytes) -> float | None:
        if not counters["rapl"]:
            return None
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=content, num_threads=threads)
        interpreter.allocate_tensors()
        return rapl_energy_mj(interpreter.invoke, counters["rapl"])

    method = (
        "RAPL package energy over a 1 s loop of calls per row"
        if counters["rapl"]
        else "estimated: MACs, weight and activation bytes times the energy constants "
        "of the analytic section (Horowitz 2014); this machine offers " + counters["summary"]
    )
    info = {"measured": bool(counters["rapl"]), "method": method}
    return Runtime(measure, energy, info, "LiteRT interpreter (ai-edge-litert), XNNPACK")


ANDROID_ENERGY = {
    "battery": "battery current x voltage sampled over adb during a 5 s loop per row, "
    "minus idle power, times the latency",
    "none": "estimated: analytic energy constants (no phone energy source given)",
}


def android_runtime(opts: dict[str, str], threads: int) -> Runtime:
    """``benchmark_model`` on the phone over adb; energy from its battery or a power monitor."""
    import tempfile

    source = opts.get("energy", "none")
    if source not in ANDROID_ENERGY:
        raise SystemExit(f"energy={source!r}: use energy=battery or energy=none")
    runner = AndroidRunner(
        opts["serial"],
        benchmark_binary=opts.get("benchmark_binary", AndroidRunner.benchmark_binary),
        threads=threads,
        delegate=opts.get("delegate", "xnnpack"),
        adb=opts.get("adb", "adb"),
    )
    runner.run(runner.adb_command("shell", f"mkdir -p {runner.remote_dir}"))
    workdir = Path(tempfile.mkdtemp(prefix="autocomp-profile-"))
    last: dict = {}

    def measure(content: bytes):
        path = workdir / "model.tflite"
        path.write_bytes(content)
        last["timing"] = runner.time_model(path)
        return last["timing"]

    monitor_w = power_from_csv(Path(opts["power_csv"])) if opts.get("power_csv") else None

    def energy(content: bytes) -> float | None:
        latency = last["timing"].median_ms
        if source == "battery":
            return runner.energy_mj("model.tflite", latency)
        if monitor_w is not None:
            return monitor_w * latency
        return None

    info = {"measured": source == "battery" or monitor_w is not None,
            "method": ANDROID_ENERGY[source]}  # fmt: skip
    if monitor_w is not None and source != "battery":
        info["method"] = (
            f"power monitor CSV {opts['power_csv']}: mean {monitor_w:.3f} W under load "
            "times each row's latency (includes the phone's idle power)"
        )
    return Runtime(measure, energy, info, f"TensorFlow Lite benchmark_model ({runner.delegate}) "
                   "over adb")  # fmt: skip
