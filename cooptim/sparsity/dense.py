"""`dense`: no pruning. The baseline every method is compared against."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from pydantic.dataclasses import dataclass

from cooptim.sparsity.base import PatternCheck, SparsityMethod, WeightLayout
from cooptim.sparsity._config import STRICT
from cost_models.sparsity import DensePattern


@dataclass(frozen=True, config=STRICT)
class Dense(SparsityMethod):
    """Keep every weight."""

    method: Literal["dense"] = "dense"

    def validate(self, layout: WeightLayout, layer: str) -> None:
        del layout, layer

    def mask(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array:
        del progress, layout
        return jnp.ones_like(weight)

    def apply(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array:
        del progress, layout
        return weight

    def density(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array:
        del progress, weight, layout
        return jnp.float32(1.0)

    def pattern(self) -> DensePattern:
        return DensePattern()

    def check(self, mask, layout: WeightLayout) -> PatternCheck:
        del mask, layout
        return PatternCheck(True, "dense")
