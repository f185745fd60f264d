"""Weight initialisers.

`fan_in_truncated_normal(scale)` gives the same values as
``nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal")`` (flax's default for
kernels, He init at scale 2), drawn as one flat vector and reshaped. With JAX's partitionable
threefry the random bits depend only on the flat index, so the values are identical; XLA:CPU
compiles the flat draw about ten times faster than a 4-D one (measured: 0.4 s against 4.9 s for a
(3, 3, 4, 8) kernel), and a model build compiles one draw per weight shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

TRUNCATED_STD = 0.87962566103423978  # the std of a standard normal truncated to (-2, 2)


def fan_in_truncated_normal(scale: float):
    """Initialiser of a kernel whose last axis is the output and the rest its fan-in (HWIO, (in, out))."""

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        shape = tuple(shape)
        fan_in = math.prod(shape[:-1])
        std = jnp.sqrt(jnp.asarray(scale / fan_in, dtype)) / jnp.asarray(TRUNCATED_STD, dtype)
        return jax.random.truncated_normal(key, -2, 2, (math.prod(shape),), dtype).reshape(shape) * std

    return init
