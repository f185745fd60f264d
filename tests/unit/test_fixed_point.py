"""Fixed-point arithmetic: integer rounding, saturation and wrapping, bit-exact with the golden model."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import fixed_point as fp
from kernels import reference as ref


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(-2**30, 2**30 - 1), min_size=1, max_size=20),
       shift=st.integers(-4, 20), bits=st.integers(2, 24),
       rounding=st.sampled_from(["half_up", "half_even", "floor"]),
       overflow=st.sampled_from(["saturate", "wrap"]))
def test_requantize_is_bit_exact(values, shift, bits, rounding, overflow):
    acc = np.array(values, np.int64)
    if shift < 0:  # a left shift must not leave int32
        acc = acc >> 8
    fmt = fp.Format(bits, 0)
    got = fp.requantize(jnp.asarray(acc, jnp.int32), shift, fmt, rounding=rounding, overflow_mode=overflow)
    np.testing.assert_array_equal(np.asarray(got), ref.requantize(acc, shift, bits, rounding, overflow))


def test_rounding_modes_by_hand():
    halves = jnp.array([5, 7, -5, -7, 6])  # / 2 -> 2.5, 3.5, -2.5, -3.5, 3
    np.testing.assert_array_equal(fp.shift_round(halves, 1, "half_up"), [3, 4, -2, -3, 3])
    np.testing.assert_array_equal(fp.shift_round(halves, 1, "half_even"), [2, 4, -2, -4, 3])
    np.testing.assert_array_equal(fp.shift_round(halves, 1, "floor"), [2, 3, -3, -4, 3])


def test_quantize_saturates_wraps_and_rounds():
    q8 = fp.Format(8, 4)  # range -8 .. 7.9375 in steps of 1/16
    np.testing.assert_array_equal(fp.quantize([0.03125, -0.03125, 100.0, -100.0], q8), [1, 0, 127, -128])
    np.testing.assert_array_equal(fp.quantize([0.03125, 0.09375], q8, rounding="half_even"), [0, 2])
    assert int(fp.quantize([8.0], q8, overflow_mode="wrap")[0]) == -128
    assert fp.dequantize(fp.quantize([1.25], q8), q8)[0] == 1.25


def test_formats_and_power_of_two_scales():
    assert (fp.Format(8, 0).min_int, fp.Format(8, 0).max_int) == (-128, 127)
    assert (fp.Format(8, 0, signed=False).min_int, fp.Format(8, 0, signed=False).max_int) == (0, 255)
    assert fp.Format(8, 3).describe() == "fixed<8,5>"
    assert fp.frac_for_range(1.0, 8) == 6 and fp.frac_for_range(0.99, 8) == 7
    w = np.array([[0.5, 3.0], [-0.2, -1.5]])
    np.testing.assert_array_equal(fp.per_channel_frac(w, 8), [7, 5])
    for frac, column in zip(fp.per_channel_frac(w, 8), w.T):  # every channel fits its format
        q = fp.quantize(column, fp.Format(8, int(frac)))
        assert np.all(np.abs(fp.dequantize(q, int(frac)) - column) <= 2.0 ** -frac)


def test_per_channel_requantize():
    acc = jnp.array([[1000, 1000], [-999, 77]], jnp.int32)
    got = fp.requantize(acc, np.array([4, 2]), fp.Format(8, 0))
    np.testing.assert_array_equal(got, [[63, 127], [-62, 19]])


@pytest.mark.parametrize("rounding", ["half_up", "half_even", "floor"])
@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_per_channel_requantize_is_bit_exact_for_every_shift(rounding, overflow):
    """One shift per channel, all channels at once: right shifts with ties, no shift, left shifts."""
    rng = np.random.default_rng(0)
    shifts = np.array([-3, -1, 0, 1, 2, 5, 13, 20])
    acc = rng.integers(-2**22, 2**22, (64, len(shifts)))
    acc[:8] = (np.arange(-4, 4)[:, None] * 2 + 1) << np.maximum(shifts - 1, 0)  # exact ties where shift > 0
    got = np.asarray(fp.requantize(jnp.asarray(acc, jnp.int32), shifts, fp.Format(12, 0), rounding=rounding,
                                   overflow_mode=overflow))
    for c, shift in enumerate(shifts):
        np.testing.assert_array_equal(got[:, c], ref.requantize(acc[:, c], int(shift), 12, rounding, overflow))


def test_bad_formats():
    with pytest.raises(fp.FixedPointError, match="1..32 bits"):
        fp.Format(40, 0)
    with pytest.raises(fp.FixedPointError, match="exceeds the 32-bit accumulator"):
        fp.shift_round(jnp.array([1]), 40)


@pytest.mark.parametrize("rounding", ["half_up", "half_even", "floor"])
def test_the_largest_right_shift_rounds_like_the_golden_model(rounding):
    """A shift of 31 bits, per channel and per layer: the rounding constant 2**30 must not wrap
    (the per-channel path once formed it as (1 << 31) >> 1, which is negative in int32)."""
    acc = np.array([[(1 << 30) + 5, 7], [-(1 << 30) - 3, 1 << 30], [-(1 << 31), (1 << 31) - 1]], np.int64)
    want = np.stack([ref.requantize(acc[:, c], 31, 12, rounding, "saturate") for c in range(2)], 1)
    per_channel = fp.requantize(jnp.asarray(acc, jnp.int32), np.array([31, 31]), fp.Format(12, 0), rounding=rounding)
    per_layer = fp.requantize(jnp.asarray(acc, jnp.int32), 31, fp.Format(12, 0), rounding=rounding)
    np.testing.assert_array_equal(np.asarray(per_channel), want)
    np.testing.assert_array_equal(np.asarray(per_layer), want)
