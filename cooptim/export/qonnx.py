"""The quantized network as a QONNX model: standard ONNX operators on floats that are exact
fixed-point values, with QONNX `Quant` nodes where cooptim rounds and saturates.

Every value in the model is an integer times a power of two, so float32 arithmetic is exact as long
as no sum needs more than 24 significant bits (`exactness_problems` checks the test vectors), and
the model computes cooptim's integer emulation (`QuantizedGraph.forward`) bit for bit:

  input        Quant(data_bits, 2**-in_frac): the quantized image (ROUND; the test vectors are on
               the grid already)
  conv, dense  Conv / MatMul + Add with the pruned weights as zeros, each weight at its channel's
               power-of-two scale and a weight Quant at the layer's finest one (weight_bits plus
               the spread of the per-channel scales: the same values, one layer-wide format); the
               bias at the accumulator's scale; the fused ReLU; then Quant to the output format
  relu / relu6 Relu / relu(x) - relu(x - 6 in the format) (hls4ml has no ONNX Clip)
  max_pool     MaxPool (ONNX pads with -inf: cooptim pads with the format's minimum, the same max)
  avg_pool     a depthwise Conv of weights 1 / window**2 (cooptim's exact window sum and shift)
  global_pool  a depthwise Conv over H x W of weights round(2**16 / (H W)) * 2**-16 (cooptim's
               fixed-point reciprocal)
  add          each input requantized to the output format (a depthwise identity Conv where it
               rounds), Add, Quant (saturation)
  subsample    a strided 1x1 Conv of identity weights, zero rows for the padded channels
  HASS         an input threshold: ThresholdedRelu(t) on inputs that are never negative (after a
               ReLU), else x * (|x| > t) as Abs, Greater, Cast, Mul
  DPACS        the gates as convs, their thresholds as relu(l) - relu(l - step) (`_gate_masks`),
               the products masked (Mul) before the bias (cooptim's inactive outputs are the bias
               alone)

Rounding. cooptim's `floor` is QONNX's FLOOR and `half_even` its ROUND (NumPy's round, to even).
cooptim's default `half_up` rounds a half towards +infinity, floor(x + 1/2), which no QONNX
rounding mode is (its HALF_UP rounds away from zero); so half an output step is added to the bias
of the linear operator before every rounding Quant, which then floors. ReLU between them keeps this
exact (relu(a + h) floors to relu(a) + h's floor for every a; see `_rounding_bias`).
"""

from __future__ import annotations

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # optional: the `qonnx` extra
    onnx = None

from cooptim.export.common import ExportError
from cooptim.quantize import QuantizedGraph, QuantLayer
from cooptim.quantize.graph import GLOBAL_POOL_SHIFT, relu6_limit
from cost_models.graph import INPUT
from kernels import fixed_point as fp

QONNX_DOMAIN = "qonnx.custom_op.general"
OPSET = 13
INPUT_NAME, OUTPUT_NAME = "global_in", "global_out"
FLOAT_MANTISSA_BITS = 24


class _Builder:
    """Collects nodes and initializers; names every tensor after the cooptim node it belongs to."""

    def __init__(self, rounding: str):
        self.rounding = rounding
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    def constant(self, name: str, value) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def _unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def node(self, op: str, inputs: list[str], name: str, *, domain: str = "", **attributes) -> str:
        """Appends an `op` node whose one output tensor is named after the node."""
        name = self._unique(name)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, domain=domain, **attributes))
        return name

    def quant(self, x: str, frac: int, bits: int, name: str, *, rounding: str | None = None) -> str:
        """QONNX Quant: saturate to `bits` signed integers at scale 2**-frac, rounding as `rounding`
        (default: the network's, FLOOR for half_up whose half step was added before)."""
        mode = rounding or ("ROUND" if self.rounding == "half_even" else "FLOOR")
        return self.node("Quant", [x, self.constant(f"{name}_scale", 2.0 ** -frac), self.constant(f"{name}_zeropt", 0.0),
                                   self.constant(f"{name}_bitwidth", float(bits))],
                         name, domain=QONNX_DOMAIN, signed=1, narrow=0, rounding_mode=mode)

    def rename(self, tensor: str, name: str) -> str:
        """Gives a node's output tensor another name (the graph's output), everywhere it is read."""
        for node in self.nodes:
            node.output[:] = [name if o == tensor else o for o in node.output]
            node.input[:] = [name if i == tensor else i for i in node.input]
        return name

    def half_step(self, out_frac: int) -> float:
        """What a linear operator adds to its bias before a rounding Quant (half_up only)."""
        return 2.0 ** -(out_frac + 1) if self.rounding == "half_up" else 0.0


