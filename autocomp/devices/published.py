"""Published phone latency measurements, read into autocomp's ops and table keys.

Two kinds of source (``../shared/data/phones``; its README has the provenance of each file):

- per-op TFLite profiles on a Google Pixel 1 (``amc_pixel1_tflite_profiles``: four MobileNet-V1
  variants, three runs each; ``proxylessnas_pixel1_tflite_profile``: ProxylessNAS-Mobile), one
  :class:`OpTiming` per profiled node, keyed exactly as :func:`autocomp.devices.opkeys.op_key`
  keys the ops autocomp deploys;
- nn-Meter's inverted-residual block latencies on four phones (``nnmeter_hybrid_lut``), one
  :class:`Block` per row, broken into the ops TFLite runs for it (:func:`block_ops`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from autocomp.models.ops import Op, Shape

AMC_DIR = "amc_pixel1_tflite_profiles"
PROXYLESS_DIR = "proxylessnas_pixel1_tflite_profile"
NNMETER_DIR = "nnmeter_hybrid_lut"
AMC_CSV = f"{AMC_DIR}/amc_mobilenetv1_pixel1_ops.csv"
PROXYLESS_CSV = f"{PROXYLESS_DIR}/proxylessnas_mobile_pixel1_ops.csv"
BLOCKS_CSV = f"{NNMETER_DIR}/nnmeter_hybrid_cnn_blocks.csv"
PHONES = ("pixel1", "pixel4", "pixel6", "xiaomi11")
FREE_NODES = ("reshape", "squeeze")  # TFLite views: no time worth a row

# Where each published file comes from (the phones README); copied into every table built
# from it. Licenses: both allow redistribution with the notice kept.
UPSTREAM = {
    AMC_DIR: {
        "repo": "https://github.com/mit-han-lab/amc-models",
        "commit": "49f83edfca6533a7e5464bbd2d5025835811c690",
        "files": "logs/*.txt",
        "license": "MIT (LICENSE.amc-models.MIT.txt)",
    },
    PROXYLESS_DIR: {
        "repo": "https://github.com/mit-han-lab/proxylessnas",
        "commit": "6f22edade82d114c95305174e775b19641330712",
        "files": "logs/proxyless_mobile_10_latency.txt",
        "license": "Apache-2.0 at that commit, MIT since (both texts kept beside the data)",
    },
    NNMETER_DIR: {
        "repo": "https://github.com/microsoft/nn-Meter",
        "commit": "9c31e190e78d6ac558213c68b41575fe545c0533",
        "files": "nn_meter/predictor/transformer_predictor/lut/*_lut_ln_v3.json",
        "license": "MIT (LICENSE.nn-Meter.MIT.txt)",
    },
}


class PublishedDataError(ValueError):
    """Published measurements missing or not in the expected form; the message says where."""


@dataclass(frozen=True)
class OpTiming:
    """One profiled node: the op autocomp would deploy for it, its input shape, the
    profiler's per-node average, and which network and run it belongs to."""

    op: Op
    shape: Shape
    latency_ms: float
    network: str
    run: str


@dataclass(frozen=True)
class Block:
    """One nn-Meter block: its ops (as TFLite runs them) and its latency on each phone."""

    key: str
    kind: str
    ops: tuple[tuple[Op, Shape], ...]
    macs: int
    latency_ms: dict[str, float]


def _read_csv(root: Path, name: str) -> list[dict[str, str]]:
    path = root / name
    if not path.is_file():
        raise PublishedDataError(
            f"{path} not found: pass source=<the phones folder of the shared data> "
            "(it holds amc_pixel1_tflite_profiles/, proxylessnas_pixel1_tflite_profile/ and "
            "nnmeter_hybrid_lut/)"
        )
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _node_op(row: dict[str, str]) -> tuple[Op, Shape] | None:
    """The op and input shape of one profiled TFLite node; ``None`` for a free view."""
    kind = row["op_kind"]
    h, w, c = (int(row[k]) for k in ("in_h", "in_w", "in_c"))
    out_c = int(row["out_c"])
    if kind in FREE_NODES:
        return None
    if kind == "conv2d":
        op = Op("conv", "op", out_c, int(row["kernel"]), int(row["stride"]))
        return op, (h, w, c)
    if kind == "depthwise_conv2d":
        op = Op("dwconv", "op", 0 if out_c == c else out_c, int(row["kernel"]), int(row["stride"]))
        return op, (h, w, c)
    if kind == "conv2d(fc)":  # a 1x1 conv on a 1x1 map: autocomp's dense layer
        if (h, w) != (1, 1):
            raise PublishedDataError(f"a fully connected node on a {h}x{w} map: {row}")
        return Op("dense", "op", out_c), (c,)
    if kind == "avg_pool":
        if (int(row["out_h"]), int(row["out_w"])) == (1, 1):
            return Op("gap"), (h, w, c)
        return Op("avgpool", kernel=int(row["kernel"]), stride=int(row["stride"])), (h, w, c)
    if kind == "add":
        return Op("add"), (h, w, c)
    if kind == "softmax":
        return Op("act"), (c,)
    raise PublishedDataError(f"unknown profiled op kind {kind!r} in {row}")


