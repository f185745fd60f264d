"""One sparse layer's post-training calibration to the hardware's fixed-point formats (weights,
bias, scales, gates; see `cooptim.quantize` for the arithmetic). `graph.calibrate_graph` calls it
for every conv and dense node."""

from __future__ import annotations

import math

import numpy as np
from flax import nnx

from cooptim.config import HardwareConfig
from cooptim.quantize.network import Gate, QuantizationError, QuantLayer
from cooptim.sparsity.csp import cascade_lengths
from kernels import fixed_point as fp


# ------------------------------------------------------------------------------ calibration


def _check_formats(hw: HardwareConfig) -> None:
    for key in ("data_bits", "weight_bits"):
        bits = getattr(hw, key)
        if bits > 8:
            raise QuantizationError(f"'hardware.{key}' is {bits}: the fixed-point path (the kernels' int8 x int8 "
                                    f"products) takes at most 8 bits")


@nnx.jit
def _layer_call(layer, x):
    return layer(x)


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
        return "csp", {"chunk": pattern.chunk}
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


def quant_layer(layer, in_format: fp.Format, in_shape: tuple, out_shape: tuple, calibration: np.ndarray,
                hw: HardwareConfig, *, last: bool, relu: bool, fold: tuple[np.ndarray, np.ndarray] | None = None) -> QuantLayer:
    """One sparse layer in fixed point, its output format calibrated on `calibration` (the float
    outputs it must represent). `fold`: a batch norm's (scale, shift) per output channel, folded
    into the weights and the bias. The last layer keeps acc_bits at the finest common scale."""
    pattern, params = _pattern_of(layer)
    w = np.asarray(layer.kernel[...]) * np.asarray(layer.mask())
    out_channels = w.shape[-1]
    bias = (np.asarray(layer.bias[...]) if layer.bias is not None else np.zeros(out_channels))
    if fold is not None:
        scale, shift = fold
        w, bias = w * scale, bias * scale + shift
    w2d = w.reshape(-1, out_channels)
    if hw.weight_scale == "per_channel":
        w_frac = fp.per_channel_frac(w2d, hw.weight_bits, axis=-1)
    else:
        w_frac = np.full(out_channels, fp.frac_for_range(float(np.abs(w2d).max()), hw.weight_bits))
    acc_frac = in_format.frac + w_frac
    if last:
        out_format = fp.Format(hw.acc_bits, int(acc_frac.min()))
    else:
        calibrated = fp.frac_for_range(float(np.abs(calibration).max()), hw.data_bits)
        out_format = fp.Format(hw.data_bits, min(calibrated, int(acc_frac.min())))
    if layer.layout.in_axis == 0:  # dense
        kind, kernel, stride, padding = "dense", (1, 1), (1, 1), ((0, 0), (0, 0))
        in_shape, out_shape = (int(np.prod(in_shape)),), (out_channels,)
    else:
        if layer.groups != 1 and pattern == "dynamic":
            raise QuantizationError(f"layer {layer.layer_name!r}: dynamic gating of a grouped convolution has "
                                    f"no fixed-point form (gate it on an ungrouped conv)")
        kind, kernel, stride, padding = "conv", tuple(layer.layout.shape[:2]), layer.strides, layer.padding
    threshold = float(getattr(layer.current_method(), "activation_threshold", 0.0) or 0.0)
    return QuantLayer(
        name=layer.layer_name, kind=kind, in_shape=tuple(in_shape), out_shape=tuple(out_shape), kernel=kernel,
        stride=tuple(stride), padding=tuple(tuple(p) for p in padding), pattern=pattern, params=params,
        weight=_quantize_columns(w2d, w_frac, hw.weight_bits, hw.rounding), weight_frac=w_frac.astype(np.int64),
        bias=_round_to_int(bias, acc_frac, hw.rounding), in_format=in_format, out_format=out_format,
        acc_bits=hw.acc_bits, rounding=hw.rounding, relu=relu,
        lengths=(cascade_lengths(np.asarray(layer.mask()), layer.layout, params["chunk"]).astype(np.int64)
                 if pattern == "csp" else None),
        gate=_quantize_gate(layer, in_format, hw) if pattern == "dynamic" else None,
        activation_threshold=int(math.floor(threshold * 2.0 ** in_format.frac)) if threshold > 0 else 0,
        groups=getattr(layer, "groups", 1),
    )
