"""Post-training quantization to the hardware's fixed-point formats, and the integer forward pass.

Any trained model becomes a `QuantizedGraph` over its graph (`graph.py`: batch norm folded,
residual adds, pools, global pooling, grouped convs): plain NumPy integers and formats, what
`emulate` runs, the exporter writes and the C++ reference reads. Every scale is a power of two
(`kernels.fixed_point.Format`: q * 2**-frac).

Per conv / dense node, with the formats of `hardware` (data_bits, weight_bits, acc_bits, weight_scale, rounding):
  input      int8 in `in_format` (the previous layer's output format; the first layer's is calibrated
             on the input images)
  weights    int8, `weight_frac` per output channel (or one per layer), masked by the method
  product    the exact integer sum over the layer's kept weights (and, for dynamic layers, only
             at active positions and channel groups; inactive outputs are 0), saturated to acc_bits
             (the kernels' fixed-point path: `kernels.nm`, `kernels.skip`)
  bias       int, at the accumulator's scale (in_frac + weight_frac[c]); added, then saturated to
             acc_bits again
  ReLU       max(acc, 0), when a ReLU is the node's only reader (fused)
  requantize to `out_format` (shift right by acc_frac[c] - out_frac, round, saturate); the output
             format is calibrated on the float model's outputs, never finer than the accumulator
The last layer's output keeps `acc_bits` at the finest common scale min_c acc_frac[c], so the
logits of all classes are comparable (argmax) and nothing is lost to an 8-bit format.

Dynamic (DPACS) layers' gates are integer too: the spatial gate is on where the sum of the input
window times its int8 kernel plus its bias is > 0; the channel gate where the input's spatial sum
times its int8 weights plus bias x H x W is > 0 (the float model's mean, scaled by H x W).
"""

from cooptim.quantize.graph import (QuantizedGraph, QuantNode, accumulator_bits_needed, calibrate_graph,
                                    check_accumulators)
from cooptim.quantize.network import (PATTERNS, Gate, QuantizationError, QuantLayer, gates_of, im2col,
                                      layer_forward)

__all__ = ["PATTERNS", "Gate", "QuantLayer", "QuantNode", "QuantizationError", "QuantizedGraph",
           "accumulator_bits_needed", "calibrate_graph", "check_accumulators", "gates_of", "im2col", "layer_forward"]
