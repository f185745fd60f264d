"""HASS-style search (`cooptim.search`) on an untrained tiny model: the candidate's forward pass,
its measured activation densities, the differentiable relaxation and the best-so-far curve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cooptim import config, nn, search


@pytest.fixture(scope="module")
def model():
    cfg = config.from_dict({"name": "s", "model": {"width": 4}, "sparsity": {"default": {"method": "dense"}}})
    m = nn.build_model(cfg, (8, 8, 1), 10, input_thresholds=True)
    m.eval()
    return m


NAMES = ("conv1", "conv2", "conv3", "head")
X = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))


def test_no_pruning_is_the_plain_model(model):
    logits, act = search.candidate_forward(model, NAMES, X, jnp.ones(4), jnp.zeros(4), soft=False)
    np.testing.assert_allclose(logits, nnx.jit(lambda m, x: m(x))(model, X), rtol=1e-5, atol=1e-6)
    # an input is kept where |x| > 0: the first layer's input (Gaussian) is all kept
    assert float(act[0]) == 1.0


def test_a_hard_threshold_zeroes_small_inputs_and_measures_what_it_kept(model):
    a = jnp.array([0.5, 0.0, 0.0, 0.0])
    logits, act = search.candidate_forward(model, NAMES, X, jnp.ones(4), a, soft=False)
    assert float(act[0]) == pytest.approx(float((jnp.abs(X) > 0.5).mean()))
    # the same as the plain model fed the thresholded image (only conv1's input is thresholded)
    np.testing.assert_allclose(logits, nnx.jit(lambda m, x: m(x))(model, X * (jnp.abs(X) > 0.5)),
                               rtol=1e-5, atol=1e-6)


def test_the_soft_candidate_is_differentiable_in_densities_and_thresholds(model):
    def loss(d, a):
        logits, act = search._forward(model, NAMES, X, d, a, soft=True)
        return (logits ** 2).mean() + act.sum()

    gd, ga = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.full(4, 0.7), jnp.full(4, 0.1))
    assert np.isfinite(np.asarray(gd)).all() and np.isfinite(np.asarray(ga)).all()
    assert float(jnp.abs(ga).sum()) > 0 and float(jnp.abs(gd).sum()) > 0


def test_the_model_itself_is_not_changed_by_a_candidate(model):
    before = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]
    search.candidate_forward(model, NAMES, X, jnp.full(4, 0.3), jnp.full(4, 0.4), soft=False)
    after = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def test_best_so_far_counts_only_candidates_over_the_floor_from_the_unpruned_network():
    history = [{"accuracy": 0.9, "throughput": 5.0}, {"accuracy": 0.99, "throughput": 3.0},
               {"accuracy": 0.5, "throughput": 100.0}, {"accuracy": 0.99, "throughput": 4.0}]
    assert search.best_so_far(history, floor=0.95, start=2.0) == [2.0, 3.0, 3.0, 4.0]
    # nothing over the floor: the unpruned network (which meets it by definition) stays the best
    assert search.best_so_far(history[:1], floor=0.95, start=2.0) == [2.0]
