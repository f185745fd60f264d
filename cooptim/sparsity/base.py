"""The interface every sparsity method implements.

A method is a small frozen (pydantic) dataclass: its fields are the method's parameters as they
appear in a config, and it is hashable, so a Flax layer can hold it as static structure. It
answers five questions about one weight tensor:

  validate(layout, layer)   can this method prune a weight of this shape? (raises SparsityError)
  mask(w, layout, p)        the 0/1 keep-mask, same shape and dtype as w
  apply(w, layout, p)       the effective weight used in the forward pass, with the method's
                            straight-through gradient back to the dense weight
  density(w, layout, p)     the fraction of weights kept, a differentiable scalar
  pattern()                 the frozen hardware-pattern descriptor the cost model reads
  check(mask, layout)       does a mask satisfy the pattern's invariant? -> PatternCheck

`p` is the fraction of training done (0..1; 1 outside training), for gradual pruning schedules.
A method that changes the matmul itself (BDWP) sets `uses_project = True` and implements
`project(x2d, w2d, layout2d, p)`: x (rows, K) @ its (K, N) weight, given the dense weight.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import jax

from cost_models.sparsity import Pattern


class SparsityError(ValueError):
    """A sparsity method cannot be applied to a layer (shape, parameters)."""


@dataclasses.dataclass(frozen=True)
class WeightLayout:
    """Where a weight tensor keeps its input (reduction) and output axes.

    Dense kernels are (in, out): in_axis=0, out_axis=1. Conv kernels are HWIO: in_axis=2,
    out_axis=3.
    """

    shape: tuple[int, ...]
    in_axis: int
    out_axis: int

    def axis(self, which: str) -> int:
        return {"input": self.in_axis, "output": self.out_axis}[which]


@dataclasses.dataclass(frozen=True)
class PatternCheck:
    """The result of checking a mask against a method's structural invariant."""

    ok: bool
    detail: str


@runtime_checkable
class SparsityMethod(Protocol):
    method: str

    def validate(self, layout: WeightLayout, layer: str) -> None: ...

    def mask(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array: ...

    def apply(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array: ...

    def density(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array: ...

    def pattern(self) -> Pattern: ...

    def check(self, mask, layout: WeightLayout) -> PatternCheck: ...
