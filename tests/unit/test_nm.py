"""N:M masks and the SR-STE gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cooptim.sparsity import NM, Dense, SparsityError, WeightLayout, nm_mask, srste
from cooptim.sparsity.nm import count_per_group


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 8), m_factor=st.integers(0, 3), groups=st.integers(1, 4),
       other=st.integers(1, 5), axis=st.integers(0, 2), seed=st.integers(0, 10_000),
       ties=st.booleans())
def test_mask_keeps_exactly_n_largest_per_group(n, m_factor, groups, other, axis, seed, ties):
    m = n + m_factor
    shape = [other, other + 1, 2]
    shape[axis] = groups * m
    rng = np.random.default_rng(seed)
    w = rng.normal(size=shape).astype(np.float32)
    if ties:  # many equal magnitudes: the count must still be exactly n
        w = np.round(w).astype(np.float32)
    mask = np.asarray(jax.jit(nm_mask, static_argnums=(1, 2, 3))(jnp.asarray(w), n, m, axis))
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert (count_per_group(mask, m, axis) == n).all()
    # every kept magnitude is >= every pruned magnitude of its group
    mv = np.moveaxis(mask, axis, -1).reshape(-1, m)
    wv = np.abs(np.moveaxis(w, axis, -1)).reshape(-1, m)
    for row_w, row_m in zip(wv, mv):
        kept, pruned = row_w[row_m == 1], row_w[row_m == 0]
        if pruned.size:
            assert kept.min() >= pruned.max()


def test_mask_by_hand():
    w = jnp.array([[0.1, -3.0, 2.0, 0.5], [4.0, 1.0, -1.0, 0.0]])  # groups along axis 1
    np.testing.assert_array_equal(nm_mask(w, 2, 4, axis=1), [[0, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(nm_mask(w.T, 2, 4, axis=0), [[0, 1], [1, 1], [1, 0], [0, 0]])


def test_srste_gradient_is_straight_through_plus_decay_on_pruned():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    method = NM(n=2, m=4, decay=0.1)
    layout = WeightLayout((8, 3), in_axis=0, out_axis=1)
    mask = method.mask(w, layout)
    grad = jax.grad(lambda w: jnp.sum(method.apply(w, layout) * c))(w)
    np.testing.assert_allclose(grad, c + 0.1 * (1 - mask) * w, rtol=1e-6)
    # the forward pass is the masked weight
    np.testing.assert_array_equal(method.apply(w, layout), w * mask)


def test_srste_without_decay_is_plain_straight_through():
    w = jnp.arange(8.0) - 3.5
    mask = nm_mask(w, 1, 4, 0)
    g = jax.grad(lambda w: jnp.sum(srste(w, mask, 0.0) ** 2))(w)
    np.testing.assert_allclose(g, 2 * w * mask)  # d/dw (w*mask)^2, passed straight through


def test_validate_names_layer_and_axis():
    layout = WeightLayout((3, 3, 6, 8), in_axis=2, out_axis=3)
    NM(n=1, m=4, axis="output").validate(layout, "convX")
    with pytest.raises(SparsityError, match="layer 'convX': M=4 does not divide the input axis"):
        NM(n=1, m=4).validate(layout, "convX")


def test_check_reports_broken_groups():
    layout = WeightLayout((8, 2), in_axis=0, out_axis=1)
    method = NM(n=2, m=4)
    good = np.asarray(method.mask(jnp.asarray(np.random.default_rng(1).normal(size=(8, 2))), layout))
    assert method.check(good, layout).ok
    bad = good.copy()
    bad[:4, 0] = 1
    result = method.check(bad, layout)
    assert not result.ok and "1 of 4 groups" in result.detail


def test_pattern_and_density():
    assert NM(n=1, m=4).pattern().work_fraction == 0.25
    assert NM(n=2, m=8).pattern().index_bits == 3
    assert float(NM(n=2, m=4).density(None, None)) == 0.5
    assert Dense().pattern().work_fraction == 1.0
