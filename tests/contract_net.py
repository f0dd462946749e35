"""The small network every technique's contract is tested on (a helper module, not a test
module: tests/test_techniques.py, test_costs.py and test_export.py import it)."""

from autocomp.config import LayerConfig, ModelConfig
from autocomp.models.layers import compressible_layers
from autocomp.models.ops import base_ops
from autocomp.techniques import REGISTRY, make_techniques

# A strided conv, a conv after it, a dense head over a flattened map and a classifier: every
# technique fits at least one of them.
CONTRACT_LAYERS = [
    LayerConfig("conv", "conv1", 8, 3),
    LayerConfig("conv", "conv2", 16, 3, stride=2),
    LayerConfig("flatten"),
    LayerConfig("dense", "fc1", 32),
    LayerConfig("dense", "fc2", 10, activation="none"),
]
MODEL = ModelConfig("contract_net", [8, 8, 1], 10, CONTRACT_LAYERS)
OPS = base_ops(MODEL)
LAYERS = compressible_layers(OPS, (8, 8, 1))
# Every registered technique, and one quantized at a width that is not registered.
TECHS = make_techniques([*REGISTRY, "magnitude+q4"])
RATIOS = (0.0, 0.25, 0.5, 0.75, 0.9)
