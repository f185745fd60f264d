"""A quantized conv or dense layer as plain NumPy integers and formats (the data the exporter
writes and the C++ reference reads), and its integer forward pass through the kernels'
fixed-point path. See `cooptim.quantize` for the arithmetic."""

from __future__ import annotations

import dataclasses
import jax.numpy as jnp
import numpy as np

from kernels import fixed_point as fp
from kernels import nm as nm_kernels
from kernels import skip as skip_kernels
from cooptim.errors import UserError


class QuantizationError(UserError, ValueError):
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
    out_shape: tuple  # (H', W', C_out) or (C_out,)
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
    relu: bool  # a ReLU fused on the accumulator
    lengths: np.ndarray | None = None  # csp: kept chunks per weight row
    gate: Gate | None = None
    activation_threshold: int = 0  # unstructured (HASS): inputs with |x| <= this are zeroed
    groups: int = 1  # a grouped conv's: its weight rows are one group's taps x C_in / groups

    @property
    def acc_frac(self) -> np.ndarray:
        return self.in_format.frac + self.weight_frac


# ------------------------------------------------------------------------------ integer layers


def im2col(layer: QuantLayer, x: np.ndarray) -> np.ndarray:
    """(B, P, K) int8 rows of the layer's input, in the weight's row order."""
    b = x.shape[0]
    if layer.kind == "dense":
        return x.reshape(b, 1, -1)
    # kernels.nm.im2col's row order (taps outermost, channels fastest), in NumPy: an exact copy of
    # integers, with nothing to compile for each of the emulation's layer and batch shapes
    (sh, sw), (kh, kw) = layer.stride, layer.kernel
    padded = np.pad(x, ((0, 0), *layer.padding, (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    ho, wo = windows.shape[1:3]
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(b, ho * wo, -1)


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


def _grouped_products(layer: QuantLayer, cols: np.ndarray, acc_bits) -> np.ndarray:
    """(B, P, C_out) accumulators of a grouped conv: each output channel's exact sum over its own
    group's input channels, saturated once at the end, as the kernels' path computes it (the
    weight holds zeros where pruned, so every static pattern is this sum)."""
    b, p, _ = cols.shape
    g, c_in = layer.groups, layer.in_shape[2]
    taps = cols.reshape(b, p, -1, g, c_in // g).astype(np.int64)  # (B, P, taps, G, C_in / G)
    taps = taps.transpose(0, 1, 3, 2, 4).reshape(b, p, g, -1)  # one group's window, in weight row order
    w = layer.weight.astype(np.int64).reshape(-1, g, layer.weight.shape[1] // g)  # (K_g, G, C_out / G)
    acc = np.einsum("bpgk,kgo->bpgo", taps, w).reshape(b, p, -1)
    if acc_bits is not None:
        acc = np.clip(acc, -(2 ** (acc_bits - 1)), 2 ** (acc_bits - 1) - 1)
    return acc


def _products(layer: QuantLayer, x: np.ndarray, cols: np.ndarray, acc_bits) -> np.ndarray:
    """(B, P, C_out) accumulators through the kernels' integer path."""
    b, p, k = cols.shape
    w = layer.weight
    if layer.groups > 1:
        return _grouped_products(layer, cols, acc_bits)
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


def layer_forward(layer: QuantLayer, x: np.ndarray, *, exact: bool = False) -> tuple[np.ndarray, dict]:
    """One layer in integers: int8 input -> its output after the fused ReLU and requantization
    (int8, or int32 for the last layer)."""
    cols = im2col(layer, x)
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
    out = out.reshape(x.shape[0], *layer.out_shape)
    out = out.astype(np.dtype(layer.out_format.dtype) if layer.out_format.bits <= 8 else np.int32)
    info["output"] = out
    return out, info
