"""HASS's sparsity statistic, measured: per input channel of a conv, how its windows' K^2 weight x
activation products split by their number of non-zeros.

HASS (Yu et al., FPL 2024) and fpgaConvNet's sparse convolution cost a layer from these
histograms: a window with j non-zero products takes ceil(j / fine) cycles, and the input stream
whose channels are slowest sets the layer's rate (`cost_models.sparsity.stream_window_cycles`).
Here they are counted on a trained network's own inputs: for channel c, every (window, filter)
pair of a sample of windows, the product of the thresholded input's non-zeros with the masked
kernel's non-zeros, summed over the K^2 taps. Padding counts as zeros, as the hardware sees it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cooptim.nn.layers import SparseConv
from cooptim.nn.taps import LayerInput, capture
from kernels.nm import im2col

WINDOWS_PER_BATCH = 1024  # windows sampled per batch and layer (evenly over the batch's windows)
FILTER_CHUNK = 16  # filters counted at once: bounds the (windows, channels, filters) count array


def window_counts(x: jax.Array, kernel_nonzero: jax.Array, kernel: tuple, stride: tuple, padding: tuple,
                  threshold: float, windows: int = WINDOWS_PER_BATCH) -> jax.Array:
    """(C, K^2 + 1) int32: for each input channel, how many (window, filter) pairs of `windows`
    windows sampled evenly from x's have j = 0..K^2 non-zero products.

    x: (B, H, W, C) the layer's input (before its activation threshold); kernel_nonzero:
    (K_h, K_w, C, F) bool, the masked weight's non-zeros."""
    active = (jnp.abs(x) > threshold).astype(jnp.int32)
    cols, _ = im2col(active, kernel, stride, padding)  # (N, K^2 C), taps outermost
    taps, channels, filters = kernel[0] * kernel[1], x.shape[-1], kernel_nonzero.shape[-1]
    rows = np.linspace(0, cols.shape[0] - 1, min(windows, cols.shape[0])).round().astype(np.int64)
    cols = cols[rows].reshape(len(rows), taps, channels)
    weight = kernel_nonzero.reshape(taps, channels, filters).astype(jnp.int32)
    counts = jnp.zeros((channels, taps + 1), jnp.int32)
    for start in range(0, filters, FILTER_CHUNK):
        nonzero = jnp.einsum("nkc,kcf->ncf", cols, weight[..., start:start + FILTER_CHUNK])
        counts = counts + jnp.stack([(nonzero == j).sum(axis=(0, 2)) for j in range(taps + 1)], axis=1)
    return counts


@functools.partial(nnx.jit, static_argnames=("specs",))
def _batch_counts(model, images, specs):
    _, taps = capture(model, images, LayerInput)
    return {name: window_counts(taps[LayerInput][name][0], nonzero, kernel, stride, padding, threshold)
            for (name, kernel, stride, padding, threshold), nonzero in zip(specs, _kernel_nonzeros(model, specs))}


def _kernel_nonzeros(model, specs):
    layers = {node.layer_name: node for _, node in nnx.iter_graph(model) if isinstance(node, SparseConv)}
    return [layers[name].effective_kernel() != 0 for name, *_ in specs]


def measure_window_histograms(model: nnx.Module, layers: list[SparseConv], batches) -> dict[str, np.ndarray]:
    """{layer: (C_in, K^2 + 1) float64 histogram, each row summing to 1} of the ungrouped convs
    `layers` over `batches` of images (B, H, W, C), one forward pass per batch. A grouped conv's
    channels see only their group's filters: not measured here (its engines use the
    Binomial model of the measured densities)."""
    specs = tuple((layer.layer_name, tuple(layer.layout.shape[:2]), tuple(layer.strides),
                   tuple(map(tuple, layer.padding)), float(layer.current_method().activation_threshold))
                  for layer in layers if layer.groups == 1)
    if not specs:
        return {}
    totals: dict[str, np.ndarray] = {}
    for images in batches:
        for name, counts in _batch_counts(model, jnp.asarray(images), specs).items():
            totals[name] = totals.get(name, 0) + np.asarray(counts, np.int64)
    return {name: counts / counts.sum(axis=1, keepdims=True) for name, counts in totals.items()}
