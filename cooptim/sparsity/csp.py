"""`csp`: cascading structured pruning (Hanson et al., ISCA 2022).

Reconstruction from the paper's description of its pattern (Sec. 3, as summarised in
shared/research/seed_papers.md; no public code): the weights are viewed as a matrix whose rows are
the layer's input positions (K_h x K_w x C_in) and whose columns are the output channels, split
into chunks of `chunk` channels. For each row, the chunks that are kept form a *prefix*: chunk j is
pruned when the L1 norm of the cascade from chunk j to the last chunk is below a threshold, so
every later chunk of the row is pruned too. Each row is then described by one length L (its kept
chunks), which lets the hardware read an activation once and stream a run of consecutive weights
whose length is a counter, with no indices.

Here the threshold is set per layer, every step, to the quantile that keeps a fraction
of the (row, chunk) cascades; that fraction ramps from 1 to `weight_density` on a cubic schedule. Gradients are SR-STE's.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import jax.numpy as jnp
import numpy as np
from pydantic import Field, StrictInt
from pydantic.dataclasses import dataclass

from cooptim.sparsity._config import STRICT, Fraction
from cooptim.sparsity._schedule import ramped
from cooptim.sparsity.base import PatternCheck, SparsityError, SparsityMethod, WeightLayout
from cost_models.sparsity import CSPPattern



def _as_rows(x, layout: WeightLayout):
    """(..., out at out_axis) -> (rows, C_out): the CSP matrix view."""
    moved = jnp.moveaxis(x, layout.out_axis, -1)
    return moved.reshape(-1, moved.shape[-1]), moved.shape


def cascade_lengths(mask, layout: WeightLayout, chunk: int) -> np.ndarray:
    """Each row's number of kept chunks (NumPy), for checks and the exporter."""
    rows, _ = _as_rows(jnp.asarray(mask), layout)
    kept = np.asarray(rows).reshape(rows.shape[0], -1, chunk).any(-1)
    return kept.sum(-1)


@dataclass(frozen=True, config=STRICT)
class CSP(SparsityMethod):
    method: Literal["csp"] = "csp"
    weight_density: Annotated[float, Field(gt=0.0, le=1.0, strict=True)] = 0.5
    chunk: Annotated[StrictInt, Field(ge=1)] = 4
    ramp_start: Fraction = 0.0
    ramp_end: Fraction = 0.5
    decay: Annotated[float, Field(ge=0.0, strict=True)] = 2e-4
    learns_density = True

    def validate(self, layout: WeightLayout, layer: str) -> None:
        c_out = layout.shape[layout.out_axis]
        if c_out % self.chunk:
            raise SparsityError(f"layer {layer!r}: chunk={self.chunk} does not divide its {c_out} output "
                                f"channels (weight shape {tuple(layout.shape)})")

    def target(self, progress):
        return ramped(self.weight_density, progress, self.ramp_start, self.ramp_end)

    def nominal_density(self) -> float:
        return self.weight_density

    def at_density(self, density: float) -> "CSP":
        return dataclasses.replace(self, weight_density=float(density))

    def mask(self, weight, layout: WeightLayout, progress=1.0):
        return self.mask_at(weight, layout, self.weight_density, progress)

    def mask_at(self, weight, layout: WeightLayout, density, progress=1.0):
        """The cascade mask at a (possibly traced) density."""
        target = ramped(density, progress, self.ramp_start, self.ramp_end)
        rows, moved_shape = _as_rows(weight, layout)
        n_rows, c_out = rows.shape
        chunk_l1 = jnp.abs(rows).reshape(n_rows, c_out // self.chunk, self.chunk).sum(-1)
        cascade = jnp.flip(jnp.cumsum(jnp.flip(chunk_l1, -1), -1), -1)  # L1 of chunks j..end
        tau = jnp.quantile(cascade, 1.0 - target)
        keep = cascade >= tau  # cascade norms fall along a row, so the kept chunks are a prefix
        full = jnp.repeat(keep, self.chunk, axis=-1).astype(weight.dtype).reshape(moved_shape)
        return jnp.moveaxis(full, -1, layout.out_axis)

    def density(self, weight, layout, progress=1.0):
        return self.target(progress)

    def pattern(self) -> CSPPattern:
        return CSPPattern(chunk=self.chunk, kept=self.weight_density)

    def check(self, mask, layout: WeightLayout) -> PatternCheck:
        rows, _ = _as_rows(jnp.asarray(mask), layout)
        rows = np.asarray(rows).reshape(rows.shape[0], -1, self.chunk)
        whole = (rows.all(-1) | ~rows.any(-1)).all()  # chunks are kept or pruned whole
        kept = rows.any(-1)
        prefix = (np.diff(kept.astype(int), axis=-1) <= 0).all()  # no kept chunk after a pruned one
        ok = bool(whole and prefix)
        return PatternCheck(ok, "every row keeps a prefix of whole chunks" if ok else
                            "a row keeps a chunk after a pruned one, or part of a chunk")
