"""`nm`: N:M fine-grained weight sparsity trained with SR-STE.

Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch",
ICLR 2021. In every group of M consecutive weights along the pruning axis (by default the input
channels, the reduction axis of the layer) the N of largest magnitude are kept. The mask is
recomputed from the dense weights at every step. The forward pass uses the masked weights; the
backward pass is the sparse-refined straight-through estimator (Sec. 4.2, Eq. 6):

    g_dense = g(W * mask) + decay * (1 - mask) * W

which passes the gradient straight through to every dense weight and pulls the pruned ones
towards zero so that the mask stops oscillating.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field, StrictBool, StrictInt, model_validator
from pydantic.dataclasses import dataclass

from cooptim.sparsity._config import STRICT
from cooptim.sparsity.base import PatternCheck, SparsityError, SparsityMethod, WeightLayout
from cost_models.sparsity import NMPattern
from kernels.nm import bdwp_matmul, group_rank, nm_mask  # the one N:M magnitude mask, shared with the kernels


def count_per_group(mask, m: int, axis: int) -> np.ndarray:
    """Number of ones in each group of M along `axis` (NumPy, for checks and reports)."""
    moved = np.moveaxis(np.asarray(mask), axis, -1)
    return (moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m) != 0).sum(-1)


def check_count_per_group(mask, keep: int, m: int, axis: int) -> PatternCheck:
    """Does every group of `m` along `axis` keep exactly `keep`? (N:M, BDWP, Kang's groups)"""
    counts = count_per_group(mask, m, axis)
    bad = int((counts != keep).sum())
    if bad:
        return PatternCheck(False, f"{bad} of {counts.size} groups do not keep exactly {keep} of {m}")
    return PatternCheck(True, f"all {counts.size} groups keep {keep} of {m}")


@dataclass(frozen=True, config=STRICT)
class NM(SparsityMethod):
    """N:M sparsity with SR-STE.

    Attributes:
      n: weights kept per group.
      m: group size.
      axis: "input" (the reduction axis: input channels of a conv, rows of a dense kernel) or
        "output".
      decay: SR-STE's lambda_w, the decay on pruned weights (the paper uses 2e-4).
      kernel: compute the layer through `kernels.nm` (compressed N:M matmul: Pallas on GPU, XLA
        on CPU) instead of a dense op on the masked weight; same values, same gradients.
      mask_interval: recompute the mask from the weights every this many steps (1: every step, as
        SR-STE does); in between, the stored mask is used (it is checkpointed with the model).
    """

    method: Literal["nm"] = "nm"
    n: Annotated[StrictInt, Field(ge=1)] = 2
    m: Annotated[StrictInt, Field(ge=1)] = 4
    axis: Literal["input", "output"] = "input"
    decay: Annotated[float, Field(ge=0.0, strict=True)] = 2e-4
    kernel: StrictBool = False
    mask_interval: Annotated[StrictInt, Field(ge=1)] = 1
    learns_density = True

    @model_validator(mode="after")
    def _n_at_most_m(self):
        if self.kernel and self.mask_interval > 1:
            raise ValueError("kernel: true recomputes the mask inside the kernel call; it cannot be "
                             "combined with mask_interval > 1")
        if self.n > self.m:
            raise ValueError(f"N={self.n} is greater than M={self.m}: N:M keeps N of every M")
        return self

    def validate(self, layout: WeightLayout, layer: str) -> None:
        if self.kernel and self.axis != "input":
            raise SparsityError(f"layer {layer!r}: kernel=true needs axis=input (the kernels prune "
                                f"the reduction axis)")
        axis = layout.axis(self.axis)
        size = layout.shape[axis]
        if size % self.m:
            raise SparsityError(
                f"layer {layer!r}: M={self.m} does not divide the {self.axis} axis of its weight "
                f"(shape {tuple(layout.shape)}, axis {axis} has size {size})"
            )

    def mask(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array:
        del progress
        return nm_mask(weight, self.n, self.m, layout.axis(self.axis))

    def density(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array:
        del weight, layout, progress
        return jnp.float32(self.n / self.m)

    def nominal_density(self) -> float:
        return self.n / self.m

    def at_density(self, density: float) -> "NM":
        """The N:M pattern nearest a density: N = round(density x M), at least 1 (per-layer choice
        among the allowed patterns 1:M .. M:M)."""
        return dataclasses.replace(self, n=max(1, min(self.m, round(float(density) * self.m))))

    def quantize_density(self, density):
        """The density the mask at `density` has: round(density x M) / M, at least 1 / M."""
        return jnp.clip(jnp.round(density * self.m), 1, self.m) / self.m

    def mask_at(self, weight, layout: WeightLayout, density, progress=1.0):
        del progress
        n = jnp.clip(jnp.round(density * self.m), 1, self.m)
        return (group_rank(weight, self.m, layout.axis(self.axis)) < n).astype(weight.dtype)

    @property
    def uses_project(self) -> bool:
        return self.kernel

    def project(self, x2d, weight2d, layout2d, progress=1.0):
        """x @ the masked weight through kernels.nm's compressed matmul; its VJP is the exact
        gradient at the current mask, so SR-STE applies unchanged."""
        return bdwp_matmul(x2d, self.apply(weight2d, layout2d), self.n, self.m, "same", "dense", None)

    def pattern(self) -> NMPattern:
        return NMPattern(n=self.n, m=self.m, axis=self.axis)

    def check(self, mask, layout: WeightLayout) -> PatternCheck:
        return check_count_per_group(mask, self.n, self.m, layout.axis(self.axis))
