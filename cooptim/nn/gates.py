"""DPACS's gating heads and the gated matmul (see `cooptim.sparsity.dynamic`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from cooptim.nn.init import fan_in_truncated_normal
from cooptim.sparsity.dynamic import straight_through_gate
from kernels.skip import skip_matmul


@dataclasses.dataclass(frozen=True)
class GateRecord:
    """What one dynamically gated layer did on one batch (a `taps.GateTap` value).

    density: the fraction of active (position, channel) pairs, batch mean: float32 scalar, with the
      straight-through gradient to the gates (what the sparsity-target loss and the cost use).
    spatial: (B, H_out, W_out) float32 0/1, the active output positions.
    channel: (B, C_out / channel_group) float32 0/1, the active channel groups.
    """

    density: jax.Array
    spatial: jax.Array
    channel: jax.Array


jax.tree_util.register_dataclass(GateRecord, data_fields=["density", "spatial", "channel"], meta_fields=[])


class Gates(nnx.Module):
    """DPACS's gating heads of one conv layer.

    spatial: a (K_h, K_w, C_in, 1) conv with the layer's window, stride and padding;
    channel: global average pool, then (C_in, C_out / channel_group). Both read the layer's input.
    """

    def __init__(self, in_features: int, weight_shape: tuple, method, rngs: nnx.Rngs):
        kh, kw, _, out = weight_shape
        self.method = method
        init = fan_in_truncated_normal(0.1)
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
    return skip_matmul(x, w, spatial_mask=spatial > 0, channel_mask=channel > 0, group=group)


def _gated_fwd(x, w, spatial, channel, group):
    return gated_matmul(x, w, spatial, channel, group), (x, w, spatial, channel)


def _gated_bwd(group, residuals, g):
    _, vjp = jax.vjp(lambda *a: _masked_product(*a, group), *residuals)
    return vjp(g)


gated_matmul.defvjp(_gated_fwd, _gated_bwd)
