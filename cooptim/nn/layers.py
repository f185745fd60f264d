"""Sparse-aware Flax NNX layers.

`SparseConv` and `SparseDense` hold a dense weight (an `nnx.Param`) and a sparsity method
(static). The forward pass uses `method.apply(weight)`: the masked weight, with the method's
straight-through gradient back to the dense weight. Each layer has a `layer_name`, the name that
configs, reports and exported files use.

While `record_layers()` is active, every sparse layer appends its static description
(`cost_models.layers.Conv2D` / `Dense`) when it runs, which is how `describe()` extracts a model's
layer shapes for the cost model by tracing.
"""

from __future__ import annotations

import contextlib
import functools
import math
import contextvars
import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cooptim.sparsity import Dense as DenseMethod
from cooptim.sparsity import SparsityError, SparsityMethod, WeightLayout, srste
from cost_models import layers as cm_layers

_RECORDER: contextvars.ContextVar[list | None] = contextvars.ContextVar("cooptim_recorder", default=None)
_GATES: contextvars.ContextVar[list | None] = contextvars.ContextVar("cooptim_gates", default=None)


@dataclasses.dataclass(frozen=True)
class GateRecord:
    """What one dynamically gated layer did on one batch.

    density: the fraction of active (position, channel) pairs, batch mean: float32 scalar, with the
      straight-through gradient to the gates (what the sparsity-target loss and the cost use).
    spatial: (B, H_out, W_out) float32 0/1, the active output positions.
    channel: (B, C_out / channel_group) float32 0/1, the active channel groups.
    """

    layer: "SparseConv"
    density: jax.Array
    spatial: jax.Array
    channel: jax.Array


@contextlib.contextmanager
def _scoped(var: contextvars.ContextVar, value):
    """Sets `var` to `value` inside the block (the layers read it while they build or run)."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def collect_gates() -> contextlib.AbstractContextManager[list[GateRecord]]:
    """Collects a `GateRecord` for every dynamically gated layer run inside the block, in order."""
    return _scoped(_GATES, [])


def record_layers() -> contextlib.AbstractContextManager[list]:
    """Collects (description, layer) for every sparse layer run inside the block, in order."""
    return _scoped(_RECORDER, [])


def _record(description, layer) -> None:
    records = _RECORDER.get()
    if records is not None:
        records.append((description, layer))


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class Progress(nnx.Variable):
    """Fraction of training done, in [0, 1]: methods with gradual pruning schedule their sparsity by
    it. The trainer sets it every step (`set_progress`); it is 1 outside training. Not trained."""


_INPUT_HOOK: contextvars.ContextVar = contextvars.ContextVar("cooptim_input_hook", default=None)


def input_hook(hook) -> contextlib.AbstractContextManager:
    """Inside the block, every sparse layer's input x becomes hook(layer_name, x) (HASS's search
    thresholds activations this way without rebuilding the model)."""
    return _scoped(_INPUT_HOOK, hook)


def _hooked(name: str, x: jax.Array) -> jax.Array:
    hook = _INPUT_HOOK.get()
    return x if hook is None else hook(name, x)


class DensityLogit(nnx.Param):
    """A pruned layer's trained density variable (co-optimization, `objective.learn_density`):
    the layer's density is sigmoid(scale x value). Trained with the weights."""


_LEARN_DENSITY: contextvars.ContextVar[float | None] = contextvars.ContextVar("cooptim_learn_density", default=None)


def learned_densities(scale: float) -> contextlib.AbstractContextManager:
    """Layers built inside the block get a `DensityLogit` (if their method supports per-layer
    densities): density = sigmoid(scale x logit), so Adam's step on the logit is ~scale x lr."""
    return _scoped(_LEARN_DENSITY, scale)


class StoredMask(nnx.Variable):
    """A mask kept between recomputations (methods with `mask_interval` > 1). Not trained."""