def _conv_weight(layer: QuantLayer) -> np.ndarray:
    """The layer's weight as ONNX's (C_out, C_in / groups, K_h, K_w) floats at each channel's scale."""
    kh, kw = layer.kernel
    w = layer.weight.astype(np.float64).reshape(kh, kw, -1, layer.weight.shape[1]).transpose(3, 2, 0, 1)
    return w * 2.0 ** -layer.weight_frac.astype(np.float64)[:, None, None, None]


def _weight_quant(b: _Builder, weight: np.ndarray, layer: QuantLayer, bits: int) -> str:
    """The weight initializer behind a Quant at the layer's finest scale, wide enough for all channels."""
    finest, coarsest = int(layer.weight_frac.max()), int(layer.weight_frac.min())
    return b.quant(b.constant(f"{layer.name}_weight", weight), finest, bits + finest - coarsest,
                   f"{layer.name}_weight_quant", rounding="ROUND")


def _rounding_bias(b: _Builder, layer: QuantLayer) -> np.ndarray:
    """The bias at the accumulator's scale, plus half an output step where requantizing rounds:
    relu(acc + h) then floor equals floor(relu(acc) + h) for every acc (for acc < 0 both are 0, as
    0 <= relu(acc + h) < h is half a step), so the fused ReLU may come between."""
    bias = layer.bias.astype(np.float64) * 2.0 ** -layer.acc_frac.astype(np.float64)
    return bias + b.half_step(layer.out_format.frac) * (layer.acc_frac > layer.out_format.frac)


def non_negative(net: QuantizedGraph, name: str) -> bool:
    """Whether node `name`'s output is never negative (after a ReLU, through pools and adds)."""
    if name == INPUT:
        return False
    node = net.node(name)
    if node.layer is not None:
        return node.layer.relu
    if node.op in ("relu", "relu6", "fused_relu"):
        return True
    if node.op in ("split", "max_pool", "avg_pool", "global_pool", "subsample", "add"):
        return all(non_negative(net, i) for i in node.inputs)
    return False


def _input_threshold(b: _Builder, x: str, layer: QuantLayer, non_negative: bool) -> str:
    """HASS's zeroing of inputs with |x| <= t: ThresholdedRelu where the input is never negative
    (then the same function, and one hls4ml has), else Abs, Greater, Cast and Mul."""
    if layer.activation_threshold <= 0:
        return x
    threshold = layer.activation_threshold * 2.0 ** -layer.in_format.frac
    if non_negative:
        return b.node("ThresholdedRelu", [x], f"{layer.name}_thresholded", alpha=threshold)
    limit = b.constant(f"{layer.name}_threshold", threshold)
    keep = b.node("Cast", [b.node("Greater", [b.node("Abs", [x], f"{layer.name}_abs"), limit], f"{layer.name}_kept")],
                  f"{layer.name}_keep", to=TensorProto.FLOAT)
    return b.node("Mul", [x, keep], f"{layer.name}_thresholded")


def _on_step(b: _Builder, logit: str, channels: int, step: float, name: str) -> str:
    """`step` where the `logit` (a multiple of `step`) is > 0, else 0: relu(logit) - relu(logit -
    step), a gate's threshold in the operators hls4ml has (it has no Greater)."""
    shifted = _depthwise(b, logit, f"{name}_minus_step", channels, (1, 1), 1, 0, 1.0, -step)
    return b.node("Sub", [b.node("Relu", [logit], f"{name}_low"), b.node("Relu", [shifted], f"{name}_high")],
                  f"{name}_on")


