"""Where the kernels run, decided in one place.

impl="pallas": the Pallas kernel, compiled on GPU and TPU, interpreted (`interpret=True`, a jitted
  loop over the grid) on CPU, where Pallas cannot compile.
impl="xla": the same maths in plain jax.numpy, which XLA compiles well on every backend; the fast
  path for training on CPU.
impl=None picks "pallas" on TPU and "xla" on CPU and GPU. On GPU, measured on an H200 (jax 0.11.2,
  `benchmarks/gpu_check.sh`): Pallas's Triton lowering needs every block a power of two in size
  (the N:M kernels' blocks follow the layer's shape) and has no scalar prefetch (the skip and
  cascade kernels are built on it), so the kernels do not lower there yet.
"""

from __future__ import annotations

import jax

from kernels import fixed_point as fp

IMPLS = ("pallas", "xla")


def resolve(impl: str | None, *, scalar_prefetch: bool = False) -> str:
    """The implementation to run. `scalar_prefetch`: the kernel needs it (Pallas on GPU has none,
    so asking for it there is an error naming the reason, not a lowering traceback)."""
    if impl is None:
        return "pallas" if jax.default_backend() == "tpu" else "xla"
    if impl not in IMPLS:
        raise ValueError(f"unknown kernel implementation {impl!r}; use one of {IMPLS} or None")
    if impl == "pallas" and scalar_prefetch and jax.default_backend() == "gpu":
        raise KernelInputError("this kernel needs scalar prefetch, which Pallas's Triton (GPU) backend does not "
                               "have: use impl='xla' (or None) on GPU")
    return impl


def interpret() -> bool:
    """Pallas must be interpreted on CPU."""
    return jax.default_backend() not in ("gpu", "tpu")


class KernelInputError(ValueError):
    """Kernel inputs that break a kernel's contract (shapes, dtypes, patterns); raised before any
    kernel runs."""


def integer_mode(x, w, error=KernelInputError) -> bool:
    """True for int8 x int8 (integer emulation), False for float32 / bfloat16; else an error."""
    import jax.numpy as jnp

    xi, wi = jnp.issubdtype(x.dtype, jnp.integer), jnp.issubdtype(w.dtype, jnp.integer)
    if xi != wi:
        raise error(f"mixed dtypes: activations {x.dtype}, weights {w.dtype} (both integer or both float)")
    if xi and (x.dtype != jnp.int8 or w.dtype != jnp.int8):
        raise error(f"integer mode takes int8 x int8, got {x.dtype} x {w.dtype}")
    if xi and jax.default_backend() == "gpu":
        # measured on an H200 (jax 0.11.2, benchmarks/gpu_check.sh): the int8 skip and cascade
        # results differed from the golden model on the XLA path too; refuse rather than be wrong
        raise error("the integer kernels are not bit-exact on GPU yet: run the fixed-point emulation on the CPU "
                    "(JAX_PLATFORMS=cpu)")
    if not xi and x.dtype not in (jnp.float32, jnp.bfloat16):
        raise error(f"float mode takes float32 or bfloat16, got {x.dtype}")
    return bool(xi)


def check_int32(k: int, error=KernelInputError) -> None:
    """The int32 sum of k int8 x int8 products cannot overflow (|x|, |w| <= 128)."""
    if k * 128 * 128 > 2**31 - 1:
        raise error(f"a reduction of {k} int8 x int8 products could overflow int32 (limit 131,071)")


def check_acc_bits(acc_bits, error=KernelInputError) -> None:
    if acc_bits is not None and not 2 <= acc_bits <= 32:
        raise error(f"acc_bits must be 2..32, got {acc_bits}")


def finish_accumulator(acc, acc_bits, acc_overflow):
    """The exact int32 sum brought to the accumulator's width (saturate or wrap), once at the end."""
    if acc_bits is None or acc_bits >= 32:
        return acc
    return fp.overflow(acc, fp.Format(acc_bits, 0), acc_overflow)
