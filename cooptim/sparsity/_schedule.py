"""Gradual pruning schedule shared by the methods that prune progressively."""

import jax.numpy as jnp


def cubic_ramp(progress, start: float, end: float):
    """0 -> 1 between training fractions `start` and `end`, cubic (Zhu & Gupta, 2017, Eq. 1):
    s(p) = 1 - (1 - (p - start) / (end - start))**3, prunes fast early and slowly late."""
    t = jnp.clip((jnp.asarray(progress, jnp.float32) - start) / max(end - start, 1e-9), 0.0, 1.0)
    return 1.0 - (1.0 - t) ** 3


def ramped(final, progress, start: float, end: float, initial=1.0):
    """The value of a pruning parameter that goes from `initial` (dense) to `final` on the cubic
    ramp: initial - (initial - final) x s(p). Densities ramp from 1; kept counts from the group."""
    return initial - (initial - final) * cubic_ramp(progress, start, end)
