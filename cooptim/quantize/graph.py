"""Post-training quantization over the model's graph (`cooptim.nn.graph_of`), and its integer
forward pass: residual and branching networks in the hardware's fixed point.

Every node of the graph becomes a `QuantNode` (see `cooptim.quantize` for the formats):
  conv, dense  a `QuantLayer` (its batch norm folded into the weights and the bias:
               w * gamma / sqrt(var + eps), b * that + beta - mean * that); a ReLU that is the
               conv's only reader is fused (applied to the accumulator, as the hardware does)
  relu, relu6  max(x, 0), min(max(x, 0), 6 in the input's format); same format
  max_pool     the window maximum (padding at the format's minimum); same format
  avg_pool     the exact window sum (zero padding) shifted right by log2(window) (2**k windows)
  global_pool  the sum over H x W times round(2**16 / (H W)), shifted right by 16 with the
               hardware's rounding (a fixed-point reciprocal: exact when H W is a power of two)
  add          both inputs shifted to the output format (calibrated on the float sum, never finer
               than the finer input), added, saturated to data_bits
  subsample    every stride-th pixel, channels zero-padded; split: the same tensor to each reader
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

import cost_models as cm
from cooptim.config import HardwareConfig
from cooptim.nn.blocks import trace_graph
from cooptim.nn.layers import SparseLayer
from cooptim.quantize.calibrate import _check_formats, _layer_call, quant_layer
from cooptim.quantize.network import QuantizationError, QuantLayer, layer_forward
from cost_models.graph import INPUT
from kernels import fixed_point as fp

GLOBAL_POOL_SHIFT = 16  # bits of global average pooling's fixed-point reciprocal of H x W


@dataclasses.dataclass(frozen=True)
class QuantNode:
    """One node in fixed point. `layer`: a conv or dense node's weights and formats; `window`,
    `stride`, `padding`: a pool's (or a subsample's stride); `pad_channels`: a subsample's."""

    name: str
    op: str  # conv dense relu relu6 fused_relu max_pool avg_pool global_pool add subsample split
    inputs: tuple[str, ...]
    out_shape: tuple
    out_format: fp.Format
    layer: QuantLayer | None = None
    window: int = 1
    stride: int = 1
    padding: int = 0
    pad_channels: int = 0
    input_fracs: tuple[int, ...] = ()  # an add's inputs' formats (their fractional bits)


@dataclasses.dataclass(frozen=True)
class QuantizedGraph:
    nodes: tuple[QuantNode, ...]
    input_shape: tuple
    input_format: fp.Format
    rounding: str

    @property
    def layers(self) -> tuple[QuantLayer, ...]:
        """The conv and dense nodes' layers, in order."""
        return tuple(n.layer for n in self.nodes if n.layer is not None)

    @property
    def output(self) -> QuantNode:
        return self.nodes[-1]

    def node(self, name: str) -> QuantNode:
        return next(n for n in self.nodes if n.name == name)

    def shape(self, name: str) -> tuple:
        """The shape of node `name`'s output (or of the graph's input, INPUT)."""
        return tuple(self.input_shape) if name == INPUT else tuple(self.node(name).out_shape)

    def format(self, name: str) -> fp.Format:
        """The fixed-point format of node `name`'s output (or of the graph's input, INPUT)."""
        return self.input_format if name == INPUT else self.node(name).out_format

    def readers(self, name: str) -> list[str]:
        return [n.name for n in self.nodes if name in n.inputs]

    def quantize_input(self, images) -> np.ndarray:
        """Float images (B, H, W, C) -> integers in the input format (rounded, saturated)."""
        return np.asarray(fp.quantize(images, self.input_format, rounding=self.rounding))

    def forward(self, x_q: np.ndarray, *, exact: bool = False) -> tuple[np.ndarray, dict[str, dict]]:
        """The integer forward pass: (the output node's integers, {node: {"output", "saturated",
        and for conv/dense "acc_max"}}). exact=True skips the accumulators' saturation."""
        values, trace = {INPUT: np.asarray(x_q)}, {}
        for node in self.nodes:
            out, info = node_forward(node, [values[i] for i in node.inputs], self.rounding, exact=exact)
            values[node.name] = out
            trace[node.name] = {**info, "output": out}
        return values[self.nodes[-1].name], trace


# ------------------------------------------------------------------------------ integer nodes


def relu6_limit(fmt: fp.Format) -> int:
    """ReLU6's upper clip in `fmt`'s integers: 6, or the format's largest value if 6 does not fit."""
    return min(6 << fmt.frac if fmt.frac >= 0 else 6 >> -fmt.frac, fmt.max_int)


