"""`bdwp`: SAT's bidirectional weight pruning (Fang et al., IEEE TCAD 2023, Sec. III-A).

The forward pass uses W pruned N:M along its input axis; the input-gradient pass dX = dY W^T uses
W pruned N:M along W's output axis (the reduction axis of that product), so both matmuls are N:M
sparse on SAT's accelerator. Both masks are recomputed from the weights at every step; the weight
update is dense with SR-STE's decay on the forward-pruned weights. The compute runs through
`kernels.nm.bdwp_matmul` (its custom VJP carries the backward mask). 2:8 by default, as in SAT.
"""

from __future__ import annotations

from typing import Annotated, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, StrictInt, model_validator
from pydantic.dataclasses import dataclass

from cooptim.sparsity._config import STRICT
from cooptim.sparsity.base import PatternCheck, SparsityError, SparsityMethod, WeightLayout, straight_through
from cooptim.sparsity.nm import check_count_per_group
from cost_models.sparsity import NMPattern
from kernels.nm import bdwp_matmul, nm_mask


@dataclass(frozen=True, config=STRICT)
class BDWP(SparsityMethod):
    """Bidirectional N:M.

    Attributes:
      n, m: the N:M pattern of both passes.
      backward_source: the backward mask from the dense W ("dense", SAT) or from the
        forward-pruned W ("forward", as Bi-Mask does).
      weight_grad: "dense" (SR-STE) or "masked" by the forward mask.
      decay: SR-STE's decay on forward-pruned weights.
    """

    method: Literal["bdwp"] = "bdwp"
    n: Annotated[StrictInt, Field(ge=1)] = 2
    m: Annotated[StrictInt, Field(ge=1)] = 8
    backward_source: Literal["dense", "forward"] = "dense"
    weight_grad: Literal["dense", "masked"] = "dense"
    decay: Annotated[float, Field(ge=0.0, strict=True)] = 2e-4

    @model_validator(mode="after")
    def _n_at_most_m(self):
        if self.n > self.m:
            raise ValueError(f"N={self.n} is greater than M={self.m}: N:M keeps N of every M")
        return self

    def validate(self, layout: WeightLayout, layer: str) -> None:
        for which in ("input", "output"):
            size = layout.shape[layout.axis(which)]
            if size % self.m:
                raise SparsityError(f"layer {layer!r}: M={self.m} does not divide the {which} axis of its "
                                    f"weight (shape {tuple(layout.shape)}, size {size}); BDWP prunes both")

    def mask(self, weight, layout: WeightLayout, progress=1.0):
        return nm_mask(weight, self.n, self.m, layout.in_axis)

    def density(self, weight, layout, progress=1.0):
        return jnp.float32(self.n / self.m)

    @property
    def uses_project(self) -> bool:
        return True

    def project(self, x2d, weight2d, layout2d, progress=1.0):
        mask = jax.lax.stop_gradient(nm_mask(weight2d, self.n, self.m, 0))
        w = straight_through(weight2d, mask, self.decay, False)  # the kernel masks it
        return bdwp_matmul(x2d, w, self.n, self.m, self.backward_source, self.weight_grad, None)

    def pattern(self) -> NMPattern:
        return NMPattern(self.n, self.m, "input")

    def check(self, mask, layout: WeightLayout) -> PatternCheck:
        return check_count_per_group(mask, self.n, self.m, layout.in_axis)