def _gate_masks(b: _Builder, x: str, layer: QuantLayer) -> list[str]:
    """DPACS's integer gates (`quantize.gates_of`) as 0/1 masks of the products' shape (1, C_out,
    H', W'), in Conv, Relu and Sub only, so that hls4ml takes them too:
      spatial  the gate's K x K conv (one output channel, the layer's stride and padding) gives the
               logit; its threshold; a 1 x 1 conv of weights 1 / step spreads it over C_out
      channel  a depthwise H x W conv sums each input channel; a 1 x 1 conv gives every output
               channel its group's logit (bias times H W, as cooptim's mean); its threshold; a
               depthwise H' x W' conv of ones on that 1 x 1 map, padded H' - 1 and W' - 1 on every
               side, copies it to every output position, scaled by 1 / step."""
    gate, masks = layer.gate, []
    in_scale = 2.0 ** -layer.in_format.frac
    (pt, pb), (pl, pr) = layer.padding
    out_h, out_w, c_out = layer.out_shape
    if gate.spatial_weight is not None:
        kh, kw = layer.kernel
        step = in_scale * 2.0 ** -gate.spatial_frac
        w = gate.spatial_weight.astype(np.float64).reshape(kh, kw, -1).transpose(2, 0, 1)[None]
        logit = b.node("Conv", [x, b.constant(f"{layer.name}_spatial_weight", w * 2.0 ** -gate.spatial_frac),
                                b.constant(f"{layer.name}_spatial_bias", [gate.spatial_bias * step])],
                       f"{layer.name}_spatial_logit", kernel_shape=[kh, kw], strides=list(layer.stride),
                       pads=[pt, pl, pb, pr], dilations=[1, 1], group=1)
        on = _on_step(b, logit, 1, step, f"{layer.name}_spatial")
        masks.append(b.node("Conv", [on, b.constant(f"{layer.name}_spatial_spread", np.full((c_out, 1, 1, 1), 1 / step))],
                            f"{layer.name}_spatial", kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0],
                            dilations=[1, 1], group=1))
    if gate.channel_weight is not None:
        h, w_, c_in = layer.in_shape
        step = in_scale * 2.0 ** -gate.channel_frac
        total = _depthwise(b, x, f"{layer.name}_channel_sum", c_in, (h, w_), 1, 0, 1.0, 0.0)
        weight = np.repeat(gate.channel_weight.astype(np.float64), gate.group, axis=1)  # (C_in, C_out)
        logit = b.node("Conv", [total, b.constant(f"{layer.name}_channel_weight",
                                                  weight.T[:, :, None, None] * 2.0 ** -gate.channel_frac),
                                b.constant(f"{layer.name}_channel_bias",
                                           np.repeat(gate.channel_bias, gate.group) * (h * w_) * step)],
                       f"{layer.name}_channel_logit", kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0],
                       dilations=[1, 1], group=1)
        on = _on_step(b, logit, c_out, step, f"{layer.name}_channel")
        masks.append(_depthwise(b, on, f"{layer.name}_channel", c_out, (out_h, out_w), 1, (out_h - 1, out_w - 1),
                                1 / step, 0.0))
    return masks


def _conv(b: _Builder, x: str, layer: QuantLayer, weight_bits: int, non_negative: bool) -> str:
    x = _input_threshold(b, x, layer, non_negative)
    (pt, pb), (pl, pr) = layer.padding
    attributes = dict(kernel_shape=list(layer.kernel), strides=list(layer.stride), pads=[pt, pl, pb, pr],
                      dilations=[1, 1], group=layer.groups)
    weight = _weight_quant(b, _conv_weight(layer), layer, weight_bits)
    if layer.gate is None:
        return b.node("Conv", [x, weight, b.constant(f"{layer.name}_bias", _rounding_bias(b, layer))], layer.name,
                      **attributes)
    y = b.node("Conv", [x, weight], f"{layer.name}_products", **attributes)
    for mask in _gate_masks(b, x, layer):
        y = b.node("Mul", [y, mask], f"{mask}_applied")
    # the bias after the masks (cooptim's inactive outputs are the bias alone), as a depthwise conv
    return _depthwise(b, y, layer.name, layer.out_shape[2], (1, 1), 1, 0, 1.0, _rounding_bias(b, layer))


