"""Sparse-aware Flax NNX layers.

`SparseConv` and `SparseDense` hold a dense weight (an `nnx.Param`) and a sparsity method
(static). The forward pass uses `method.apply(weight)`: the masked weight, with the method's
straight-through gradient back to the dense weight. Each layer has a `layer_name`, the name that
configs, reports and exported files use.

A model gives each layer a `LayerSparsity`: the method and the structure options that change the
layer's variables (a learned density, a searchable input threshold), so the structure is fixed by
constructor arguments. Side outputs (gates, inputs, activation densities) are taps (`taps.py`).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cooptim.nn.gates import GateRecord, Gates, gated_matmul
from cooptim.nn.init import fan_in_truncated_normal
from cooptim.nn.taps import ActivationKept, GateTap, LayerInput, tap
from cooptim.nn.variables import DensityLogit, InputThreshold, LayerSparsity, Progress, StoredMask
from cooptim.sparsity import Dense as DenseMethod
from cooptim.sparsity import SparsityError, SparsityMethod, WeightLayout
from cost_models import layers as cm_layers
from kernels.nm import im2col


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def set_progress(model: nnx.Module, value) -> None:
    """Sets every layer's training progress (inside the train step, from its argument)."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, SparseLayer):
            node.progress[...] = jnp.asarray(value, jnp.float32)


