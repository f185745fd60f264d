"""No NaN or inf from the cost models for any valid input, in float32: random networks, patterns,
foldings and densities (the endpoints 0 and 1 included), discrete and relaxed, values and
gradients (hypothesis, derandomized so that CI sees the same cases; the relaxed gradients found a
NaN at a zero density: `relax.smooth_max` now keeps a zero entry's gradient at 0)."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cost_models import dataflow as df
from cost_models import devices, overlay
from cost_models import sparsity as sp
from cost_models.layers import Conv2D, Dense

DEVICE = devices.get_device("zcu102")
PATTERNS = [sp.DensePattern(), sp.NMPattern(2, 4), sp.BalancedGroupPattern(keep=2, group=8),
            sp.CSPPattern(chunk=4), sp.DynamicPattern(), sp.UnstructuredPattern(),
            sp.UnstructuredPattern(skip_zero_windows=False)]
DENSITIES = st.one_of(st.sampled_from([0.0, 1.0, 1e-7, 1.0 - 1e-7]), st.floats(0.0, 1.0, width=32))


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def designs(draw):
    """A 1-3 conv + dense network with a pattern, a valid folding and densities per layer."""
    size = draw(st.sampled_from([4, 7, 12]))
    channels = draw(st.sampled_from([8, 16]))
    layers, shape = [], (size, size, channels)
    for i in range(draw(st.integers(1, 3))):
        kernel = draw(st.sampled_from([1, 3, 5, 7]))
        out = draw(st.sampled_from([8, 16, 32]))
        conv = Conv2D(f"c{i}", shape, out, (kernel, kernel), padding=((kernel // 2,) * 2,) * 2)
        layers.append(conv)
        shape = conv.out_shape
    layers.append(Dense("fc", int(np.prod(shape)), 10))
    patterns = [draw(st.sampled_from(PATTERNS)) for _ in layers[:-1]] + [sp.DensePattern()]
    net = df.Network.build(layers, patterns, df.Precision(data_bits=draw(st.sampled_from([8, 16])),
                                                          weight_bits=8))
    t = df.tables(net)
    folding = df.Folding(*(np.array([draw(st.sampled_from(_divisors(int(m)))) for m in t[key]])
                           for key in ("max_ci", "max_co", "max_cg", "max_fine")))
    density = df.Density(np.array([draw(DENSITIES) for _ in layers], np.float32),
                         np.array([draw(DENSITIES) for _ in layers], np.float32))
    return net, folding, density


def _finite(tree) -> bool:
    return all(bool(jnp.isfinite(jnp.asarray(x, jnp.float32)).all()) for x in jax.tree.leaves(tree))


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.sampled_from([None, 0.05, 1.0]))
def test_the_dataflow_model_is_finite_everywhere(design, temperature):
    net, folding, density = design
    # compiled: one program per drawn network is faster than running it op by op
    cost = jax.jit(lambda f, d: df.evaluate(net, f, d, DEVICE, temperature=temperature))(folding, density)
    assert _finite(cost._asdict()), cost
    assert float(cost.throughput) > 0


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(designs())
def test_relaxed_gradients_are_finite_everywhere(design):
    net, folding, density = design

    def log_throughput(fold, dens):
        return jnp.log(df.evaluate(net, fold, dens, DEVICE, temperature=0.1).throughput)

    folding = df.Folding(*(jnp.asarray(f, jnp.float32) for f in folding))
    grads = jax.jit(jax.grad(log_throughput, argnums=(0, 1)))(folding, density)
    assert _finite(grads), grads


ENGINES = st.builds(overlay.Engine, st.sampled_from([1, 4, 16, 32]), st.sampled_from([1, 8, 16]),
                    taps=st.sampled_from([1, 9]), weight_load_words=st.sampled_from([None, 1, 16]),
                    feature_port_words=st.sampled_from([None, 1, 16]), loop_fill=st.sampled_from([0, 7]),
                    pipelined_tiles=st.sampled_from(["out", "in"]))


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.sampled_from([None, 0.5]), ENGINES)
def test_the_overlay_model_is_finite_everywhere(design, temperature, engine):
    net, _, density = design
    cost = jax.jit(lambda d: overlay.evaluate(net, engine, d, DEVICE, temperature=temperature))(density)
    assert _finite(cost._asdict()), cost
    assert float(cost.throughput) > 0
    # the whole network as one block of engines (DPACS's): finite too
    blocks = overlay.evaluate_blocks(net, [list(net.names)], engine, density, DEVICE, temperature=temperature)
    assert _finite(blocks._asdict()), blocks
    assert float(blocks.throughput) > 0


def test_a_structured_layer_with_nothing_left_has_finite_relaxed_gradients():
    """The case the property test found: an N:M layer at density 0 made the relaxed bottleneck's
    gradient NaN (log 0 in the log-sum-exp)."""
    net = df.Network.build([Conv2D("c", (4, 4, 8), 8, (1, 1)), Dense("fc", 128, 10)],
                           [sp.NMPattern(2, 4), sp.DensePattern()], df.Precision(8, 8))
    folding = df.Folding(*(jnp.ones(2, jnp.float32) for _ in range(4)))
    density = df.Density(jnp.zeros(2, jnp.float32), jnp.zeros(2, jnp.float32))
    grads = jax.jit(jax.grad(lambda d: jnp.log(df.evaluate(net, folding, d, DEVICE, temperature=0.1).throughput)))(density)
    assert _finite(grads), grads