def _dense(b: _Builder, x: str, layer: QuantLayer, source_shape: tuple, weight_bits: int,
           non_negative: bool) -> str:
    weight = layer.weight.astype(np.float64)
    if len(source_shape) == 3:  # cooptim flattens (H, W, C); ONNX's Flatten of NCHW gives (C, H, W)
        h, w, c = source_shape
        weight = weight.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
        x = b.node("Flatten", [x], f"{layer.name}_flatten", axis=1)
    x = _input_threshold(b, x, layer, non_negative)
    weight = weight * 2.0 ** -layer.weight_frac.astype(np.float64)[None, :]
    product = b.node("MatMul", [x, _weight_quant(b, weight, layer, weight_bits)], f"{layer.name}_matmul")
    return b.node("Add", [product, b.constant(f"{layer.name}_bias", _rounding_bias(b, layer))], layer.name)


def _depthwise(b: _Builder, x: str, name: str, channels: int, kernel: tuple[int, int], stride: int,
               padding: int | tuple[int, int], tap: float, bias) -> str:
    """A depthwise conv of equal weights `tap` and a bias (a constant or one per channel): pools,
    requantizations, sums and copies; `padding` on every side (rows, columns)."""
    kh, kw = kernel
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return b.node("Conv", [x, b.constant(f"{name}_weight", np.full((channels, 1, kh, kw), tap)),
                           b.constant(f"{name}_bias", np.broadcast_to(bias, (channels,)))],
                  name, kernel_shape=[kh, kw], strides=[stride, stride], pads=[ph, pw, ph, pw], dilations=[1, 1],
                  group=channels)


def _requantized(b: _Builder, x: str, source: fp.Format, target: fp.Format, channels: int, name: str) -> str:
    """x (in `source`) in `target`'s step, wide: a rounding shift where the target is coarser."""
    if source.frac > target.frac:
        x = _depthwise(b, x, f"{name}_round", channels, (1, 1), 1, 0, 1.0, b.half_step(target.frac))
        return b.quant(x, target.frac, 32, f"{name}_requantized")
    return x  # a finer target holds the value exactly