def _windows(x: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(B, H', W', C, window, window) views of x's sliding windows."""
    views = np.lib.stride_tricks.sliding_window_view(x, (window, window), axis=(1, 2))
    return views[:, ::stride, ::stride]


def node_forward(node: QuantNode, inputs: list[np.ndarray], rounding: str, *, exact: bool = False):
    """One node in integers: (output, {"saturated": count, ...})."""
    fmt, x = node.out_format, inputs[0]
    if node.layer is not None:
        return layer_forward(node.layer, x, exact=exact)
    if node.op in ("split", "fused_relu"):
        return x, {"saturated": 0}
    if node.op == "relu":
        return np.maximum(x, 0).astype(x.dtype), {"saturated": 0}
    if node.op == "relu6":
        six = relu6_limit(fmt)
        return np.clip(x, 0, six).astype(x.dtype), {"saturated": int((x > six).sum())}
    if node.op == "subsample":
        y = x[:, :: node.stride, :: node.stride, :]
        return np.pad(y, ((0, 0), (0, 0), (0, 0), (0, node.pad_channels))), {"saturated": 0}
    if node.op in ("max_pool", "avg_pool"):
        p = node.padding
        fill = fmt.min_int if node.op == "max_pool" else 0
        padded = np.pad(x.astype(np.int64), ((0, 0), (p, p), (p, p), (0, 0)), constant_values=fill)
        windows = _windows(padded, node.window, node.stride)
        if node.op == "max_pool":
            return windows.max(axis=(-2, -1)).astype(x.dtype), {"saturated": 0}
        total = windows.sum(axis=(-2, -1))
        shift = int(math.log2(node.window ** 2))
        return np.asarray(fp.shift_round(jnp.asarray(total, jnp.int32), shift, rounding)).astype(x.dtype), {"saturated": 0}
    if node.op == "global_pool":
        h, w = x.shape[1:3]
        total = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
        reciprocal = round(2 ** GLOBAL_POOL_SHIFT / (h * w))
        mean = fp.shift_round(jnp.asarray(total * reciprocal, jnp.int32), GLOBAL_POOL_SHIFT, rounding)
        return np.asarray(mean).astype(x.dtype), {"saturated": 0}
    if node.op == "add":
        total = np.zeros(x.shape, np.int64)
        for value, source_frac in zip(inputs, node.input_fracs):
            total += np.asarray(fp.shift_round(jnp.asarray(value, jnp.int32), source_frac - fmt.frac, rounding))
        out = np.clip(total, fmt.min_int, fmt.max_int)
        saturated = int(((total < fmt.min_int) | (total > fmt.max_int)).sum())
        return out.astype(np.dtype(fmt.dtype)), {"saturated": saturated}
    raise QuantizationError(f"node {node.name!r}: no integer implementation of {node.op!r}")


# ------------------------------------------------------------------------------ calibration


def _bn_fold(norm) -> tuple[np.ndarray, np.ndarray]:
    """A batch norm (inference statistics) as (scale, shift) per channel."""
    scale = np.asarray(norm.scale[...]) / np.sqrt(np.asarray(norm.var[...]) + norm.epsilon)
    return scale, np.asarray(norm.bias[...]) - np.asarray(norm.mean[...]) * scale


def float_nodes(builder, graph: cm.Graph, images: np.ndarray) -> dict[str, np.ndarray]:
    """The float model run node by node over the graph (batch norm in inference mode, folded
    into its conv): {node: output}, a dense node's input flattened. Each sparse layer runs
    compiled (one program per layer, not one per operation)."""
    values = {INPUT: jnp.asarray(images)}
    for node in graph.nodes:
        inputs = [values[i] for i in node.inputs]
        op = builder.ops.get(node.name)
        if isinstance(node.layer, cm.Split):
            y = inputs[0]
        elif isinstance(op, SparseLayer):
            x = inputs[0]
            y = _layer_call(op, x.reshape(x.shape[0], -1) if isinstance(node.layer, cm.Dense) else x)
            if node.name in builder.folded:
                scale, shift = _bn_fold(builder.folded[node.name])
                y = y * scale + shift
        elif isinstance(node.layer, cm.Elementwise) and node.layer.op == "add":
            y = sum(inputs[1:], inputs[0])
        else:
            y = op(inputs[0])
        if isinstance(node.layer, cm.GlobalPool):
            y = y.reshape(y.shape[0], 1, 1, -1)
        values[node.name] = y
    return {k: np.asarray(v) for k, v in values.items()}


def _op(layer) -> str:
    op = cm.graph.op_name(layer)
    if isinstance(layer, cm.Elementwise) and op not in ("relu", "relu6", "add"):
        raise QuantizationError(f"node {layer.name!r}: no fixed-point implementation of {op!r}")
    return op


def calibrate_graph(model, images: np.ndarray, hw: HardwareConfig) -> QuantizedGraph:
    """Quantizes a trained model, any graph, to `hw`'s formats, calibrated on `images` ((N, H, W,
    C) float32). Raises QuantizationError naming the node (formats over 8 bits, an op without a
    fixed-point form, an accumulator too narrow for the calibrated range)."""
    _check_formats(hw)
    builder = trace_graph(model, tuple(images.shape[1:]))
    graph = builder.build()
    for layer in graph.layers:  # before any work
        module = builder.ops.get(layer.name)
        if (isinstance(layer, cm.Conv2D) and layer.groups != 1
                and module.current_method().pattern().kind == "dynamic"):
            raise QuantizationError(f"node {layer.name!r}: dynamic gating of a grouped convolution has no "
                                    f"fixed-point form (gate it on an ungrouped conv)")
    floats = float_nodes(builder, graph, images)
    readers = {name: graph.readers(name) for name in graph.names}
    data = lambda frac: fp.Format(hw.data_bits, frac)
    in_format = data(fp.frac_for_range(float(np.abs(images).max()), hw.data_bits))
    formats, nodes, fused = {INPUT: in_format}, [], set()
    for node in graph.nodes:
        layer, op = node.layer, _op(node.layer)
        source_format = formats[node.inputs[0]]
        common = dict(name=node.name, inputs=node.inputs, out_shape=tuple(cm.graph.out_shape(layer)))
        if op in ("conv", "dense"):
            after = readers[node.name]
            sole_reader = _op(graph.node(after[0]).layer) if len(after) == 1 else None
            relu = sole_reader == "relu"
            # a ReLU / ReLU6 that is the only reader bounds what the output format must hold: values
            # past the format saturate and the activation clips them anyway (ReLU6 at 6 <= max)
            calibration = floats[after[0]] if sole_reader in ("relu", "relu6") else floats[node.name]
            module = builder.ops[node.name]
            in_shape = graph.shape(node.inputs[0])
            fold = _bn_fold(builder.folded[node.name]) if node.name in builder.folded else None
            q = quant_layer(module, source_format, in_shape, common["out_shape"], calibration, hw,
                            last=node.name == graph.output, relu=relu, fold=fold)
            if relu:
                fused.add(after[0])
            nodes.append(QuantNode(op=op, out_format=q.out_format, layer=q, **common))
        elif op == "relu" and node.name in fused:
            nodes.append(QuantNode(op="fused_relu", out_format=source_format, **common))
        elif op == "add":
            fracs = tuple(formats[i].frac for i in node.inputs)
            calibrated = fp.frac_for_range(float(np.abs(floats[node.name]).max()), hw.data_bits)
            nodes.append(QuantNode(op=op, out_format=data(min(calibrated, max(fracs))), input_fracs=fracs, **common))
        elif op in ("max_pool", "avg_pool"):
            (k, _), (s, _), ((p, _), _) = layer.kernel, layer.stride, layer.padding
            if op == "avg_pool" and (k * k) & (k * k - 1):
                raise QuantizationError(f"node {node.name!r}: average pooling over {k}x{k} is not a shift "
                                        f"(windows of 2**k elements only)")
            nodes.append(QuantNode(op=op, out_format=source_format, window=k, stride=s, padding=p, **common))
        elif op == "subsample":
            nodes.append(QuantNode(op=op, out_format=source_format, stride=layer.stride,
                                   pad_channels=layer.out_channels - layer.in_shape[2], **common))
        else:  # relu, relu6, global_pool, split: the input's format
            nodes.append(QuantNode(op=op, out_format=source_format, **common))
        formats[node.name] = nodes[-1].out_format
    net = QuantizedGraph(tuple(nodes), tuple(images.shape[1:]), in_format, hw.rounding)
    check_accumulators(net, images)
    return net


def _accumulator_ranges(net: QuantizedGraph, images: np.ndarray) -> dict[str, int]:
    """Per conv / dense node, the largest |accumulator + bias| (or |bias|) over `images`, exactly."""
    _, trace = net.forward(net.quantize_input(images), exact=True)
    return {node.name: max(trace[node.name]["acc_max"], int(np.abs(node.layer.bias).max(initial=0)))
            for node in net.nodes if node.layer is not None}


def accumulator_bits_needed(net: QuantizedGraph, images: np.ndarray) -> list[int]:
    """Per conv / dense node (in order), the accumulator bits the images need."""
    return [largest.bit_length() + 1 for largest in _accumulator_ranges(net, images).values()]


def check_accumulators(net: QuantizedGraph, images: np.ndarray) -> None:
    """Every accumulator (and bias) fits acc_bits on `images`, else a QuantizationError naming the node."""
    for node_name, largest in _accumulator_ranges(net, images).items():
        node = net.node(node_name)
        needed = largest.bit_length() + 1
        if needed > node.layer.acc_bits:
            raise QuantizationError(
                f"node {node.name!r}: the accumulator needs {needed} bits for the calibrated range "
                f"(|acc| up to {largest:,}), but 'hardware.acc_bits' is {node.layer.acc_bits}: the format is "
                f"too narrow")