def _timings(rows: Iterable[dict[str, str]], network: str | None) -> list[OpTiming]:
    out = []
    for row in rows:
        priced = _node_op(row)
        if priced is not None:
            name = network or row["model"]
            out.append(OpTiming(*priced, float(row["avg_ms"]), name, row.get("run", "1")))
    return out


def pixel1_timings(root: Path | str) -> list[OpTiming]:
    """Every profiled node of the four MobileNet-V1s (three runs each) and ProxylessNAS."""
    root = Path(root)
    amc = _timings(_read_csv(root, AMC_CSV), None)
    return amc + _timings(_read_csv(root, PROXYLESS_CSV), "proxylessnas_mobile")


def network_totals(root: Path | str) -> dict[str, float]:
    """Whole-network latency per (network) as the profiler summed it over all its nodes
    (free views included), averaged over runs: ProxylessNAS-Mobile 80.6 ms."""
    root = Path(root)
    sums: dict[tuple[str, str], float] = {}
    for row in _read_csv(root, AMC_CSV):
        key = (row["model"], row["run"])
        sums[key] = sums.get(key, 0.0) + float(row["avg_ms"])
    proxyless = sum(float(r["avg_ms"]) for r in _read_csv(root, PROXYLESS_CSV))
    totals: dict[str, list[float]] = {"proxylessnas_mobile": [proxyless]}
    for (model, _), total in sums.items():
        totals.setdefault(model, []).append(total)
    return {k: sum(v) / len(v) for k, v in totals.items()}


def _conv(features: int, kernel: int = 1, stride: int = 1) -> Op:
    return Op("conv", "op", features, kernel, stride)


def block_ops(row: dict[str, str]) -> tuple[tuple[Op, Shape], ...]:
    """The ops TFLite runs for one nn-Meter block, with their input shapes.

    ``mbconv``: 1x1 expand (skipped at expand ratio 1) and hard-swish, k x k depthwise at the
    block's stride and hard-swish, squeeze-excite (global mean, dense to mid/4 with ReLU, dense
    back, hard-sigmoid, gate multiply) where ``se`` is set, 1x1 project, and the shortcut:
    ``identity`` adds the input, ``conv1x1`` (+``avgpool2x2`` at stride 2) adds a 1x1 conv of
    it, ``none`` adds nothing. ``stem_conv``: a k x k strided conv and hard-swish.
    ``mbpool_head``: 1x1 expand and hard-swish, global mean, dense to 1984 and hard-swish,
    dense to the classes. The MAC count of these ops equals the upstream ``macs`` column (a
    test checks every row).
    """
    h, w, c = (int(row[k]) for k in ("in_h", "in_w", "in_c"))
    oh, ow, out_c = (int(row[k]) for k in ("out_h", "out_w", "out_c"))
    kind, k = row["block"], int(row["kernel"])
    ops: list[tuple[Op, Shape]] = []
    if kind == "stem_conv":
        return ((_conv(out_c, k, int(row["stride"])), (h, w, c)), (Op("act"), (oh, ow, out_c)))
    mid = int(row["mid_c"])
    if kind == "mbpool_head":
        hidden = 1984
        return (
            (_conv(mid), (h, w, c)),
            (Op("act"), (h, w, mid)),
            (Op("gap"), (h, w, mid)),
            (Op("dense", "op", hidden), (mid,)),
            (Op("act"), (hidden,)),
            (Op("dense", "op", out_c), (hidden,)),
        )
    if kind != "mbconv":
        raise PublishedDataError(f"unknown nn-Meter block kind {kind!r} in {row}")
    stride = int(row["stride"])
    if int(row["expand_ratio"]) > 1:
        ops += [(_conv(mid), (h, w, c)), (Op("act"), (h, w, mid))]
    ops += [(Op("dwconv", "op", 0, k, stride), (h, w, mid)), (Op("act"), (oh, ow, mid))]
    if row["se"] == "1":
        ops += [
            (Op("gap"), (oh, ow, mid)),
            (Op("dense", "op", mid // 4), (mid,)),
            (Op("dense", "op", mid), (mid // 4,)),
            (Op("act"), (mid,)),
            (Op("mul"), (oh, ow, mid)),
        ]
    ops.append((_conv(out_c), (oh, ow, mid)))
    shortcut = row["shortcut"]
    if shortcut == "identity":
        ops.append((Op("add"), (oh, ow, out_c)))
    elif shortcut.startswith("conv1x1"):
        if "avgpool" in shortcut:
            ops.append((Op("avgpool", kernel=2, stride=2), (h, w, c)))
        ops += [(_conv(out_c), (oh, ow, c)), (Op("add"), (oh, ow, out_c))]
    elif shortcut != "none":
        raise PublishedDataError(f"unknown shortcut {shortcut!r} in {row}")
    return tuple(ops)


def nnmeter_blocks(root: Path | str) -> list[Block]:
    """Every CNN block of nn-Meter's table, with its ops and its latency on the four phones."""
    blocks = []
    for row in _read_csv(Path(root), BLOCKS_CSV):
        latency = {p: float(row[f"{p}_ms"]) for p in PHONES}
        blocks.append(
            Block(row["lut_key"], row["block"], block_ops(row), int(row["macs"]), latency)
        )
    return blocks