def qonnx_model(net: QuantizedGraph, *, weight_bits: int, name: str = "cooptim") -> onnx.ModelProto:
    """The QONNX model of `net` (batch 1, NCHW), computing its integer forward pass in floats."""
    if onnx is None:
        raise ExportError("the QONNX export needs onnx and qonnx (pip install 'cooptim[qonnx]')")
    b = _Builder(net.rounding)
    h, w, c = net.input_shape
    values = {INPUT: b.quant(INPUT_NAME, net.input_format.frac, net.input_format.bits, "input_quant", rounding="ROUND")}
    for node in net.nodes:
        x = values[node.inputs[0]]
        fmt, source_shape = node.out_format, net.shape(node.inputs[0])
        if node.layer is not None:
            layer = node.layer
            unsigned_input = non_negative(net, node.inputs[0])
            y = (_conv(b, x, layer, weight_bits, unsigned_input) if layer.kind == "conv"
                 else _dense(b, x, layer, source_shape, weight_bits, unsigned_input))
            if layer.relu:
                y = b.node("Relu", [y], f"{node.name}_relu")
            y = b.quant(y, fmt.frac, fmt.bits, f"{node.name}_quant")
        elif node.op in ("split", "fused_relu"):
            y = x
        elif node.op == "relu":
            y = b.node("Relu", [x], node.name)
        elif node.op == "relu6":
            # min(max(x, 0), six) = relu(x) - relu(x - six): Relu, a depthwise conv of bias -six and
            # Sub, which hls4ml has (it has no ONNX Clip), exact in the wide types
            six = relu6_limit(fmt) * 2.0 ** -fmt.frac
            shifted = _depthwise(b, x, f"{node.name}_minus_six", source_shape[2], (1, 1), 1, 0, 1.0, -six)
            y = b.node("Sub", [b.node("Relu", [x], f"{node.name}_low"), b.node("Relu", [shifted], f"{node.name}_high")],
                       node.name)
        elif node.op == "max_pool":
            y = b.node("MaxPool", [x], node.name, kernel_shape=[node.window] * 2, strides=[node.stride] * 2,
                       pads=[node.padding] * 4)
        elif node.op == "avg_pool":
            y = _depthwise(b, x, node.name, source_shape[2], (node.window, node.window), node.stride, node.padding,
                           1.0 / node.window ** 2, b.half_step(fmt.frac))
            y = b.quant(y, fmt.frac, fmt.bits, f"{node.name}_quant")
        elif node.op == "global_pool":
            hh, ww, cc = source_shape
            reciprocal = round(2 ** GLOBAL_POOL_SHIFT / (hh * ww)) * 2.0 ** -GLOBAL_POOL_SHIFT
            y = _depthwise(b, x, node.name, cc, (hh, ww), 1, 0, reciprocal, b.half_step(fmt.frac))
            y = b.quant(y, fmt.frac, fmt.bits, f"{node.name}_quant")
        elif node.op == "add":
            terms = [_requantized(b, values[i], net.format(i), fmt, node.out_shape[2], f"{node.name}_in{k}")
                     for k, i in enumerate(node.inputs)]
            y = b.quant(b.node("Add", terms, node.name), fmt.frac, fmt.bits, f"{node.name}_quant")
        elif node.op == "subsample":
            c_in, c_out = source_shape[2], node.out_shape[2]
            identity = np.eye(c_out, c_in)[:, :, None, None]  # zero rows: the padded channels
            y = b.node("Conv", [x, b.constant(f"{node.name}_weight", identity)], node.name, kernel_shape=[1, 1],
                       strides=[node.stride] * 2, pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
        else:
            raise ExportError(f"node {node.name!r}: no QONNX form of {node.op!r}")
        values[node.name] = y
    out = net.output
    out_shape = [1, *([out.out_shape[2], *out.out_shape[:2]] if len(out.out_shape) == 3 else out.out_shape)]
    final = b.rename(values[out.name], OUTPUT_NAME)
    graph = helper.make_graph(
        b.nodes, name, [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info(final, TensorProto.FLOAT, out_shape)], initializer=b.initializers)
    model = helper.make_model(graph, producer_name="cooptim",
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)])
    model.ir_version = 8
    return model


def to_nchw(images_q: np.ndarray, fmt: fp.Format) -> np.ndarray:
    """cooptim's integer NHWC input vectors as the QONNX model's float NCHW input."""
    return (images_q.astype(np.float64) * 2.0 ** -fmt.frac).astype(np.float32).transpose(0, 3, 1, 2)


def exactness_problems(net: QuantizedGraph, trace: dict) -> list[str]:
    """Where the QONNX model could differ from cooptim on these vectors (`net.forward`'s trace): an
    accumulator that needs more significant bits than float32 has, or one that saturates at
    acc_bits (the model has no accumulator saturation; cooptim's calibration avoids it)."""
    problems = []
    for node in net.nodes:
        if node.layer is None:
            continue
        largest = int(trace[node.name]["acc_max"])
        spread = int(node.layer.weight_frac.max() - node.layer.weight_frac.min())
        bits = max(largest, 1).bit_length() + spread
        if bits > FLOAT_MANTISSA_BITS:
            problems.append(f"node {node.name!r}: its accumulator needs {bits} significant bits, more than float32's 24")
        if largest > fp.Format(node.layer.acc_bits, 0).max_int:
            problems.append(f"node {node.name!r}: its accumulator saturates at acc_bits={node.layer.acc_bits}")
    return problems
