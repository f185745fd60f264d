"""Fixed-point formats and the hardware's integer arithmetic: rounding, saturation, requantization.

A `Format` is (bits, frac, signed): an integer q stands for the real value q * 2**-frac. The
integer path never touches floating point: products and sums are exact integers, requantization
is an arithmetic shift with integer rounding, and overflow saturates or wraps.

Rounding (when dropping fractional bits):
  "half_up"   round half towards +infinity: floor(v + 1/2). One adder and a shift in hardware
              (Vivado HLS ap_fixed AP_RND). The default.
  "half_even" round half to even (convergent rounding, AP_RND_CONV): unbiased, a little more logic.
  "floor"     truncate towards -infinity (AP_TRN), the cheapest.
Overflow: "saturate" clamps to [min, max] (AP_SAT); "wrap" keeps the low `bits` bits, two's
complement (AP_WRAP).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Rounding = Literal["half_up", "half_even", "floor"]
Overflow = Literal["saturate", "wrap"]


class FixedPointError(ValueError):
    """A format, shift or value that the hardware arithmetic cannot represent."""


@dataclasses.dataclass(frozen=True)
class Format:
    """A fixed-point format: `bits` in total (sign included), `frac` fractional bits."""

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self):
        if not 1 <= self.bits <= 32:
            raise FixedPointError(f"fixed-point formats have 1..32 bits, got {self.bits}")
        if self.signed and self.bits < 2:
            raise FixedPointError("a signed format needs at least 2 bits")

    @property
    def min_int(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def dtype(self):
        """The smallest integer dtype that holds the format."""
        for dt in ((jnp.int8, jnp.int16, jnp.int32) if self.signed else (jnp.uint8, jnp.uint16, jnp.int32)):
            if jnp.iinfo(dt).min <= self.min_int and self.max_int <= jnp.iinfo(dt).max:
                return dt
        raise FixedPointError(f"{self} does not fit 32-bit integers")

    @property
    def scale(self) -> float:
        return 2.0 ** -self.frac

    def describe(self) -> str:
        return f"{'' if self.signed else 'u'}fixed<{self.bits},{self.bits - self.frac}>"


def frac_for_range(max_abs: float, bits: int, signed: bool = True) -> int:
    """The most fractional bits with which `max_abs` still fits `bits` bits (power-of-two scale)."""
    if not np.isfinite(max_abs):
        raise FixedPointError(f"cannot choose a format for a range of {max_abs}")
    if max_abs <= 0:
        return bits - (1 if signed else 0)
    int_bits = int(np.floor(np.log2(max_abs))) + 1  # bits left of the point for max_abs
    return bits - (1 if signed else 0) - int_bits


def overflow(q: jax.Array, fmt: Format, mode: Overflow = "saturate") -> jax.Array:
    """Brings integers into `fmt`'s range by saturating or two's-complement wrapping (int32 in/out)."""
    if mode not in ("saturate", "wrap"):
        raise FixedPointError(f"unknown overflow mode {mode!r}")
    q = jnp.asarray(q)
    # Called eagerly (the emulation runs node by node), one compiled program per (shape, format,
    # mode) instead of one per operation; inside a trace (a jit, a Pallas kernel) plain operations.
    return _overflow_impl(q, fmt, mode) if isinstance(q, jax.core.Tracer) else _overflow_jit(q, fmt, mode)


def _overflow_impl(q: jax.Array, fmt: Format, mode: Overflow) -> jax.Array:
    if mode == "saturate":
        return jnp.clip(q, fmt.min_int, fmt.max_int).astype(jnp.int32)
    if mode == "wrap":
        if fmt.bits == 32:
            return q.astype(jnp.int32)  # int32 arithmetic already wraps at 32 bits
        # int32 arithmetic is exact modulo 2**32, so the low `bits` bits of q - min are right
        low = jnp.bitwise_and(q.astype(jnp.int32) - fmt.min_int, (1 << fmt.bits) - 1)
        return (low + fmt.min_int).astype(jnp.int32)


_overflow_jit = jax.jit(_overflow_impl, static_argnums=(1, 2))


def shift_round(q: jax.Array, shift: int, rounding: Rounding = "half_up") -> jax.Array:
    """q * 2**-shift rounded to an integer (shift >= 0), or q * 2**(-shift) exactly (shift < 0).

    Integer only: an arithmetic right shift after adding the rounding constant.
    """
    _check_shifts(shift, rounding)
    q = jnp.asarray(q, jnp.int32)
    shift = int(shift)
    # as `overflow`: one compiled program per (shape, shift, rounding) when called eagerly
    return _shift_round_by(q, shift, rounding) if isinstance(q, jax.core.Tracer) else \
        _shift_round_jit(q, shift, rounding)


def _check_shifts(shifts, rounding: Rounding) -> None:
    if np.max(shifts) > 31:
        raise FixedPointError(f"a right shift of {int(np.max(shifts))} bits exceeds the 32-bit accumulator")
    if rounding not in ("floor", "half_up", "half_even"):
        raise FixedPointError(f"unknown rounding {rounding!r}")


def _shift_round_by(q: jax.Array, shifts, rounding: Rounding) -> jax.Array:
    """`shift_round` with `shifts` an int or an int32 array broadcast against q (per channel, per
    element): right shifts round, left shifts are exact."""
    right, left = jnp.maximum(shifts, 0), jnp.maximum(-shifts, 0)
    floor = jnp.right_shift(q, right)  # arithmetic: rounds towards -infinity
    rem = jnp.bitwise_and(q, jnp.left_shift(1, right) - 1)  # q - floor * 2**right, in [0, 2**right)
    half = jnp.where(right > 0, jnp.left_shift(1, jnp.maximum(right - 1, 0)), 0)  # 2**(right - 1)
    if rounding == "floor":
        up = jnp.zeros_like(q, dtype=bool)
    elif rounding == "half_up":
        up = (right > 0) & (rem >= half)
    else:  # half_even
        up = (right > 0) & ((rem > half) | ((rem == half) & (jnp.bitwise_and(floor, 1) == 1)))
    return jnp.where(shifts < 0, jnp.left_shift(q, left), floor + up.astype(jnp.int32))


_shift_round_jit = jax.jit(_shift_round_by, static_argnums=(1, 2))


def requantize(acc: jax.Array, acc_frac: int, out: Format, *, rounding: Rounding = "half_up",
               overflow_mode: Overflow = "saturate") -> jax.Array:
    """An accumulator with `acc_frac` fractional bits -> `out` (shift, round, then saturate/wrap).

    Args:
      acc: int32 integers.
      acc_frac: fractional bits of `acc` (a scalar, or per channel along the last axis).
    Returns:
      int32 integers in `out`'s range.
    """
    shifts = np.asarray(acc_frac) - out.frac
    if shifts.ndim == 0:
        return overflow(shift_round(acc, int(shifts), rounding), out, overflow_mode)
    _check_shifts(shifts, rounding)
    if isinstance(acc, jax.core.Tracer):
        return _requantize_channels(jnp.asarray(acc, jnp.int32), jnp.asarray(shifts, jnp.int32), out, rounding,
                                    overflow_mode)
    # Concrete values (the emulation, node by node): element-wise on the flattened values, padded
    # to a power-of-two length, so that a few compiled programs serve every layer and batch shape.
    values = np.asarray(acc, np.int32)
    size = values.size
    padded = 1 << max(size - 1, 0).bit_length()
    flat = np.zeros(padded, np.int32)
    flat[:size] = values.ravel()
    flat_shifts = np.zeros(padded, np.int32)
    flat_shifts[:size] = np.broadcast_to(shifts.astype(np.int32), values.shape).ravel()
    result = _requantize_channels(jnp.asarray(flat), jnp.asarray(flat_shifts), out, rounding, overflow_mode)
    return jnp.asarray(np.asarray(result)[:size].reshape(values.shape))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _requantize_channels(q: jax.Array, shifts: jax.Array, out: Format, rounding: Rounding,
                         overflow_mode: Overflow) -> jax.Array:
    """`requantize` with one shift per channel (last axis) or per element, all at once."""
    return overflow(_shift_round_by(q, shifts, rounding), out, overflow_mode)


def quantize(x, fmt: Format, *, rounding: Rounding = "half_up", overflow_mode: Overflow = "saturate"):
    """Real values -> integers of `fmt` (the one place where floats enter the integer path).

    Uses NumPy float64 so that x * 2**frac is exact for float32 inputs, then rounds as the hardware
    would and saturates or wraps.
    """
    v = np.asarray(x, np.float64) * (2.0 ** fmt.frac)
    if rounding == "half_up":
        q = np.floor(v + 0.5)
    elif rounding == "half_even":
        q = np.round(v)  # NumPy rounds half to even
    elif rounding == "floor":
        q = np.floor(v)
    else:
        raise FixedPointError(f"unknown rounding {rounding!r}")
    if overflow_mode == "saturate":
        q = np.clip(q, fmt.min_int, fmt.max_int)
    elif overflow_mode == "wrap":
        q = np.mod(q - fmt.min_int, 2.0 ** fmt.bits) + fmt.min_int
    else:
        raise FixedPointError(f"unknown overflow mode {overflow_mode!r}")
    return q.astype(np.int64).astype(np.dtype(fmt.dtype))


def dequantize(q, fmt: Format | int) -> np.ndarray:
    """Integers -> their real values (for reports; not part of the integer path)."""
    frac = fmt.frac if isinstance(fmt, Format) else np.asarray(fmt)
    return np.asarray(q, np.float64) * np.power(2.0, -frac)


def per_channel_frac(w: np.ndarray, bits: int, axis: int = -1) -> np.ndarray:
    """Power-of-two scales per channel: the most fractional bits at which each channel fits."""
    moved = np.moveaxis(np.abs(np.asarray(w, np.float64)), axis, -1)
    max_abs = moved.reshape(-1, moved.shape[-1]).max(axis=0)
    return np.array([frac_for_range(m, bits) for m in max_abs])
