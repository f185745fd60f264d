"""`unstructured`: HASS's unstructured weight and activation sparsity (Yu et al., FPL 2024).

Weights: magnitude pruning per layer, to a target `weight_density` (the threshold is that
quantile of |W|, recomputed every step and ramped on a cubic schedule) or at a fixed
`weight_threshold`. Activations: a thresholded ReLU on the layer's input, zeroing every input of
magnitude at most `activation_threshold` (HASS induces activation sparsity this way). The
thresholds are per layer (per-layer overrides in the config); the search over them is
`cooptim.search` (co-optimization issue). Gradients: SR-STE on weights; activations pass their
gradient where they are kept (the exact gradient of x * mask).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal, Optional

import jax.numpy as jnp
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from cooptim.sparsity._config import STRICT, Fraction
from cooptim.sparsity._schedule import ramped
from cooptim.sparsity.base import PatternCheck, SparsityMethod, WeightLayout
from cost_models.sparsity import UnstructuredPattern



@dataclass(frozen=True, config=STRICT)
class Unstructured(SparsityMethod):
    method: Literal["unstructured"] = "unstructured"
    weight_density: Optional[Annotated[float, Field(gt=0.0, le=1.0, strict=True)]] = None
    weight_threshold: Optional[Annotated[float, Field(ge=0.0, strict=True)]] = None
    activation_threshold: Annotated[float, Field(ge=0.0, strict=True)] = 0.0
    ramp_start: Fraction = 0.0
    ramp_end: Fraction = 0.5
    decay: Annotated[float, Field(ge=0.0, strict=True)] = 2e-4
    learns_density = True

    @model_validator(mode="after")
    def _one_weight_rule(self):
        if (self.weight_threshold is None) == (self.weight_density is None):
            raise ValueError("give exactly one of weight_density and weight_threshold")
        return self

    @property
    def uses_project(self) -> bool:
        return self.activation_threshold > 0

    def threshold(self, weight, progress=1.0):
        if self.weight_threshold is not None:
            return ramped(jnp.float32(self.weight_threshold), progress, self.ramp_start, self.ramp_end, initial=0.0)
        target = ramped(self.weight_density, progress, self.ramp_start, self.ramp_end)
        return jnp.quantile(jnp.abs(weight), 1.0 - target)

    def nominal_density(self) -> float:
        """The density this configuration aims at (1 for a fixed threshold: learned from dense)."""
        return 1.0 if self.weight_density is None else self.weight_density

    def at_density(self, density: float) -> "Unstructured":
        return dataclasses.replace(self, weight_density=float(density), weight_threshold=None)

    def mask_at(self, weight, layout: WeightLayout, density, progress=1.0):
        """The mask at a traced per-layer density (co-optimization's density variable)."""
        target = ramped(density, progress, self.ramp_start, self.ramp_end)
        threshold = jnp.quantile(jnp.abs(weight), 1.0 - target)
        return ((jnp.abs(weight) > threshold) | (threshold <= jnp.min(jnp.abs(weight)))).astype(weight.dtype)

    def mask(self, weight, layout: WeightLayout, progress=1.0):
        threshold = self.threshold(weight, progress)
        keep = jnp.abs(weight) > threshold
        # at density 1 the quantile is the smallest magnitude: keep it too
        keep = keep | (threshold <= jnp.min(jnp.abs(weight)))
        return keep.astype(weight.dtype)

    def project(self, x2d, weight2d, layout2d, progress=1.0):
        x = x2d * (jnp.abs(x2d) > self.activation_threshold)
        return x @ self.apply(weight2d, layout2d, progress)

    def pattern(self) -> UnstructuredPattern:
        return UnstructuredPattern()

    def check(self, mask, layout: WeightLayout) -> PatternCheck:
        return PatternCheck(True, "unstructured: any pattern is valid")
