"""`balanced_group`: accelerator-aware pruning (Kang, IEEE TCSVT 2019, Sec. III).

The accelerator fetches `group` input activations at once (its input parallelism, read from the
hardware config: `hardware.pe_in` unless given) and multiplies them with the weights of each
filter; pruning keeps the same number `keep` of weights in every such group, so every PE does the
same work per fetch. The groups run along the input channels. Pruning is gradual: the kept count
falls from `group` to `keep` on a cubic schedule between the training fractions `ramp_start`
and `ramp_end`; the mask is recomputed from the weight magnitudes every step, with SR-STE's
straight-through gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal, Optional

import jax.numpy as jnp
from pydantic import Field, StrictInt, model_validator
from pydantic.dataclasses import dataclass

from cooptim.sparsity._config import STRICT, Fraction
from cooptim.sparsity._schedule import ramped
from cooptim.sparsity.base import PatternCheck, SparsityError, SparsityMethod, WeightLayout
from cooptim.sparsity.nm import check_count_per_group
from cost_models.sparsity import BalancedGroupPattern
from kernels.nm import group_rank



@dataclass(frozen=True, config=STRICT)
class BalancedGroup(SparsityMethod):
    method: Literal["balanced_group"] = "balanced_group"
    keep: Annotated[StrictInt, Field(ge=1)] = 8
    group: Optional[Annotated[StrictInt, Field(ge=1)]] = None
    ramp_start: Fraction = 0.0
    ramp_end: Fraction = 0.5
    decay: Annotated[float, Field(ge=0.0, strict=True)] = 2e-4
    learns_density = True

    @model_validator(mode="after")
    def _keep_at_most_group(self):
        if self.group is not None and self.keep > self.group:
            raise ValueError(f"keep={self.keep} is greater than group={self.group}")
        if self.ramp_end < self.ramp_start:
            raise ValueError(f"ramp_end={self.ramp_end} is before ramp_start={self.ramp_start}")
        return self

    def validate(self, layout: WeightLayout, layer: str) -> None:
        if self.group is None:
            raise SparsityError(f"layer {layer!r}: balanced_group needs a group size (hardware.pe_in)")
        if self.keep > self.group:
            raise SparsityError(f"layer {layer!r}: keep={self.keep} is greater than group={self.group} "
                                f"(the engine's input parallelism)")
        size = layout.shape[layout.in_axis]
        if size % self.group:
            raise SparsityError(f"layer {layer!r}: group={self.group} (the engine's input parallelism) does "
                                f"not divide its {size} input channels (weight shape {tuple(layout.shape)})")

    def kept(self, progress):
        """Weights kept per group at this point of training (a traced integer-valued float)."""
        return jnp.round(ramped(self.keep, progress, self.ramp_start, self.ramp_end, initial=self.group))

    def mask(self, weight, layout: WeightLayout, progress=1.0):
        return (group_rank(weight, self.group, layout.in_axis) < self.kept(progress)).astype(weight.dtype)

    def nominal_density(self) -> float:
        return self.keep / self.group

    def keep_at(self, density) -> int:
        """Kept weights per group at a density: round(density x group), at least 1."""
        return max(1, min(self.group, round(float(density) * self.group)))

    def at_density(self, density: float) -> "BalancedGroup":
        return dataclasses.replace(self, keep=self.keep_at(density))

    def quantize_density(self, density):
        """The density the mask at `density` has (after the ramp): round(density x group) / group."""
        return jnp.clip(jnp.round(density * self.group), 1, self.group) / self.group

    def mask_at(self, weight, layout: WeightLayout, density, progress=1.0):
        """The mask keeping round(density x group) per group (a traced density)."""
        keep = jnp.clip(jnp.round(density * self.group), 1, self.group)
        kept = jnp.round(ramped(keep, progress, self.ramp_start, self.ramp_end, initial=self.group))
        return (group_rank(weight, self.group, layout.in_axis) < kept).astype(weight.dtype)

    def density(self, weight, layout, progress=1.0):
        return self.kept(progress) / self.group

    def pattern(self) -> BalancedGroupPattern:
        return BalancedGroupPattern(self.keep, self.group)

    def check(self, mask, layout: WeightLayout) -> PatternCheck:
        return check_count_per_group(mask, self.keep, self.group, layout.in_axis)
