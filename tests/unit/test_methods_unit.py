"""Sparsity methods through a layer, on random weights: what each one's forward and backward pass
does, checked against plain NumPy (not against the method's own helpers)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cooptim import config
from cooptim.nn import SparseDense, build_model
from cooptim.sparsity import BDWP, METHODS, SparsityMethod, Unstructured


def top_n_per_group(w: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """0/1 mask keeping the n largest |w| in every group of m along `axis` (NumPy, by sorting)."""
    moved = np.moveaxis(np.abs(w), axis, -1)
    groups = moved.reshape(*moved.shape[:-1], -1, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros_like(groups)
    np.put_along_axis(keep, order[..., :n], 1.0, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def test_bdwp_layer_prunes_the_forward_along_inputs_and_the_input_gradient_along_outputs():
    layer = SparseDense(16, 16, name="d", use_bias=False, sparsity=BDWP(n=2, m=8), rngs=nnx.Rngs(0))
    w = np.asarray(layer.kernel[...])
    x = jax.random.normal(jax.random.key(1), (4, 16))
    g = jax.random.normal(jax.random.key(2), (4, 16))
    y, vjp = jax.vjp(lambda x: layer(x), x)
    forward = w * top_n_per_group(w, 2, 8, axis=0)   # 2 of 8 along the input (reduction) axis
    backward = w * top_n_per_group(w, 2, 8, axis=1)  # 2 of 8 along the output axis, from the dense W (SAT)
    np.testing.assert_allclose(y, np.asarray(x) @ forward, rtol=1e-5, atol=1e-5)
    (dx,) = vjp(g)
    np.testing.assert_allclose(dx, np.asarray(g) @ backward.T, rtol=1e-5, atol=1e-5)
    assert not np.allclose(forward, backward)  # the two passes really use different masks


def test_unstructured_keeps_the_largest_weights_and_ignores_inputs_at_or_below_its_threshold():
    method = Unstructured(weight_density=0.5, activation_threshold=0.05)
    layer = SparseDense(32, 8, name="d", use_bias=False, sparsity=method, rngs=nnx.Rngs(0))
    w = np.abs(np.asarray(layer.kernel[...]))
    mask = np.asarray(layer.mask())
    assert mask.sum() == w.size // 2
    assert w[mask == 1].min() >= w[mask == 0].max()  # the kept half is the larger half
    x = np.array(jax.random.normal(jax.random.key(3), (5, 32)))
    x[:, :4] = 0.04  # some inputs at or below the threshold
    changed = np.where(np.abs(x) <= 0.05, -0.03, x)  # any other values at or below it
    np.testing.assert_array_equal(layer(jnp.asarray(x)), layer(jnp.asarray(changed)))


def test_every_registered_method_is_a_sparsity_method_with_a_pattern():
    assert set(METHODS) == {"dense", "nm", "bdwp", "balanced_group", "csp", "dynamic", "unstructured"}
    for name, cls in METHODS.items():
        assert issubclass(cls, SparsityMethod), name
    for method in (BDWP(), Unstructured(weight_density=0.5)):
        assert method.pattern() is not None


def test_dynamic_kernel_path_matches_the_masked_conv():
    def model(kernel):
        cfg = config.from_dict({"name": "x", "sparsity": {
            "default": {"method": "dynamic", "channel_group": 4, "gate_bias": 0.0, "kernel": kernel},
            "layers": {"conv1": {"method": "dense"}, "head": {"method": "dense"}}}})
        return build_model(cfg, (8, 8, 1), 10)

    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    reference, through_kernel = model(False), model(True)
    forward = nnx.jit(lambda m: m(x))
    np.testing.assert_allclose(forward(reference), forward(through_kernel), rtol=1e-5, atol=1e-5)
    grad = nnx.jit(nnx.grad(lambda m: (m(x) ** 2).sum()))
    g_ref, g_kernel = grad(reference), grad(through_kernel)
    for a, b in zip(jax.tree.leaves(nnx.state(g_ref)), jax.tree.leaves(nnx.state(g_kernel))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # the gates get a gradient (straight-through), so the target loss can train them
    assert float(jnp.abs(g_ref.conv2.gates.spatial_kernel[...]).sum()) > 0