def refresh_masks(model: nnx.Module, step: int) -> None:
    """Recomputes the stored masks that are due at `step` (every `mask_interval` steps)."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, SparseLayer) and node.stored_mask is not None:
            if step % node.sparsity.mask_interval == 0:
                node.stored_mask[...] = node.sparsity.mask(node.kernel[...], node.layout, node.progress[...])


def set_progress(model: nnx.Module, value: float) -> None:
    for _, node in nnx.iter_graph(model):
        if isinstance(node, SparseLayer):
            node.progress[...] = jnp.float32(value)


class SparseLayer(nnx.Module):
    """Common parts of the sparse layers: weight, method, layout, training progress."""

    kernel: nnx.Param
    sparsity: SparsityMethod
    layout: WeightLayout
    layer_name: str

    def _setup(self, name: str, shape: tuple, in_axis: int, out_axis: int, sparsity: SparsityMethod) -> None:
        self.layer_name = name
        self.layout = WeightLayout(shape, in_axis=in_axis, out_axis=out_axis)
        sparsity.validate(self.layout, name)
        self.sparsity = sparsity
        self.progress = Progress(jnp.float32(1.0))
        scale = _LEARN_DENSITY.get()
        if scale is not None and hasattr(sparsity, "at_density"):
            if getattr(sparsity, "kernel", False) or getattr(sparsity, "mask_interval", 1) > 1:
                raise SparsityError(f"layer {name!r}: a learned density cannot be combined with "
                                    f"kernel: true or mask_interval > 1")
            start = min(max(sparsity.nominal_density(), 0.02), 0.98)
            self.density_scale = float(scale)
            self.density_logit = DensityLogit(jnp.float32(math.log(start / (1 - start)) / scale))
        else:
            self.density_scale = None
            self.density_logit = None

    def _init_stored_mask(self) -> None:
        """Assigned once, after the weight exists (NNX fixes an attribute's kind at first assignment)."""
        if getattr(self.sparsity, "mask_interval", 1) > 1:
            self.stored_mask = StoredMask(self.sparsity.mask(self.kernel[...], self.layout))
        else:
            self.stored_mask = None

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
        if getattr(self.sparsity, "gates", False):
            return weight  # dynamic layers: the learned density is their gate target
        density = self.learned_density()
        hard = jax.lax.stop_gradient(self.sparsity.mask_at(weight, self.layout, jax.lax.stop_gradient(density),
                                                           self.progress[...]))
        effective = srste(weight, hard, self.sparsity.decay)
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
        """The density the cost model reads: the learned variable, else the method's own."""
        if self.density_logit is not None:
            density = self.learned_density()
            if hasattr(self.sparsity, "quantize_density"):
                # the mask's own (quantized) density, with the gradient of the continuous one
                density = density + jax.lax.stop_gradient(self.sparsity.quantize_density(density) - density)
            return density
        return self.sparsity.density(self.kernel[...], self.layout, self.progress[...])

    def _matmul(self, x2d: jax.Array, weight2d: jax.Array, effective2d) -> jax.Array:
        """x (rows, K) @ the layer's weight as a (K, N) matrix. Methods that change the matmul
        itself (BDWP's backward mask, the kernels' compressed path) get the dense weight through
        `project`; the others multiply by their effective weight."""
        if self.density_logit is not None:
            # a learned density replaces the method's own; HASS's activation threshold still applies
            threshold = getattr(self.sparsity, "activation_threshold", 0.0)
            if threshold > 0:
                x2d = x2d * (jnp.abs(x2d) > threshold)
            return x2d @ effective2d()
        if getattr(self.sparsity, "uses_project", False):
            layout2d = WeightLayout(weight2d.shape, in_axis=0, out_axis=1)
            return self.sparsity.project(x2d, weight2d, layout2d, self.progress[...])
        return x2d @ effective2d()


class Gates(nnx.Module):
    """DPACS's gating heads of one conv layer (see `cooptim.sparsity.dynamic`).

    spatial: a (K_h, K_w, C_in, 1) conv with the layer's window, stride and padding;
    channel: global average pool, then (C_in, C_out / channel_group). Both read the layer's input.
    """

    def __init__(self, in_features: int, weight_shape: tuple, method, rngs: nnx.Rngs):
        kh, kw, _, out = weight_shape
        self.method = method
        init = nnx.initializers.variance_scaling(0.1, "fan_in", "truncated_normal")
        bias = jnp.float32(method.gate_bias)
        if method.spatial:
            self.spatial_kernel = nnx.Param(init(rngs.params(), (kh, kw, in_features, 1), jnp.float32))
            self.spatial_bias = nnx.Param(jnp.full((1,), bias))
        else:
            self.spatial_kernel = self.spatial_bias = None
        if method.channel:
            groups = out // method.channel_group
            self.channel_kernel = nnx.Param(init(rngs.params(), (in_features, groups), jnp.float32))
            self.channel_bias = nnx.Param(jnp.full((groups,), bias))
        else:
            self.channel_kernel = self.channel_bias = None
        self.groups = out // method.channel_group
        self.window = (kh, kw)

    def __call__(self, x: jax.Array, strides, padding) -> tuple[jax.Array, jax.Array]:
        """x (B, H, W, C_in), the layer's strides and padding -> (spatial (B, H', W'),
        channel (B, C_out / channel_group)): straight-through 0/1 gates, float32."""
        from cooptim.sparsity.dynamic import straight_through_gate

        t = self.method.temperature
        b, h, w, _ = x.shape
        if self.spatial_kernel is not None:
            logits = jax.lax.conv_general_dilated(
                x, self.spatial_kernel[...].astype(x.dtype), strides, padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"))[..., 0] + self.spatial_bias[...]
            spatial = straight_through_gate(logits, t)
        else:
            kh, kw = self.window
            ho = (h + sum(padding[0]) - kh) // strides[0] + 1
            wo = (w + sum(padding[1]) - kw) // strides[1] + 1
            spatial = jnp.ones((b, ho, wo), jnp.float32)
        if self.channel_kernel is not None:
            logits = x.mean(axis=(1, 2)) @ self.channel_kernel[...].astype(x.dtype) + self.channel_bias[...]
            channel = straight_through_gate(logits, t)
        else:
            channel = jnp.ones((b, self.groups), jnp.float32)
        return spatial, channel


def _masked_product(x, w, spatial, channel, group):
    """The reference for `gated_matmul`: (B, P, K) @ (K, F), times the masks."""
    y = jnp.einsum("bpk,kf->bpf", x, w)
    return y * spatial[..., None] * jnp.repeat(channel, group, axis=1)[:, None, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def gated_matmul(x, w, spatial, channel, group: int):
    """x (B, P, K) @ w (K, F) at the active positions (spatial (B, P) 0/1) and channel groups
    (channel (B, F / group) 0/1) through `kernels.skip.skip_matmul`; its VJP is that of the masked
    product (so the straight-through gates get their gradient)."""
    from kernels.skip import skip_matmul

    return skip_matmul(x, w, spatial_mask=spatial > 0, channel_mask=channel > 0, group=group)


def _gated_fwd(x, w, spatial, channel, group):
    return gated_matmul(x, w, spatial, channel, group), (x, w, spatial, channel)


def _gated_bwd(group, residuals, g):
    _, vjp = jax.vjp(lambda *a: _masked_product(*a, group), *residuals)
    return vjp(g)


gated_matmul.defvjp(_gated_fwd, _gated_bwd)


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
        sparsity: SparsityMethod = DenseMethod(),
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
        init = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
        self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self._init_stored_mask()
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.gates = Gates(in_features, shape, sparsity, rngs) if getattr(sparsity, "gates", False) else None

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
            from kernels.nm import im2col

            cols, (b, ho, wo) = im2col(x, self.layout.shape[:2], self.strides, self.padding)
            y = gated_matmul(cols.reshape(b, ho * wo, -1), weight.reshape(-1, self.out_features),
                             spatial.reshape(b, ho * wo), channel, group)
            y = y.reshape(b, ho, wo, self.out_features)
        else:
            y = self._conv(x, weight) * spatial[..., None] * jnp.repeat(channel, group, axis=1)[:, None, None, :]
        density = (spatial.mean(axis=(1, 2)) * channel.mean(axis=1)).mean()
        records = _GATES.get()
        if records is not None:
            records.append(GateRecord(self, density, spatial, channel))
        return y

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C_in) float -> (B, H', W', C_out)."""
        x = _hooked(self.layer_name, x)
        if self.gates is not None:
            y = self._gated(x)
        elif self.groups == 1 and (getattr(self.sparsity, "uses_project", False) or (
                self.density_logit is not None and getattr(self.sparsity, "activation_threshold", 0.0) > 0)):
            from kernels.nm import im2col

            cols, (b, ho, wo) = im2col(x, self.layout.shape[:2], self.strides, self.padding)
            w2d = self.kernel[...].astype(x.dtype).reshape(-1, self.out_features)
            effective2d = lambda: self.effective_kernel().astype(x.dtype).reshape(-1, self.out_features)
            y = self._matmul(cols, w2d, effective2d).reshape(b, ho, wo, self.out_features)
        else:
            y = self._conv(x, self.effective_kernel().astype(x.dtype))
        if self.bias is not None:
            y = y + self.bias[...]
        _record(
            cm_layers.Conv2D(
                name=self.layer_name,
                in_shape=tuple(x.shape[1:]),
                out_channels=self.out_features,
                kernel=self.layout.shape[:2],
                stride=self.strides,
                padding=self.padding,
                groups=self.groups,
            ),
            self,
        )
        return y


class SparseDense(SparseLayer):
    """Fully connected layer, weight (in_features, out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        name: str,
        use_bias: bool = True,
        sparsity: SparsityMethod = DenseMethod(),
        rngs: nnx.Rngs,
    ):
        shape = (in_features, out_features)
        self._setup(name, shape, 0, 1, sparsity)
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
        self._init_stored_mask()
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, in_features) -> (B, out_features)."""
        x = _hooked(self.layer_name, x)
        y = self._matmul(x, self.kernel[...].astype(x.dtype), lambda: self.effective_kernel().astype(x.dtype))
        if self.bias is not None:
            y = y + self.bias[...]
        _record(cm_layers.Dense(self.layer_name, *self.layout.shape), self)
        return y