def refresh_masks(model: nnx.Module, step) -> None:
    """Recomputes the stored masks that are due at `step` (every `mask_interval` steps); `step`
    may be traced (the train step calls it)."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, SparseLayer) and node.stored_mask is not None:
            due = jnp.asarray(step) % node.sparsity.mask_interval == 0
            fresh = node.sparsity.mask(node.kernel[...], node.layout, node.progress[...])
            node.stored_mask[...] = jnp.where(due, fresh, node.stored_mask[...])


class SparseLayer(nnx.Module):
    """Common parts of the sparse layers: weight, method, layout, training progress."""

    kernel: nnx.Param
    sparsity: SparsityMethod
    layout: WeightLayout
    layer_name: str

    def _setup(self, name: str, shape: tuple, in_axis: int, out_axis: int,
               sparsity: SparsityMethod | LayerSparsity) -> None:
        spec = sparsity if isinstance(sparsity, LayerSparsity) else LayerSparsity(sparsity)
        method = spec.method
        self.layer_name = name
        self.layout = WeightLayout(shape, in_axis=in_axis, out_axis=out_axis)
        method.validate(self.layout, name)
        self.sparsity = method
        self.progress = Progress(jnp.float32(1.0))
        if spec.density_scale is not None and method.learns_density:
            if method.kernel or method.mask_interval > 1:
                raise SparsityError(f"layer {name!r}: a learned density cannot be combined with "
                                    f"kernel: true or mask_interval > 1")
            start = min(max(method.nominal_density(), 0.02), 0.98)
            self.density_scale = float(spec.density_scale)
            self.density_logit = DensityLogit(jnp.float32(math.log(start / (1 - start)) / spec.density_scale))
        else:
            self.density_scale = None
            self.density_logit = None
        if spec.input_threshold:
            self.input_threshold = InputThreshold(jnp.float32(0.0))
            self.input_sharpness = InputThreshold(jnp.float32(0.0))
        else:
            self.input_threshold = self.input_sharpness = None

    def _init_stored_mask(self) -> None:
        """Assigned once, after the weight exists (NNX fixes an attribute's kind at first assignment)."""
        if self.sparsity.mask_interval > 1:
            self.stored_mask = StoredMask(self.sparsity.mask(self.kernel[...], self.layout))
        else:
            self.stored_mask = None

    def _input(self, x: jax.Array) -> jax.Array:
        """The layer's input after its searchable threshold (if it has one)."""
        if self.input_threshold is None:
            return x
        threshold, sharpness = self.input_threshold[...], self.input_sharpness[...]
        magnitude = jnp.abs(x)
        soft = jax.nn.sigmoid(sharpness * (magnitude - threshold) / (jnp.sqrt(jnp.mean(x ** 2)) + 1e-12))
        keep = jnp.where(sharpness > 0, soft, (magnitude > threshold).astype(x.dtype))
        tap(self, ActivationKept, keep.mean())
        return x * keep

    def learned_density(self) -> jax.Array | None:
        """The trained density variable (float32 scalar in (0, 1)), or None."""
        if self.density_logit is None:
            return None
        return jax.nn.sigmoid(self.density_scale * self.density_logit[...])

    def current_method(self) -> SparsityMethod:
        """The method with its learned density filled in (what reports and exports describe)."""
        if self.density_logit is None:
            return self.sparsity
        return self.sparsity.at_density(float(self.learned_density()))

    def effective_kernel(self) -> jax.Array:
        """The weight the forward pass uses (masked by the method)."""
        if self.density_logit is not None:
            return self._learned_kernel()
        if self.stored_mask is not None:
            return self.sparsity.apply_mask(self.kernel[...], self.stored_mask[...])
        return self.sparsity.apply(self.kernel[...], self.layout, self.progress[...])

    def _learned_kernel(self) -> jax.Array:
        """The weight masked at the learned density. Forward: the method's hard mask at that
        density, SR-STE to the weight. Backward to the density variable: a surrogate, the gradient
        of w x sigmoid((|w| - t(d)) / s) with t(d) the (1 - d) quantile of |w| and s a tenth of
        |w|'s spread, so the task loss tells each layer what keeping more weights would gain."""
        weight = self.kernel[...]
        if self.sparsity.gates:
            return weight  # dynamic layers: the learned density is their gate target
        density = self.learned_density()
        hard = self.sparsity.mask_at(weight, self.layout, jax.lax.stop_gradient(density), self.progress[...])
        effective = self.sparsity.apply_mask(weight, hard)
        magnitude = jax.lax.stop_gradient(jnp.abs(weight))
        threshold = jnp.quantile(magnitude, 1.0 - density)
        soft = jax.nn.sigmoid((magnitude - threshold) / (0.1 * magnitude.std() + 1e-12))
        return effective + jax.lax.stop_gradient(weight) * (soft - jax.lax.stop_gradient(soft))

    def mask(self) -> jax.Array:
        """The 0/1 keep-mask the forward pass uses."""
        if self.density_logit is not None:
            return self.sparsity.mask_at(self.kernel[...], self.layout, self.learned_density(), self.progress[...])
        if self.stored_mask is not None:
            return self.stored_mask[...]
        return self.sparsity.mask(self.kernel[...], self.layout, self.progress[...])

    def density(self) -> jax.Array:
        """The density the cost model reads: the learned variable (at the density its mask really
        has, with the gradient of the continuous one), else the method's own."""
        if self.density_logit is not None:
            density = self.learned_density()
            return density + jax.lax.stop_gradient(self.sparsity.quantize_density(density) - density)
        return self.sparsity.density(self.kernel[...], self.layout, self.progress[...])

    def _uses_matmul(self) -> bool:
        """Whether the forward pass goes through `_matmul` (a method that changes the matmul, or
        HASS's activation threshold under a learned density) rather than a plain masked weight."""
        return self.sparsity.uses_project or (self.density_logit is not None and self.sparsity.activation_threshold > 0)

    def _matmul(self, x2d: jax.Array, weight2d: jax.Array, effective2d) -> jax.Array:
        """x (rows, K) @ the layer's weight as a (K, N) matrix. Methods that change the matmul
        itself (BDWP's backward mask, the kernels' compressed path) get the dense weight through
        `project`; the others multiply by their effective weight."""
        if self.density_logit is not None:
            # a learned density replaces the method's own; HASS's activation threshold still applies
            threshold = self.sparsity.activation_threshold
            if threshold > 0:
                x2d = x2d * (jnp.abs(x2d) > threshold)
            return x2d @ effective2d()
        if self.sparsity.uses_project:
            layout2d = WeightLayout(weight2d.shape, in_axis=0, out_axis=1)
            return self.sparsity.project(x2d, weight2d, layout2d, self.progress[...])
        return x2d @ effective2d()

    def description(self, in_shape: tuple[int, ...]):
        """The cost model's static description of this layer for an input of `in_shape` (no batch)."""
        raise NotImplementedError

    def graph(self, g, x: str) -> str:
        """This layer's node in the model's graph (`blocks.GraphBuilder`), reading node `x`."""
        return g.add(self.description(g.shape(x)), x, op=self)


class SparseConv(SparseLayer):
    """2-D convolution, NHWC input, HWIO weight of shape (K_h, K_w, C_in/groups, C_out)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int] = 3,
        *,
        name: str,
        strides: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        groups: int = 1,
        use_bias: bool = False,
        sparsity: SparsityMethod | LayerSparsity = DenseMethod(),
        rngs: nnx.Rngs,
    ):
        kh, kw = _pair(kernel_size)
        if in_features % groups or out_features % groups:
            raise ValueError(f"layer {name!r}: groups={groups} must divide {in_features} and {out_features}")
        self.strides = _pair(strides)
        pad = _pair(padding) if padding is not None else ((kh - 1) // 2, (kw - 1) // 2)
        self.padding = ((pad[0], pad[0]), (pad[1], pad[1]))
        self.groups = groups
        self.out_features = out_features
        shape = (kh, kw, in_features // groups, out_features)
        self._setup(name, shape, 2, 3, sparsity)
        init = fan_in_truncated_normal(2.0)
        self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self._init_stored_mask()
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.gates = Gates(in_features, shape, self.sparsity, rngs) if self.sparsity.gates else None

    def _conv(self, x: jax.Array, weight: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(
            x, weight, window_strides=self.strides, padding=self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups)

    def _gated(self, x: jax.Array) -> jax.Array:
        """The DPACS forward pass: gates from the input, then only the active outputs."""
        spatial, channel = self.gates(x, self.strides, self.padding)
        group = self.sparsity.channel_group
        weight = self.kernel[...].astype(x.dtype)
        if self.sparsity.kernel and self.groups == 1:
            cols, (b, ho, wo) = im2col(x, self.layout.shape[:2], self.strides, self.padding)
            y = gated_matmul(cols.reshape(b, ho * wo, -1), weight.reshape(-1, self.out_features),
                             spatial.reshape(b, ho * wo), channel, group)
            y = y.reshape(b, ho, wo, self.out_features)
        else:
            y = self._conv(x, weight) * spatial[..., None] * jnp.repeat(channel, group, axis=1)[:, None, None, :]
        density = (spatial.mean(axis=(1, 2)) * channel.mean(axis=1)).mean()
        tap(self, GateTap, GateRecord(density, spatial, channel))
        return y

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C_in) float -> (B, H', W', C_out)."""
        x = self._input(x)
        if self.gates is not None:
            y = self._gated(x)
        elif self.groups == 1 and self._uses_matmul():
            cols, (b, ho, wo) = im2col(x, self.layout.shape[:2], self.strides, self.padding)
            w2d = self.kernel[...].astype(x.dtype).reshape(-1, self.out_features)
            effective2d = lambda: self.effective_kernel().astype(x.dtype).reshape(-1, self.out_features)
            y = self._matmul(cols, w2d, effective2d).reshape(b, ho, wo, self.out_features)
        else:
            y = self._conv(x, self.effective_kernel().astype(x.dtype))
        if self.bias is not None:
            y = y + self.bias[...]
        tap(self, LayerInput, (x, y))
        return y

    def description(self, in_shape):
        return cm_layers.Conv2D(name=self.layer_name, in_shape=tuple(in_shape), out_channels=self.out_features,
                                kernel=self.layout.shape[:2], stride=self.strides, padding=self.padding,
                                groups=self.groups)


class SparseDense(SparseLayer):
    """Fully connected layer, weight (in_features, out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        name: str,
        use_bias: bool = True,
        sparsity: SparsityMethod | LayerSparsity = DenseMethod(),
        rngs: nnx.Rngs,
    ):
        shape = (in_features, out_features)
        self._setup(name, shape, 0, 1, sparsity)
        init = fan_in_truncated_normal(1.0)
        self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self._init_stored_mask()
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, in_features) -> (B, out_features)."""
        x = self._input(x)
        y = self._matmul(x, self.kernel[...].astype(x.dtype), lambda: self.effective_kernel().astype(x.dtype))
        if self.bias is not None:
            y = y + self.bias[...]
        tap(self, LayerInput, (x, y))
        return y

    def description(self, in_shape):
        return cm_layers.Dense(self.layer_name, *self.layout.shape)


def start_from_weights(model: nnx.Module) -> None:
    """After the weights were replaced (a pretrained start): every stored mask is recomputed from
    them, and DPACS's gates open (kernels zero, bias the method's positive `gate_bias` or 1), so
    the fine-tune starts from the loaded network with every position and channel active."""
    for _, node in nnx.iter_graph(model):
        if not isinstance(node, SparseLayer):
            continue
        if node.stored_mask is not None:
            node.stored_mask[...] = node.sparsity.mask(node.kernel[...], node.layout, node.progress[...])
        if getattr(node, "gates", None) is not None:
            gates = node.gates
            bias = max(float(node.sparsity.gate_bias), 1.0)
            for kernel, offset in ((gates.spatial_kernel, gates.spatial_bias), (gates.channel_kernel, gates.channel_bias)):
                if kernel is not None:
                    kernel[...] = jnp.zeros_like(kernel[...])
                    offset[...] = jnp.full_like(offset[...], bias)
