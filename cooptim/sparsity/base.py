"""The contract every sparsity method implements: one base class with documented defaults.

A method is a small frozen (pydantic) dataclass that subclasses `SparsityMethod`: its fields are
the method's parameters as they appear in a config, and it is hashable, so a Flax layer holds it
as static structure. Adding a method is one file in this package (the registry finds it, see
`registry.py`). What a method answers about one weight tensor, with the default where one exists:

  validate(layout, layer)   can it prune a weight of this shape? (raises SparsityError; default: yes)
  mask(w, layout, p)        the 0/1 keep-mask, same shape and dtype as w (required)
  apply(w, layout, p)       the effective forward weight with the method's straight-through
                            gradient (default: SR-STE on `mask` with `decay`)
  density(w, layout, p)     the fraction of weights kept, a scalar (default: mean of `mask`)
  pattern()                 the frozen hardware pattern the cost model and exporter read (required)
  check(mask, layout)       does a mask satisfy the pattern's invariant? (required)
  project(x2d, w2d, l2d, p) x (rows, K) @ the layer's (K, N) weight, for methods that change the
                            matmul itself (BDWP, N:M through the kernels, HASS's activation
                            threshold); `uses_project` says whether the layer calls it (default: no)
  target_loss(d, target)    an auxiliary loss on a gated layer's measured density (default: 0)

Per-layer learned densities (co-optimization, `objective.learn_density`) need a method to set
`learns_density = True` and to implement `nominal_density`, `at_density`, `mask_at` and, where
its masks take only some densities, `quantize_density`.

`p` is the fraction of training done (0..1; 1 outside training), for gradual pruning schedules.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp

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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def straight_through(weight: jax.Array, mask: jax.Array, decay: float, masked: bool = True) -> jax.Array:
    """SR-STE (Zhou et al., ICLR 2021, Eq. 6): forward `weight * mask` (or `weight` itself with
    masked=False, when the caller masks it later, as BDWP's kernel does); backward passes the
    gradient straight to every dense weight plus `decay * (1 - mask) * weight`, which pulls the
    pruned weights towards zero. The mask gets no gradient."""
    return weight * mask if masked else weight


def _straight_through_fwd(weight, mask, decay, masked):
    return straight_through(weight, mask, decay, masked), (weight, mask)


def _straight_through_bwd(decay, masked, residuals, g):
    weight, mask = residuals
    return g + decay * (1.0 - mask) * weight, jnp.zeros_like(mask)


straight_through.defvjp(_straight_through_fwd, _straight_through_bwd)


def srste(weight: jax.Array, mask: jax.Array, decay: float) -> jax.Array:
    """The masked weight with SR-STE's gradient (`straight_through` with masked=True)."""
    return straight_through(weight, mask, decay, True)


class SparsityMethod:
    """Base class of the methods; subclasses are pydantic dataclasses (see the module docstring).

    Class attributes a method may override:
      gates: the layer builds DPACS gating heads for it (per-input skipping).
      learns_density: it supports a per-layer learned density.
    """

    method: ClassVar[str]
    gates: ClassVar[bool] = False
    learns_density: ClassVar[bool] = False

    # Fields some methods have; the defaults are what a method without them means.
    decay: ClassVar[float] = 0.0
    kernel: ClassVar[bool] = False
    mask_interval: ClassVar[int] = 1
    activation_threshold: ClassVar[float] = 0.0

    def validate(self, layout: WeightLayout, layer: str) -> None:
        del layout, layer

    def mask(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array:
        raise NotImplementedError

    def apply(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array:
        return self.apply_mask(weight, self.mask(weight, layout, progress))

    def apply_mask(self, weight: jax.Array, mask: jax.Array) -> jax.Array:
        """The effective weight for a given (stored or learned-density) mask, SR-STE gradient."""
        return srste(weight, jax.lax.stop_gradient(mask), self.decay)

    def density(self, weight: jax.Array, layout: WeightLayout, progress=1.0) -> jax.Array:
        return self.mask(weight, layout, progress).mean()

    @property
    def uses_project(self) -> bool:
        return False

    def project(self, x2d, weight2d, layout2d: WeightLayout, progress=1.0):
        raise NotImplementedError(f"{type(self).__name__} does not change the matmul")

    def target_loss(self, density: jax.Array, target=None) -> jax.Array:
        del density, target
        return jnp.float32(0.0)

    def pattern(self) -> Pattern:
        raise NotImplementedError

    def check(self, mask, layout: WeightLayout) -> PatternCheck:
        raise NotImplementedError

    # ------------------------------------------------ learned per-layer density (learns_density)

    def nominal_density(self) -> float:
        """The density this configuration aims at."""
        return 1.0

    def at_density(self, density: float) -> "SparsityMethod":
        """This method with its density parameter set to `density` (what reports describe)."""
        raise NotImplementedError(f"{type(self).__name__} has no density parameter")

    def mask_at(self, weight, layout: WeightLayout, density, progress=1.0):
        """The mask at a traced per-layer density."""
        raise NotImplementedError(f"{type(self).__name__} has no density parameter")

    def quantize_density(self, density):
        """The density a mask at `density` really has (identity for continuous densities)."""
        return density
