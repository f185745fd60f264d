"""Post-training quantization to the hardware's fixed-point formats, and the integer forward pass.

A trained sequential model (one with `stages()`, see `cooptim.nn.models.Stage`) becomes a
`QuantizedNetwork`: plain NumPy integers and formats, the same data the exporter writes and the C++
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

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cooptim.config import HardwareConfig
from cooptim.sparsity.csp import cascade_lengths
from kernels import fixed_point as fp
from kernels import nm as nm_kernels
from kernels import skip as skip_kernels


class QuantizationError(ValueError):
    """A model or a format that the fixed-point path cannot represent (names the layer and key)."""


PATTERNS = ("dense", "unstructured", "nm", "balanced_group", "csp", "dynamic")


@dataclasses.dataclass(frozen=True)
class Gate:
    """A dynamic layer's integer gates (None where the gate is off: always active).

    spatial_weight: (K,) int8, in the layer's im2col order; spatial_bias: int at in_frac + spatial_frac.
    channel_weight: (C_in, G) int8; channel_bias: (G,) int at in_frac + channel_frac.
    """

    group: int
    spatial_weight: np.ndarray | None
    spatial_frac: int
    spatial_bias: int
    channel_weight: np.ndarray | None
    channel_frac: int
    channel_bias: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class QuantLayer:
    """One layer in fixed point.

    weight: (K, C_out) int8, the layer's im2col matrix (rows: kernel taps outermost, input channels
    fastest; a dense layer's rows are its inputs in NHWC-flattened order), zeros where pruned.
    """

    name: str
    kind: str  # "conv" | "dense"
    in_shape: tuple  # (H, W, C) for a conv, (K,) for a dense layer
    out_shape: tuple  # before pooling: (H', W', C_out) or (C_out,)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    pattern: str
    params: dict
    weight: np.ndarray
    weight_frac: np.ndarray  # (C_out,) int
    bias: np.ndarray  # (C_out,) int64, at acc_frac
    in_format: fp.Format
    out_format: fp.Format
    acc_bits: int
    rounding: str
    relu: bool
    pool: str | None
    pool_size: int
    lengths: np.ndarray | None = None  # csp: kept chunks per weight row
    gate: Gate | None = None
    activation_threshold: int = 0  # unstructured (HASS): inputs with |x| <= this are zeroed

    @property
    def acc_frac(self) -> np.ndarray:
        return self.in_format.frac + self.weight_frac

    @property
    def final_shape(self) -> tuple:
        """The output's shape after pooling."""
        if self.pool is None:
            return self.out_shape
        h, w, c = self.out_shape
        return (h // self.pool_size, w // self.pool_size, c)


@dataclasses.dataclass(frozen=True)
class QuantizedNetwork:
    layers: tuple[QuantLayer, ...]
    input_shape: tuple  # (H, W, C)

    @property
    def input_format(self) -> fp.Format:
        return self.layers[0].in_format

    def quantize_input(self, images) -> np.ndarray:
        """Float images (B, H, W, C) -> int8 in the input format (rounded, saturated)."""
        return np.asarray(fp.quantize(images, self.input_format, rounding=self.layers[0].rounding))

    def forward(self, x_q: np.ndarray, *, exact: bool = False) -> tuple[np.ndarray, list[dict]]:
        """The integer forward pass. x_q: (B, H, W, C) int8 in `input_format`.

        Returns (logits (B, classes) int32, per layer {"output": int array after pooling,
        "saturated": accumulator values at acc_bits' limits, "acc_max": max |accumulator + bias|}).
        exact=True skips the accumulator's saturation (for calibration).
        """
        x, trace = np.asarray(x_q), []
        for layer in self.layers:
            x, info = layer_forward(layer, x, exact=exact)
            trace.append(info)
        return x, trace


# ------------------------------------------------------------------------------ integer layers


def _im2col(layer: QuantLayer, x: np.ndarray) -> np.ndarray:
    """(B, P, K) int8 rows of the layer's input, in the weight's row order."""
    b = x.shape[0]
    if layer.kind == "dense":
        return x.reshape(b, 1, -1)
    cols, (b, ho, wo) = nm_kernels.im2col(jnp.asarray(x), layer.kernel, layer.stride, layer.padding)
    return np.asarray(cols).reshape(b, ho * wo, -1)


def gates_of(layer: QuantLayer, x: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dynamic layer's (spatial (B, P) bool, channel (B, G) bool) masks from its int8 input."""
    gate, b, p = layer.gate, cols.shape[0], cols.shape[1]
    groups = layer.out_shape[-1] // gate.group
    spatial = np.ones((b, p), bool)
    if gate.spatial_weight is not None:
        spatial = cols.astype(np.int64) @ gate.spatial_weight.astype(np.int64) + gate.spatial_bias > 0
    channel = np.ones((b, groups), bool)
    if gate.channel_weight is not None:
        h, w = layer.in_shape[:2]
        total = x.astype(np.int64).sum(axis=(1, 2))
        channel = total @ gate.channel_weight.astype(np.int64) + gate.channel_bias * (h * w) > 0
    return spatial, channel


def _products(layer: QuantLayer, x: np.ndarray, cols: np.ndarray, acc_bits) -> np.ndarray:
    """(B, P, C_out) accumulators through the kernels' integer path."""
    b, p, k = cols.shape
    w = layer.weight
    if layer.pattern in ("nm", "balanced_group"):
        n, m = layer.params["n"], layer.params["m"]
        values, indices = nm_kernels.compress(w, n, m)
        acc = nm_kernels.sparse_matmul(cols.reshape(b * p, k), values, indices, n, m, acc_bits=acc_bits)
        return np.asarray(acc).reshape(b, p, -1)
    if layer.pattern == "csp":
        order = skip_kernels.cascade_order(layer.lengths)
        acc = skip_kernels.cascade_matmul(cols.reshape(b * p, k)[:, order], w[order], layer.lengths[order],
                                          layer.params["chunk"], acc_bits=acc_bits)
        return np.asarray(acc).reshape(b, p, -1)
    if layer.pattern == "dynamic":
        spatial, channel = gates_of(layer, x, cols)
        return np.asarray(skip_kernels.skip_matmul(cols, w, spatial_mask=spatial, channel_mask=channel,
                                                   group=layer.gate.group, acc_bits=acc_bits))
    return np.asarray(skip_kernels.skip_matmul(cols, w, acc_bits=acc_bits))


def _pool(layer: QuantLayer, y: np.ndarray) -> np.ndarray:
    if layer.pool is None:
        return y
    k = layer.pool_size
    b, h, w, c = y.shape
    windows = y.astype(np.int64).reshape(b, h // k, k, w // k, k, c)
    if layer.pool == "max":
        return windows.max(axis=(2, 4))
    total = windows.sum(axis=(2, 4))
    return np.asarray(fp.shift_round(jnp.asarray(total, jnp.int32), int(math.log2(k * k)), layer.rounding))


def layer_forward(layer: QuantLayer, x: np.ndarray, *, exact: bool = False) -> tuple[np.ndarray, dict]:
    """One layer in integers: int8 input -> its output after ReLU, requantization and pooling
    (int8, or int32 for the last layer)."""
    cols = _im2col(layer, x)
    if layer.activation_threshold > 0:
        cols = np.where(np.abs(cols.astype(np.int32)) > layer.activation_threshold, cols, 0).astype(np.int8)
    acc = _products(layer, x, cols, None if exact else layer.acc_bits).astype(np.int64) + layer.bias
    acc_format = fp.Format(layer.acc_bits, 0)
    info = {"acc_max": int(np.abs(acc).max())}
    if not exact:
        acc = np.clip(acc, acc_format.min_int, acc_format.max_int)
    info["saturated"] = int(((acc <= acc_format.min_int) | (acc >= acc_format.max_int)).sum())
    if layer.relu:
        acc = np.maximum(acc, 0)
    if exact:  # keep the int32 requantization in range while calibrating
        acc = np.clip(acc, -(2**31), 2**31 - 1)
    out = np.asarray(fp.requantize(jnp.asarray(acc, jnp.int32), layer.acc_frac, layer.out_format,
                                   rounding=layer.rounding))
    out = _pool(layer, out.reshape(x.shape[0], *layer.out_shape))
    out = out.astype(np.dtype(layer.out_format.dtype) if layer.out_format.bits <= 8 else np.int32)
    info["output"] = out
    return out, info


# ------------------------------------------------------------------------------ calibration


def _check_formats(hw: HardwareConfig) -> None:
    for key in ("data_bits", "weight_bits"):
        bits = getattr(hw, key)
        if bits > 8:
            raise QuantizationError(f"'hardware.{key}' is {bits}: the fixed-point path (the kernels' int8 x int8 "
                                    f"products) takes at most 8 bits")


def float_stages(stages, x) -> list[np.ndarray]:
    """The float model run stage by stage: each stage's output after ReLU and before pooling."""
    pools = {"avg": nnx.avg_pool, "max": nnx.max_pool}
    outputs = []
    for stage in stages:
        if stage.layer.layout.in_axis == 0 and x.ndim > 2:  # a dense layer after a conv
            x = x.reshape(x.shape[0], -1)
        y = stage.layer(x)
        if stage.relu:
            y = jax.nn.relu(y)
        outputs.append(np.asarray(y))
        if stage.pool is not None:
            window = (stage.pool_size, stage.pool_size)
            y = pools[stage.pool](y, window_shape=window, strides=window)
        x = y
    return outputs


def _quantize_columns(w2d: np.ndarray, fracs: np.ndarray, bits: int, rounding: str) -> np.ndarray:
    return np.stack([fp.quantize(w2d[:, c], fp.Format(bits, int(f)), rounding=rounding)
                     for c, f in enumerate(fracs)], axis=1).astype(np.int8)


def _round_to_int(v, frac, rounding) -> np.ndarray:
    """Real values at scale 2**-frac as exact int64 (no saturation: biases are checked separately)."""
    scaled = np.asarray(v, np.float64) * np.power(2.0, np.asarray(frac, np.float64))
    return (np.round(scaled) if rounding == "half_even" else
            np.floor(scaled) if rounding == "floor" else np.floor(scaled + 0.5)).astype(np.int64)


def _pattern_of(layer) -> tuple[str, dict]:
    method = layer.current_method()
    pattern = method.pattern()
    kind = pattern.kind
    if kind == "nm":
        if pattern.axis != "input":
            raise QuantizationError(f"layer {layer.layer_name!r}: N:M along the output axis has no fixed-point "
                                    f"layout (use axis: input)")
        return "nm", {"n": pattern.n, "m": pattern.m}
    if kind == "balanced_group":
        return "balanced_group", {"n": pattern.keep, "m": pattern.group}
    if kind == "csp":
        return "csp", {"chunk": pattern.chunks}
    if kind == "dynamic":
        return "dynamic", {"channel_group": pattern.channel_group, "spatial": pattern.spatial,
                           "channel": pattern.channel}
    return kind, {}


def _quantize_gate(layer, in_format: fp.Format, hw: HardwareConfig) -> Gate:
    gates, group = layer.gates, layer.sparsity.channel_group
    spatial_w = spatial_bias = channel_w = channel_bias = None
    spatial_frac = channel_frac = 0
    if gates.spatial_kernel is not None:
        k = np.asarray(gates.spatial_kernel[...]).reshape(-1)
        spatial_frac = fp.frac_for_range(float(np.abs(k).max()), hw.weight_bits)
        spatial_w = np.asarray(fp.quantize(k, fp.Format(hw.weight_bits, spatial_frac), rounding=hw.rounding)).astype(np.int8)
        spatial_bias = int(_round_to_int(np.asarray(gates.spatial_bias[...])[0], in_format.frac + spatial_frac, hw.rounding))
    if gates.channel_kernel is not None:
        k = np.asarray(gates.channel_kernel[...])
        channel_frac = fp.frac_for_range(float(np.abs(k).max()), hw.weight_bits)
        channel_w = np.asarray(fp.quantize(k, fp.Format(hw.weight_bits, channel_frac), rounding=hw.rounding)).astype(np.int8)
        channel_bias = _round_to_int(np.asarray(gates.channel_bias[...]), in_format.frac + channel_frac, hw.rounding)
    return Gate(group, spatial_w, spatial_frac, 0 if spatial_bias is None else spatial_bias,
                channel_w, channel_frac, channel_bias)


def calibrate(model, images: np.ndarray, hw: HardwareConfig) -> QuantizedNetwork:
    """Quantizes a trained sequential model to `hw`'s fixed-point formats, calibrated on `images`
    ((N, H, W, C) float32, normalized as in training).

    Raises QuantizationError: a model without `stages()`, formats over 8 bits, or an accumulator
    too narrow for the calibrated range (naming the layer, the range and the bits it needs).
    """
    _check_formats(hw)
    if not hasattr(model, "stages"):
        raise QuantizationError(f"the model ({type(model).__name__}) is not sequential: fixed-point emulation and "
                                f"export take models with stages() (digits_cnn, vgg16); residual networks are "
                                f"not supported yet")
    stages = model.stages()
    outputs = float_stages(stages, images)
    data = lambda frac: fp.Format(hw.data_bits, frac)
    in_format = data(fp.frac_for_range(float(np.abs(images).max()), hw.data_bits))
    layers, in_shape = [], tuple(images.shape[1:])
    for i, stage in enumerate(stages):
        layer, last = stage.layer, i == len(stages) - 1
        pattern, params = _pattern_of(layer)
        w = np.asarray(layer.kernel[...]) * np.asarray(layer.mask())
        out_channels = w.shape[-1]
        w2d = w.reshape(-1, out_channels)
        if hw.weight_scale == "per_channel":
            w_frac = fp.per_channel_frac(w2d, hw.weight_bits, axis=-1)
        else:
            w_frac = np.full(out_channels, fp.frac_for_range(float(np.abs(w2d).max()), hw.weight_bits))
        acc_frac = in_format.frac + w_frac
        bias = (np.asarray(layer.bias[...]) if layer.bias is not None else np.zeros(out_channels))
        if last:
            out_format = fp.Format(hw.acc_bits, int(acc_frac.min()))
        else:
            calibrated = fp.frac_for_range(float(np.abs(outputs[i]).max()), hw.data_bits)
            out_format = data(min(calibrated, int(acc_frac.min())))
        if layer.layout.in_axis == 0:  # dense
            kind, kernel, stride, padding = "dense", (1, 1), (1, 1), ((0, 0), (0, 0))
            in_shape = (int(np.prod(in_shape)),)
            out_shape = (out_channels,)
        else:
            if layer.groups != 1:
                raise QuantizationError(f"layer {layer.layer_name!r}: grouped convolutions have no fixed-point "
                                        f"layout yet")
            kind, kernel, stride, padding = "conv", tuple(layer.layout.shape[:2]), layer.strides, layer.padding
            out_shape = tuple(outputs[i].shape[1:])
        if stage.pool == "avg" and stage.pool_size & (stage.pool_size - 1):
            raise QuantizationError(f"layer {layer.layer_name!r}: average pooling over {stage.pool_size}x"
                                    f"{stage.pool_size} is not a shift (windows of 2**k elements only)")
        threshold = float(getattr(layer.current_method(), "activation_threshold", 0.0) or 0.0)
        layers.append(QuantLayer(
            name=layer.layer_name, kind=kind, in_shape=tuple(in_shape), out_shape=out_shape, kernel=kernel,
            stride=tuple(stride), padding=tuple(tuple(p) for p in padding), pattern=pattern, params=params,
            weight=_quantize_columns(w2d, w_frac, hw.weight_bits, hw.rounding), weight_frac=w_frac.astype(np.int64),
            bias=_round_to_int(bias, acc_frac, hw.rounding), in_format=in_format, out_format=out_format,
            acc_bits=hw.acc_bits, rounding=hw.rounding, relu=stage.relu, pool=stage.pool, pool_size=stage.pool_size,
            lengths=(cascade_lengths(np.asarray(layer.mask()), layer.layout, params["chunk"]).astype(np.int64)
                     if pattern == "csp" else None),
            gate=_quantize_gate(layer, in_format, hw) if pattern == "dynamic" else None,
            activation_threshold=int(math.floor(threshold * 2.0 ** in_format.frac)) if threshold > 0 else 0,
        ))
        in_format, in_shape = out_format, layers[-1].final_shape
    net = QuantizedNetwork(tuple(layers), tuple(images.shape[1:]))
    check_accumulators(net, images)
    return net


def _accumulator_ranges(net: QuantizedNetwork, images: np.ndarray) -> list[int]:
    """Per layer, the largest |accumulator + bias| (or |bias|) over `images`, exactly."""
    _, trace = net.forward(net.quantize_input(images), exact=True)
    return [max(info["acc_max"], int(np.abs(layer.bias).max(initial=0))) for layer, info in zip(net.layers, trace)]


def accumulator_bits_needed(net: QuantizedNetwork, images: np.ndarray) -> list[int]:
    """Per layer, the accumulator bits the calibration images need (for reports and tests)."""
    return [r.bit_length() + 1 for r in _accumulator_ranges(net, images)]


def check_accumulators(net: QuantizedNetwork, images: np.ndarray) -> None:
    """Every accumulator (and bias) fits acc_bits on the calibration data, else a QuantizationError."""
    for layer, largest in zip(net.layers, _accumulator_ranges(net, images)):
        needed = largest.bit_length() + 1
        if needed > layer.acc_bits:
            raise QuantizationError(
                f"layer {layer.name!r}: the accumulator needs {needed} bits for the calibrated range "
                f"(|acc| up to {largest:,} at 2^-{int(layer.acc_frac.min())}..2^-{int(layer.acc_frac.max())}), "
                f"but 'hardware.acc_bits' is {layer.acc_bits}: the format is too narrow")
