"""Structured-skip kernels (DPACS masks, CSP cascades) against the golden model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import reference as ref
from kernels import skip


@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 3), tiles=st.integers(1, 3), tile=st.sampled_from([1, 2, 4]), k=st.integers(1, 9),
       groups=st.integers(1, 3), group=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16),
       keep=st.booleans(), acc_bits=st.sampled_from([None, 14, 18]), impl=st.sampled_from(["xla", "pallas"]))
def test_int8_skip_matmul_is_bit_exact(b, tiles, tile, k, groups, group, seed, keep, acc_bits, impl):
    rng = np.random.default_rng(seed)
    p, f = tiles * tile, groups * group
    x = rng.integers(-128, 128, (b, p, k)).astype(np.int8)
    w = rng.integers(-128, 128, (k, f)).astype(np.int8)
    spatial = rng.random((b, p)) < 0.6
    channel = rng.random((b, groups)) < 0.6
    base = rng.integers(-1000, 1000, (b, p, f)).astype(np.int32) if keep else np.zeros((b, p, f), np.int32)
    y = skip.skip_matmul(x, w, spatial_mask=spatial, channel_mask=channel, group=group, tile=tile,
                         out=base if keep else None, impl=impl, acc_bits=acc_bits)
    expected = ref.skip_matmul(x, w, spatial, channel, group, base, integer=True, acc_bits=acc_bits or 32)
    np.testing.assert_array_equal(np.asarray(y), expected)


def test_float_skip_matmul_and_untouched_outputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 5)).astype(np.float32)
    w = rng.normal(size=(5, 4)).astype(np.float32)
    spatial = np.array([[1, 0, 0, 0, 1, 1, 0, 0], [0] * 8], bool)  # sample 1: nothing active
    channel = np.array([[True, False], [True, True]])
    base = np.full((2, 8, 4), 7.0, np.float32)
    for impl in ("xla", "pallas"):
        y = np.asarray(skip.skip_matmul(x, w, spatial_mask=spatial, channel_mask=channel, group=2, tile=2,
                                        out=base, impl=impl))
        np.testing.assert_allclose(y, ref.skip_matmul(x, w, spatial, channel, 2, base), rtol=1e-5, atol=1e-5)
        assert (y[1] == 7.0).all() and (y[0, :, 2:] == 7.0).all()
        zeros = np.asarray(skip.skip_matmul(x, w, spatial_mask=spatial, channel_mask=channel, group=2, impl=impl))
        assert (zeros[0, 1] == 0).all()


def test_active_lists_pad_with_the_last_active_entry():
    idx, count = skip.active_list(jnp.array([[False, True, False, True], [False] * 4, [True] * 4]))
    np.testing.assert_array_equal(count, [2, 0, 4])
    np.testing.assert_array_equal(idx[0], [1, 3, 3, 3])
    np.testing.assert_array_equal(idx[2], [0, 1, 2, 3])


@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 12), chunks=st.integers(1, 4), chunk=st.sampled_from([1, 2, 3]),
       m=st.integers(1, 4), seed=st.integers(0, 2**16), tile_split=st.sampled_from([1, 2, 3]),
       impl=st.sampled_from(["xla", "pallas"]), acc_bits=st.sampled_from([None, 16]))
def test_int8_cascade_matmul_is_bit_exact(rows, chunks, chunk, m, seed, tile_split, impl, acc_bits):
    rng = np.random.default_rng(seed)
    k = rows * tile_split
    lengths = rng.integers(0, chunks + 1, k)
    order = skip.cascade_order(lengths)
    lengths = lengths[order]
    w = (rng.integers(-128, 128, (k, chunks * chunk)) * skip.cascade_mask(lengths, chunks, chunk)).astype(np.int8)
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    y = skip.cascade_matmul(x, w, lengths, chunk, tile_k=rows, impl=impl, acc_bits=acc_bits)
    np.testing.assert_array_equal(np.asarray(y), ref.cascade_matmul_int(x, w, lengths, chunk, acc_bits or 32))
    # structural invariant: each row's kept chunks form a prefix, and rows are ordered by length
    nonzero_chunks = (w.reshape(k, chunks, chunk) != 0).any(-1)
    assert not (nonzero_chunks & (np.arange(chunks)[None] >= lengths[:, None])).any()
    assert (np.diff(lengths) <= 0).all()


def test_float_cascade_matmul_and_jit():
    rng = np.random.default_rng(1)
    lengths = np.array([3, 3, 2, 1, 1, 0])
    w = (rng.normal(size=(6, 6)) * skip.cascade_mask(lengths, 3, 2)).astype(np.float32)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    f = jax.jit(lambda x: skip.cascade_matmul(x, w, lengths, 2, tile_k=2, impl="pallas"))
    np.testing.assert_allclose(f(x), x @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: skip.skip_matmul(np.zeros((1, 4, 3), np.float32), np.zeros((2, 4), np.float32)), "same K"),
    (lambda: skip.skip_matmul(np.zeros((1, 4, 3), np.float32), np.zeros((3, 4), np.float32), tile=3),
     "tile 3 does not divide the 4 positions"),
    (lambda: skip.skip_matmul(np.zeros((1, 4, 3), np.float32), np.zeros((3, 4), np.float32),
                              channel_mask=np.ones((1, 3), bool), group=2), r"channel_mask must be \(B, F / group\)"),
    (lambda: skip.cascade_matmul(np.zeros((1, 3), np.float32), np.ones((3, 2), np.float32), [1, 2, 2], 1),
     "ordered by decreasing cascade length"),
    (lambda: skip.cascade_matmul(np.zeros((1, 2), np.float32), np.ones((2, 2), np.float32), [2, 1], 1),
     r"w\[1, 1\] is non-zero beyond row 1's cascade length 1"),
    (lambda: skip.skip_matmul(np.zeros((1, 4, 3), np.int8), np.zeros((3, 4), np.float32)), "mixed dtypes"),
])
def test_bad_input(call, message):
    with pytest.raises(skip.SkipError, match=message):
        call()
