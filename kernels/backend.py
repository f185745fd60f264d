"""Where the kernels run, decided in one place.

impl="pallas": the Pallas kernel, compiled on GPU and TPU, interpreted (`interpret=True`, a jitted
  loop over the grid) on CPU, where Pallas cannot compile.
impl="xla": the same maths in plain jax.numpy, which XLA compiles well on every backend; the fast
  path for training on CPU.
impl=None picks "pallas" where Pallas compiles (GPU, TPU) and "xla" on CPU.
"""

from __future__ import annotations

import jax

IMPLS = ("pallas", "xla")


def resolve(impl: str | None) -> str:
    if impl is None:
        return "pallas" if jax.default_backend() in ("gpu", "tpu") else "xla"
    if impl not in IMPLS:
        raise ValueError(f"unknown kernel implementation {impl!r}; use one of {IMPLS} or None")
    return impl


def interpret() -> bool:
    """Pallas must be interpreted on CPU."""
    return jax.default_backend() not in ("gpu", "tpu")
