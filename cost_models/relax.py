"""Smooth relaxations of the discrete cost model, each with an exact limit.

- `smooth_max`: the pipeline bottleneck max_l x_l becomes a log-sum-exp in log space,
  exp(T * logsumexp(log x / T)); it is >= max and tends to it as T -> 0 (it is scale-free: the
  temperature is a relative tolerance, not in cycles).
- `soft_ceil` (in `cost_models.sparsity`): ceil as a sum of sigmoid steps.
- Continuous folding: folding factors are exp(theta) for a free theta, so gradient steps move
  them multiplicatively, and `nearest_divisor` snaps each back to a valid divisor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cost_models.sparsity import soft_ceil

__all__ = ["smooth_max", "soft_ceil", "folding_from_log", "log_of_folding", "nearest_divisor"]


def smooth_max(x: jax.Array, temperature: float | None, axis: int = -1, xp=jnp) -> jax.Array:
    """max(x) along `axis` for positive x; with a temperature, the log-space log-sum-exp. `xp`:
    numpy computes the exact max of concrete inputs without JAX."""
    if temperature is None:
        return xp.max(x, axis=axis)
    # A zero entry (a layer with no work left) has log -inf and no weight; the double where keeps
    # its gradient 0, the limit, rather than 0 x inf = NaN.
    positive = x > 0
    logs = jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)) / temperature, -jnp.inf)
    return jnp.exp(temperature * jax.nn.logsumexp(logs, axis=axis))


def folding_from_log(theta, lower, upper):
    """Continuous folding exp(theta), clipped to [lower, upper] (per layer arrays)."""
    return jnp.clip(jnp.exp(theta), lower, upper)


def log_of_folding(folding):
    return jax.tree.map(lambda f: jnp.log(jnp.asarray(f, jnp.float32)), folding)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def nearest_divisor(value: float, n: int) -> int:
    """The divisor of n nearest to `value` in log space (folding is multiplicative)."""
    ds = np.array(divisors(n))
    return int(ds[np.argmin(np.abs(np.log(ds) - np.log(max(value, 1e-9))))])
