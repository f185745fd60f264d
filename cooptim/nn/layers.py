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
import contextvars
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cooptim.sparsity import Dense as DenseMethod
from cooptim.sparsity import SparsityMethod, WeightLayout
from cost_models import layers as cm_layers

_RECORDER: contextvars.ContextVar[list | None] = contextvars.ContextVar("cooptim_recorder", default=None)


@contextlib.contextmanager
def record_layers() -> Iterator[list]:
    """Collects (description, layer) for every sparse layer run inside the block, in order."""
    records: list = []
    token = _RECORDER.set(records)
    try:
        yield records
    finally:
        _RECORDER.reset(token)


def _record(description, layer) -> None:
    records = _RECORDER.get()
    if records is not None:
        records.append((description, layer))


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class Progress(nnx.Variable):
    """Fraction of training done, in [0, 1]: methods with gradual pruning schedule their sparsity by
    it. The trainer sets it every step (`set_progress`); it is 1 outside training. Not trained."""


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

    def _init_stored_mask(self) -> None:
        """Assigned once, after the weight exists (NNX fixes an attribute's kind at first assignment)."""
        if getattr(self.sparsity, "mask_interval", 1) > 1:
            self.stored_mask = StoredMask(self.sparsity.mask(self.kernel[...], self.layout))
        else:
            self.stored_mask = None

    def effective_kernel(self) -> jax.Array:
        """The weight the forward pass uses (masked by the method)."""
        if self.stored_mask is not None:
            return self.sparsity.apply_mask(self.kernel[...], self.stored_mask[...])
        return self.sparsity.apply(self.kernel[...], self.layout, self.progress[...])

    def mask(self) -> jax.Array:
        """The 0/1 keep-mask the forward pass uses."""
        if self.stored_mask is not None:
            return self.stored_mask[...]
        return self.sparsity.mask(self.kernel[...], self.layout, self.progress[...])

    def density(self) -> jax.Array:
        return self.sparsity.density(self.kernel[...], self.layout, self.progress[...])

    def _matmul(self, x2d: jax.Array, weight2d: jax.Array, effective2d) -> jax.Array:
        """x (rows, K) @ the layer's weight as a (K, N) matrix. Methods that change the matmul
        itself (BDWP's backward mask, the kernels' compressed path) get the dense weight through
        `project`; the others multiply by their effective weight."""
        if getattr(self.sparsity, "uses_project", False):
            layout2d = WeightLayout(weight2d.shape, in_axis=0, out_axis=1)
            return self.sparsity.project(x2d, weight2d, layout2d, self.progress[...])
        return x2d @ effective2d()


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

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C_in) float -> (B, H', W', C_out)."""
        if getattr(self.sparsity, "uses_project", False) and self.groups == 1:
            from kernels.nm import im2col

            cols, (b, ho, wo) = im2col(x, self.layout.shape[:2], self.strides, self.padding)
            w2d = self.kernel[...].astype(x.dtype).reshape(-1, self.out_features)
            effective2d = lambda: self.effective_kernel().astype(x.dtype).reshape(-1, self.out_features)
            y = self._matmul(cols, w2d, effective2d).reshape(b, ho, wo, self.out_features)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                self.effective_kernel().astype(x.dtype),
                window_strides=self.strides,
                padding=self.padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=self.groups,
            )
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
        y = self._matmul(x, self.kernel[...].astype(x.dtype), lambda: self.effective_kernel().astype(x.dtype))
        if self.bias is not None:
            y = y + self.bias[...]
        _record(cm_layers.Dense(self.layer_name, *self.layout.shape), self)
        return y
