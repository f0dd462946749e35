"""The built-in models written as ordinary linen modules (``autocomp.models.zoo``) go through the
own-model front end and come out as the op-tuple path sees them."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from autocomp.devices.tables import load_profile
from autocomp.models import zoo
from autocomp.models.layers import compressible_layers
from autocomp.models.linen import LinenNetwork
from autocomp.models.ops import base_ops
from autocomp.run import compose
from autocomp.search.space import CHANNELS, build_search_space
from autocomp.techniques import make_techniques

MODELS = {
    "lenet_digits": zoo.LeNetDigits,
    "lenet5": zoo.LeNet5,
    "audio_cnn": zoo.AudioCnn,
    "vgg_cifar": zoo.VggCifar,
    "resnet20": zoo.ResNet20,
    "mobilenet_v1": zoo.MobileNetV1,
}


# the sequential ones without batch norm are like lenet_digits, and MobileNet-V1 (30 s) is
# like resnet20 with depthwise convs: slow run only
SLOW = {"lenet5", "audio_cnn", "mobilenet_v1"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(MODELS)]
)
def test_a_built_in_model_as_a_linen_module_is_seen_as_its_op_list(name):
    cfg = compose([f"model={name}"]).model
    shape = tuple(cfg.input_shape)
    profile, keep = load_profile("analytic_cortex_a76"), make_techniques(["keep"])
    ops = base_ops(cfg)
    layers = compressible_layers(ops, shape)
    listed = build_search_space(ops, layers, keep, (0.0,), profile, shape)
    module = MODELS[name](num_classes=cfg.num_classes)
    x = np.zeros((1, *shape), np.float32)
    net = LinenNetwork(module, module.init(jax.random.key(0), x), x, {"train": False})
    traced = build_search_space(
        (), net.layers, keep, (0.0,), profile, shape, net.graph_priced(), net.num_groups
    )
    assert [(la.kind, la.in_shape, la.features) for la in net.layers] == [
        (la.kind, la.in_shape, la.features) for la in layers
    ]
    listed_cost = dict(zip(CHANNELS, listed.base, strict=True))
    traced_cost = dict(zip(CHANNELS, traced.base, strict=True))
    for channel in ("params", "bytes", "macs"):
        assert traced_cost[channel] == listed_cost[channel], channel
    # the traced graph also prices ResNet-20's zero-channel shortcut pad
    extra = 1.01 if name == "resnet20" else 1 + 1e-9
    assert (
        listed_cost["latency_ms"] - 1e-9
        <= traced_cost["latency_ms"]
        <= extra * listed_cost["latency_ms"]
    )
    roots = [la.index for la in net.layers if la.out_group >= 0]
    if name == "mobilenet_v1":  # the pointwise convs prune through their depthwise conv
        assert len(roots) == 14 and sum(la.out_group >= 0 for la in layers) == 1
    else:
        assert roots == [la.index for la in layers if la.out_group >= 0]
    if name == "resnet20":
        # every block's first conv is a group of its own (the stage's residual stream, whose
        # shortcuts pad channels with zeros, is pinned): a relu jitted once for many calls
        # must not carry one call's channels into another
        assert all(len(net.groups[net.layers[i].out_group].producers) == 1 for i in roots)
