"""N:M kernels against the NumPy golden model: bit-exact in integer mode, within tolerance in float."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from kernels import nm
from kernels import reference as ref

NM_PAIRS = [(1, 2), (2, 4), (1, 4), (2, 8), (4, 8), (3, 4)]


def random_nm(rng, k, cols, n, m, dtype):
    """A (k, cols) matrix with at most n non-zeros per group of m rows (some groups fewer)."""
    if dtype == np.int8:
        w = rng.integers(-128, 128, (k, cols)).astype(np.int8)
    else:
        w = rng.normal(size=(k, cols)).astype(dtype)
    mask = np.array(nm.nm_mask(jnp.asarray(np.abs(w).astype(np.float32)), n, m, 0))
    mask *= rng.random((k, cols)) > 0.1  # drop a few kept values: groups with < n non-zeros
    return (w * mask).astype(dtype)


@settings(max_examples=6, deadline=None)  # each example compiles its shapes (Pallas interpreted): ~1.5 s each
@given(pair=st.sampled_from(NM_PAIRS), groups=st.integers(1, 6), cols=st.integers(1, 9),
       rows=st.integers(1, 7), seed=st.integers(0, 2**16), acc_bits=st.sampled_from([None, 12, 16, 20]),
       overflow=st.sampled_from(["saturate", "wrap"]), impl=st.sampled_from(["xla", "pallas"]))
def test_int8_sparse_matmul_is_bit_exact(pair, groups, cols, rows, seed, acc_bits, overflow, impl):
    n, m = pair
    rng = np.random.default_rng(seed)
    w = random_nm(rng, groups * m, cols, n, m, np.int8)
    x = rng.integers(-128, 128, (rows, groups * m)).astype(np.int8)
    values, indices = nm.compress(w, n, m)
    ref_values, ref_indices = ref.nm_compress(w, n, m)
    np.testing.assert_array_equal(values, ref_values)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(nm.decompress(values, indices, n, m), w)
    y = nm.sparse_matmul(x, values, indices, n, m, impl=impl, acc_bits=acc_bits, acc_overflow=overflow)
    expected = ref.sparse_matmul_int(x, ref_values, ref_indices, n, m, acc_bits or 32, overflow)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(y), expected)


def test_accumulator_saturates_and_wraps_at_its_limit():
    # 8 products of 127 x 127 = 129,032 overflow a 16-bit accumulator (max 32,767)
    x = np.full((1, 16), 127, np.int8)
    w = np.zeros((16, 2), np.int8)
    w[::2, 0], w[1::2, 1] = 127, -128  # 1:2 pattern, one kept value per pair
    values, indices = nm.compress(w, 1, 2)
    for impl in ("xla", "pallas"):
        sat = nm.sparse_matmul(x, values, indices, 1, 2, impl=impl, acc_bits=16)
        wrap = nm.sparse_matmul(x, values, indices, 1, 2, impl=impl, acc_bits=16, acc_overflow="wrap")
        np.testing.assert_array_equal(sat, [[32767, -32768]])
        np.testing.assert_array_equal(wrap, ref.sparse_matmul_int(x, *ref.nm_compress(w, 1, 2), 1, 2, 16, "wrap"))
        assert int(wrap[0, 0]) == ref.wrap(8 * 127 * 127, 16)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_float_sparse_matmul_equals_the_masked_dense_product(dtype, tol, impl):
    rng = np.random.default_rng(1)
    w = random_nm(rng, 64, 24, 2, 4, np.float32)
    x = rng.normal(size=(10, 64)).astype(np.float32)
    values, indices = nm.compress(jnp.asarray(w, dtype), 2, 4)
    y = nm.sparse_matmul(jnp.asarray(x, dtype), values, indices, 2, 4, impl=impl)
    assert y.dtype == jnp.float32
    # tolerance relative to the scale of the result: bfloat16 inputs carry 8 bits of mantissa
    expected = np.asarray(jnp.asarray(x, dtype), np.float64) @ np.asarray(jnp.asarray(w, dtype), np.float64)
    np.testing.assert_allclose(y, expected, atol=tol * np.abs(expected).max(), rtol=0)
    np.testing.assert_allclose(ref.sparse_matmul_float(x, *ref.nm_compress(w, 2, 4), 2, 4), x @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride, padding", [((1, 1), ((1, 1), (1, 1))), ((2, 2), ((1, 0), (0, 1)))])
def test_int8_conv_is_bit_exact_and_float_conv_matches_xla(stride, padding):
    rng = np.random.default_rng(2)
    kshape = (3, 3, 8, 5)
    w = random_nm(rng, 3 * 3 * 8, 5, 2, 4, np.int8).reshape(kshape)
    x = rng.integers(-128, 128, (2, 7, 6, 8)).astype(np.int8)
    values, indices = nm.compress(w.reshape(-1, 5), 2, 4)
    for impl in ("xla", "pallas"):
        y = nm.conv2d(x, values, indices, 2, 4, kshape, stride=stride, padding=padding, impl=impl, acc_bits=18)
        np.testing.assert_array_equal(y, ref.conv2d(x, w, stride, padding, integer=True, acc_bits=18))
    xf, wf = x.astype(np.float32) / 64, w.astype(np.float32) / 64
    vf, jf = nm.compress(wf.reshape(-1, 5), 2, 4)
    yf = nm.conv2d(xf, vf, jf, 2, 4, kshape, stride=stride, padding=padding, impl="pallas")
    expected = jax.lax.conv_general_dilated(xf, wf, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(yf, expected, rtol=1e-5, atol=1e-5)


def test_bdwp_backward_mask_is_nm_along_the_transposed_axis():
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(16, 12)), jnp.float32)
    mask_f = nm.nm_mask(w, 2, 4, axis=0)
    for source in ("dense", "forward"):
        w_b = np.asarray(nm.backward_weight(w, mask_f, 2, 4, source))
        counts = (w_b.reshape(16, 3, 4) != 0).sum(-1)  # groups of 4 along the output axis
        assert (counts <= 2).all(), source
    fwd = np.asarray(w * mask_f)
    assert ((fwd.reshape(4, 4, 12) != 0).sum(1) == 2).all()  # forward: 2 of 4 along the input axis
    # with the forward source, the backward weight is pruned twice: a subset of the forward weight
    assert (np.asarray(nm.backward_weight(w, mask_f, 2, 4, "forward"))[fwd == 0] == 0).all()


@pytest.mark.parametrize("source", ["dense", "forward"])
@pytest.mark.parametrize("weight_grad", ["dense", "masked"])
def test_bdwp_gradients_equal_the_dense_reference_with_the_same_masks(source, weight_grad):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(6, 16)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)
    loss = lambda x, w: jnp.sum(nm.bdwp_matmul(x, w, 2, 4, source, weight_grad, "pallas") * c)
    dx, dw = jax.grad(loss, argnums=(0, 1))(x, w)
    mask_f = nm.nm_mask(w, 2, 4, axis=0)
    w_b = nm.backward_weight(w, mask_f, 2, 4, source)
    np.testing.assert_allclose(nm.bdwp_matmul(x, w, 2, 4), x @ (w * mask_f), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, c @ w_b.T, rtol=1e-5, atol=1e-5)
    expected_dw = x.T @ c if weight_grad == "dense" else (x.T @ c) * mask_f
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-5, atol=1e-5)


def test_unidirectional_nm_vjp_passes_finite_differences():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(4, 8)), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 4)) + np.sign(rng.normal(size=(8, 4))), x.dtype)  # no near-ties
    f = lambda x, w: nm.bdwp_matmul(x, w, 2, 4, "same", "masked", "xla")
    check_grads(f, (x, w), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_jit_and_vmap():
    rng = np.random.default_rng(6)
    w = random_nm(rng, 16, 4, 2, 4, np.float32)
    values, indices = nm.compress(w, 2, 4)
    xs = jnp.asarray(rng.normal(size=(3, 5, 16)), jnp.float32)
    f = jax.jit(lambda x: nm.sparse_matmul(x, values, indices, 2, 4, impl="pallas"))
    batched = jax.vmap(f)(xs)
    np.testing.assert_allclose(batched, np.einsum("bik,kn->bin", xs, w), rtol=1e-5, atol=1e-5)
    grads = jax.jit(jax.vmap(jax.grad(lambda x: nm.bdwp_matmul(x, jnp.asarray(w), 2, 4).sum())))(xs)
    assert grads.shape == xs.shape


def test_kernel_inside_a_flax_layer_trains():
    class BDWPDense(nnx.Module):
        def __init__(self, rngs):
            self.w = nnx.Param(jax.random.normal(rngs.params(), (16, 8)) * 0.3)

        def __call__(self, x):
            return nm.bdwp_matmul(x, self.w[...], 2, 8, "dense", "dense", "pallas")

    layer = BDWPDense(nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(7).normal(size=(32, 16)), jnp.float32)
    target = x @ jnp.asarray(np.random.default_rng(8).normal(size=(16, 8)), jnp.float32)
    loss = nnx.jit(lambda l: jnp.mean((l(x) - target) ** 2))
    grad = nnx.jit(nnx.grad(loss))
    before = float(loss(layer))
    for _ in range(20):
        grads = grad(layer)
        layer.w[...] = layer.w[...] - 0.05 * grads["w"][...]
    assert float(loss(layer)) < before


@pytest.mark.parametrize("call, message", [
    (lambda: nm.compress(np.ones((8, 2)), 3, 4), "group 0 of column 0 .* has 4 non-zeros: more than N=3"),
    (lambda: nm.compress(np.zeros((6, 2)), 2, 4), "M=4 does not divide the pruned axis"),
    (lambda: nm.compress(np.zeros((8, 2)), 5, 4), "N=5 is greater than M=4"),
    (lambda: nm.sparse_matmul(np.zeros((2, 12), np.float32), *nm.compress(np.zeros((8, 2), np.float32), 2, 4), 2, 4),
     "x has K=12 columns but the compressed weight has K=8 rows"),
    (lambda: nm.sparse_matmul(np.zeros((2, 8), np.int8), *nm.compress(np.zeros((8, 2), np.float32), 2, 4), 2, 4),
     "mixed dtypes"),
    (lambda: nm.sparse_matmul(np.zeros((2, 8), np.int16), *nm.compress(np.zeros((8, 2), np.int16), 2, 4), 2, 4),
     "integer mode takes int8 x int8"),
    (lambda: nm.decompress(np.zeros((4, 2)), np.array([[0, 0], [0, 1], [2, 3], [1, 2]], np.uint8), 2, 4),
     "lists the same position twice"),
    (lambda: nm.decompress(np.zeros((4, 2)), np.full((4, 2), 7, np.uint8), 2, 4), "indices must lie in 0..3"),
    (lambda: nm.conv2d(np.zeros((1, 4, 4, 6), np.float32), np.zeros((27, 2), np.float32),
                       np.zeros((27, 2), np.uint8), 1, 4, (3, 3, 6, 2)),
     "M=4 does not divide C_in=6"),
])
def test_bad_input_is_rejected_before_any_kernel_runs(call, message):
    with pytest.raises(nm.NMError, match=message):
        call()
