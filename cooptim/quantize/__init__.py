"""Post-training quantization to the hardware's fixed-point formats, and the integer forward pass.

Any trained model becomes a `QuantizedGraph` over its graph (`graph.py`: batch norm folded,
residual adds, pools, global pooling; what `emulate` runs). A sequential model (one with
`stages()`, see `cooptim.nn.models.Stage`) also becomes a `QuantizedNetwork` (bit for bit the
same integers, tested): plain NumPy integers and formats, the data the exporter writes and the C++
reference reads. Every scale is a power of two (`kernels.fixed_point.Format`: q * 2**-frac).

Per layer, with the formats of `hardware` (data_bits, weight_bits, acc_bits, weight_scale, rounding):
  input      int8 in `in_format` (the previous layer's output format; the first layer's is calibrated
             on the input images)
  weights    int8, `weight_frac` per output channel (or one per layer), masked by the method
  product    the exact integer sum over the layer's kept weights (and, for dynamic layers, only
             at active positions and channel groups; inactive outputs are 0), saturated to acc_bits
             (the kernels' fixed-point path: `kernels.nm`, `kernels.skip`)
  bias       int, at the accumulator's scale (in_frac + weight_frac[c]); added, then saturated to
             acc_bits again
  ReLU       max(acc, 0)
  requantize to `out_format` (shift right by acc_frac[c] - out_frac, round, saturate); the output
             format is calibrated on the float model's outputs, never finer than the accumulator
  pooling    average: the exact window sum shifted right by log2(window) with the same rounding
             (windows of 2**k elements only); max: the maximum
The last layer's output keeps `acc_bits` at the finest common scale min_c acc_frac[c], so the
logits of all classes are comparable (argmax) and nothing is lost to an 8-bit format.

Dynamic (DPACS) layers' gates are integer too: the spatial gate is on where the sum of the input
window times its int8 kernel plus its bias is > 0; the channel gate where the input's spatial sum
times its int8 weights plus bias x H x W is > 0 (the float model's mean, scaled by H x W).
"""

from cooptim.quantize.calibrate import accumulator_bits_needed, calibrate, check_accumulators, float_stages
from cooptim.quantize.graph import QuantizedGraph, QuantNode, calibrate_graph
from cooptim.quantize.network import (PATTERNS, Gate, QuantizationError, QuantizedNetwork, QuantLayer,
                                      gates_of, layer_forward)

__all__ = ["PATTERNS", "Gate", "QuantLayer", "QuantNode", "QuantizedGraph", "calibrate_graph", "QuantizationError", "QuantizedNetwork", "accumulator_bits_needed",
           "calibrate", "check_accumulators", "float_stages", "gates_of", "layer_forward"]
