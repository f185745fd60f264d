"""The dataflow cost model: hand-computed cases, sparsity, differentiability, relaxation, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cost_models import dataflow as df
from cost_models import devices, sparsity as sp
from cost_models.layers import Conv2D, Dense, Elementwise, Pool

U250 = devices.get_device("u250")


def one_conv(**kw):
    conv = Conv2D("conv", (56, 56, 64), 64, **kw)
    return df.Network.build([conv])


def test_conv_cycles_and_dsp_by_hand():
    """64 -> 64 channels, 56x56, 3x3, stride 1, pad 1; coarse_in = coarse_out = 4, fine = 9.

    The sliding window walks (56 - 1) * 1 + 3 = 58 rows and 58 cols, one window per position, so
    58 * 58 = 3,364 windows >= 56 * 56 outputs. Each window needs (64/4) * (64/4) * (9/9) = 256
    cycles per stream: 3,364 * 256 = 861,184 cycles (fpgaconvnet-model reports the same).
    DSP: 4 * 4 * 9 = 144 multipliers of 16 x 16 bits (one DSP48 each) + 4 accumulators = 148.
    """
    net = one_conv()
    folding = df.Folding.of(net, coarse_in={"conv": 4}, coarse_out={"conv": 4}, fine={"conv": 9})
    cost = df.evaluate(net, folding, df.Density.dense(net), U250)
    assert float(cost.layer_cycles[0]) == 861_184
    assert float(cost.dsp) == 148
    assert float(cost.interval) == 861_184
    assert float(cost.throughput) == pytest.approx(250e6 / 861_184)


def test_stride_two_conv_by_hand():
    """64 -> 128, 56x56, 3x3, stride 2: the windows touch (28-1)*2 + 3 = 57 rows and cols, one
    window per 2 x 2 positions: 57*57/4 = 812.25 windows x (64/4)*(128/4) = 512 -> 415,872."""
    net = df.Network.build([Conv2D("c", (56, 56, 64), 128, stride=(2, 2))])
    folding = df.Folding.of(net, coarse_in={"c": 4}, coarse_out={"c": 4}, fine={"c": 9})
    assert float(df.evaluate(net, folding, df.Density.dense(net), U250).layer_cycles[0]) == 415_872


def test_pipeline_throughput_is_set_by_its_slowest_layer():
    layers = [Conv2D("a", (16, 16, 8), 16), Conv2D("b", (16, 16, 16), 16), Dense("fc", 64, 10)]
    net = df.Network.build(layers)
    folding = df.Folding.of(net, coarse_in={"a": 8, "b": 2}, coarse_out={"a": 16, "b": 2}, fine={"a": 9})
    cost = df.evaluate(net, folding, df.Density.dense(net), U250)
    cycles = np.asarray(cost.layer_cycles)
    # a: 18*18 * 1 * 1 * 1 = 324; b: 18*18 * 8 * 8 * 9 = 186,624; fc: 64 * 10 = 640
    np.testing.assert_allclose(cycles, [324, 186_624, 640])
    assert float(cost.interval) == cycles.max()
    assert float(cost.throughput) == pytest.approx(U250.clock_mhz * 1e6 / 186_624)
    assert float(cost.latency) > 1 / float(cost.throughput)  # pipeline fill on top of the interval


def test_two_four_halves_a_layers_cycles_and_its_weight_storage():
    dense_net = one_conv()
    nm_net = df.Network.build(dense_net.layers, [sp.NMPattern(2, 4)])
    folding = df.Folding.of(dense_net, coarse_in={"conv": 2}, coarse_out={"conv": 2}, fine={"conv": 3})
    dense = df.evaluate(dense_net, folding, df.Density.from_patterns(dense_net), U250)
    nm = df.evaluate(nm_net, folding, df.Density.from_patterns(nm_net), U250)
    assert float(nm.layer_cycles[0]) == float(dense.layer_cycles[0]) / 2
    assert float(nm.effective_macs) == float(dense.effective_macs) / 2
    assert float(nm.layer_bram18[0]) < float(dense.layer_bram18[0])  # half the values + 2-bit indices


def test_binomial_window_expectation_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for window, p, fine in [(9, 0.3, 2), (9, 0.7, 4), (25, 0.5, 3), (1, 0.4, 1)]:
        exact = float(sp.expected_window_cycles(window, p, fine))
        samples = np.ceil(rng.binomial(window, p, size=400_000) / fine).mean()
        assert exact == pytest.approx(samples, abs=0.01), (window, p, fine)


@pytest.mark.parametrize("n", [1, 9, 144])
def test_binomial_gradients_are_right_at_the_ends_too(n):
    """d/dp E[X] = n and d/dp sum_j P[X = j] = 0 for every p, the one-sided derivative at p = 0 and
    p = 1 included (a density of exactly 1 is every dense layer's)."""
    j = np.arange(n + 1)
    mean = jax.jit(jax.vmap(jax.grad(lambda p: (sp.binomial_pmf(n, p) * j).sum())))
    total = jax.jit(jax.vmap(jax.grad(lambda p: sp.binomial_pmf(n, p).sum())))
    p = jnp.array([0.0, 0.3, 1.0])
    np.testing.assert_allclose(np.asarray(mean(p)), n, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(total(p)), 0.0, atol=1e-4 * n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_window_expectation_is_finite_and_exact_for_windows_up_to_1024(dtype):
    """C(n, j) overflows float32 from n ~ 130: the pmf is formed in log space (window 144 = a 12x12
    kernel, 1,024 = a 32x32 one; 3x3x128 im2col rows reach 1,152)."""
    from scipy import stats

    with jax.enable_x64(dtype == "float64"):
        for window in (9, 144, 400, 1024):
            @jax.jit
            def evaluate(p):
                cycles = lambda q: sp.expected_window_cycles(window, q, 8)
                return sp.binomial_pmf(window, p), cycles(p), jax.grad(lambda q: cycles(q).sum())(p)

            p = np.array([0.0, 1e-4, 0.05, 0.5, 0.93, 1.0], dtype)
            pmf, cycles, grad = (np.asarray(v) for v in evaluate(jnp.asarray(p)))
            assert np.isfinite(pmf).all() and np.isfinite(grad).all(), window
            np.testing.assert_allclose(pmf.sum(-1), 1.0, rtol=1e-4 if dtype == "float32" else 1e-10)
            exact = stats.binom.pmf(np.arange(window + 1)[None], window, p[:, None])
            np.testing.assert_allclose(pmf, exact, atol=1e-5 if dtype == "float32" else 1e-12)
            expected = (exact * np.ceil(np.arange(window + 1) / 8)).sum(-1)
            np.testing.assert_allclose(cycles, expected, rtol=1e-3 if dtype == "float32" else 1e-9)
            assert (grad[1:-1] > 0).all()  # more non-zeros, more cycles


def test_unstructured_layer_uses_the_expected_window_cycles():
    net = df.Network.build(one_conv().layers, [sp.UnstructuredPattern()])
    folding = df.Folding.of(net, fine={"conv": 4})  # a sparse engine may use fine = 4 (not | 9)
    dense_d = df.Density.dense(net)
    half = df.Density(np.array([0.5], np.float32), np.array([0.6], np.float32))
    c_dense = float(df.evaluate(net, folding, dense_d, U250).layer_cycles[0])
    c_half = float(df.evaluate(net, folding, half, U250).layer_cycles[0])
    assert c_dense == 58 * 58 * 64 * 64 * np.ceil(9 / 4)  # every window full: 3 cycles
    expected = 58 * 58 * 64 * 64 * float(sp.expected_window_cycles(9, 0.3, 4))
    assert c_half == pytest.approx(expected, rel=1e-5)


def test_a_hass_layer_with_under_a_tenth_zeros_is_costed_as_the_dense_engine_fpgaconvnet_builds():
    """fpgaConvNet's parser builds a conv whose windows hold under 10% zeros on average as a dense
    engine: a concrete cost follows it, by the Binomial model and by measured histograms; at 15%
    zeros the sparse engine's expectation applies. The relaxed model keeps the expectation."""
    net = df.Network.build(one_conv().layers, [sp.UnstructuredPattern()])
    folding = df.Folding.of(net, fine={"conv": 1})
    positions = float(df.tables(net)["positions"][0]) * 64 * 64

    def cycles(density, **kw):
        d = df.Density(np.array([density], np.float32), np.array([1.0], np.float32))
        return float(df.evaluate(net, folding, d, U250, **kw).layer_cycles[0])

    assert cycles(0.95) == positions * 9  # 5% zeros: the dense engine
    assert cycles(0.85) == pytest.approx(positions * float(sp.expected_window_cycles(9, 0.85, 1)), rel=1e-6)
    assert cycles(0.85) < positions * 9
    assert cycles(0.95, temperature=0.05) < cycles(1.0, temperature=0.05)  # relaxed: fewer zeros, more cycles

    conv = Conv2D("c", (6, 6, 2), 4, kernel=(1, 1), padding=((0, 0), (0, 0)))
    dense = df.Network.build([conv])
    one = df.Folding.of(dense)
    dense_cycles = float(df.evaluate(dense, one, df.Density.dense(dense), U250).layer_cycles[0])
    for zeros, speedup in ((0.08, 1.0), (0.2, 1 / 0.8)):  # both channels: a zero product with that probability
        measured = df.Network.build([conv], {"c": sp.UnstructuredPattern(histograms=((zeros, 1 - zeros),) * 2)})
        sparse_cycles = float(df.evaluate(measured, one, df.Density.dense(measured), U250).layer_cycles[0])
        assert dense_cycles / sparse_cycles == pytest.approx(speedup), zeros


def test_sparse_engines_pay_their_index_multiplexers_in_luts():
    """Per multiplier and bit, an M:1 multiplexer of LUT6s (UG574: one LUT is a 4:1, F7/F8/F9 join
    them up to 32:1): 2:4 selects one of 4 activations (1 LUT per bit), Kang's 4/8 groups one of 8
    (2), HASS's 3x3 window one of 9 (activation, weight) pairs (3 per bit of both); CSP none."""
    assert [df.mux_luts_per_bit(n) for n in (1, 2, 4, 8, 9, 16, 32, 49, 64)] == [0, 1, 1, 2, 3, 4, 8, 17, 17]
    layers = one_conv().layers
    folding = df.Folding.of(one_conv(), coarse_in={"conv": 2}, coarse_out={"conv": 4}, fine={"conv": 3})
    multipliers = 2 * 4 * 3
    precision = df.Precision(data_bits=8, weight_bits=4)

    def lut(pattern, resources=df.ResourceParams()):
        net = df.Network.build(layers, [pattern], precision)
        return float(df.evaluate(net, folding, df.Density.dense(net), U250, xp=np,
                                 resources=resources).layer_lut[0])

    dense = lut(sp.DensePattern())
    assert lut(sp.NMPattern(2, 4)) - dense == pytest.approx(multipliers * 8 * 1)
    assert lut(sp.BalancedGroupPattern(4, 8)) - dense == pytest.approx(multipliers * 8 * 2)
    assert lut(sp.UnstructuredPattern()) - dense == pytest.approx(multipliers * (8 + 4) * 3)
    assert lut(sp.CSPPattern(chunk=4, kept=0.5)) == pytest.approx(dense)
    assert lut(sp.NMPattern(2, 4), df.ResourceParams(index_multiplexers=False)) == pytest.approx(dense)


def test_dense_model_agrees_with_the_unstructured_model_at_density_one():
    net_d = one_conv()
    net_u = df.Network.build(net_d.layers, [sp.UnstructuredPattern()])
    folding = df.Folding.of(net_d, coarse_in={"conv": 2}, fine={"conv": 3})
    a = df.evaluate(net_d, folding, df.Density.dense(net_d), U250).layer_cycles
    b = df.evaluate(net_u, folding, df.Density.dense(net_u), U250).layer_cycles
    np.testing.assert_allclose(a, b, rtol=1e-6)


def small_net():
    layers = [Conv2D("c1", (16, 16, 8), 16), Elementwise("r1", (16, 16, 16)),
              Pool("p1", (16, 16, 16)), Conv2D("c2", (8, 8, 16), 32), Dense("fc", 8 * 8 * 32, 10)]
    patterns = [sp.DensePattern(), sp.DensePattern(), sp.DensePattern(), sp.UnstructuredPattern(),
                sp.NMPattern(2, 4)]
    return df.Network.build(layers, patterns)


def test_jit_grad_vmap_on_density_and_folding():
    net = small_net()
    density = df.Density(jnp.array([0.9, 0.9, 0.9, 0.5, 0.5]), jnp.array([0.9, 0.9, 0.9, 0.7, 0.9]))  # interior: finite differences step both ways
    folding = df.Folding(*(jnp.array(v, jnp.float32) for v in ([2, 4, 4, 2, 8], [2, 1, 1, 4, 2], [1] * 5, [3, 1, 1, 3, 1])))

    def log_interval(d_w, d_a, theta):
        f = df.Folding(*(jnp.exp(x) for x in theta))
        return jnp.log(df.evaluate(net, f, df.Density(d_w, d_a), U250, temperature=0.1).interval)

    theta = tuple(jnp.log(x) for x in folding)
    jitted = jax.jit(log_interval)
    assert np.isfinite(float(jitted(density.weight, density.activation, theta)))
    grads = jax.jit(jax.grad(log_interval, argnums=(0, 1, 2)))(density.weight, density.activation, theta)
    assert float(grads[0][3]) > 0  # more weight density in the sparse layer -> more cycles
    assert float(grads[2][0][1]) <= 0  # more streams never slow a layer down
    check_grads(jax.jit(lambda dw: log_interval(dw, density.activation, theta)), (density.weight,), order=1,
                modes=["rev"], eps=1e-3, atol=1e-2, rtol=1e-2)
    compute = jnp.array([0, 3, 4])  # the conv / dense layers, whose coarse_in is inside its range

    @jax.jit
    def by_coarse_in(log_ci):
        return log_interval(density.weight, density.activation,
                            (theta[0].at[compute].set(log_ci),) + theta[1:])

    check_grads(by_coarse_in, (theta[0][compute],), order=1, modes=["rev"], eps=1e-3, atol=1e-2, rtol=1e-2)
    batch = jax.jit(jax.vmap(lambda dw: df.evaluate(net, folding, df.Density(dw, density.activation), U250,
                                                    temperature=0.1).throughput))
    out = batch(jnp.linspace(0.1, 1.0, 7)[:, None] * jnp.ones(5))
    assert out.shape == (7,) and bool(jnp.all(jnp.diff(out) <= 1e-3))


def test_relaxed_model_tends_to_the_discrete_one():
    net = small_net()
    density = df.Density(np.array([1, 1, 1, 0.4, 0.5], np.float32), np.array([1, 1, 1, 0.6, 1], np.float32))
    folding = df.Folding(*(np.array(v) for v in ([2, 4, 4, 2, 8], [2, 1, 1, 4, 2], [1] * 5, [3, 1, 1, 4, 1])))
    exact = df.evaluate(net, folding, density, U250)
    errors = []
    for temperature in (0.3, 0.1, 0.03, 0.01, 0.003):
        relaxed = df.evaluate(net, folding, density, U250, temperature=temperature)
        errors.append(abs(float(relaxed.interval) / float(exact.interval) - 1))
    # monotone down to float32 rounding, and within 1% at the end
    assert all(b <= a + 1e-5 for a, b in zip(errors, errors[1:])) and errors[-1] < 0.01
    relaxed = df.evaluate(net, folding, density, U250, temperature=1e-3)
    np.testing.assert_allclose(relaxed.layer_cycles, exact.layer_cycles, rtol=0.01)


def test_errors_name_the_layer():
    net = small_net()
    good_f, good_d = df.Folding.minimal(net), df.Density.dense(net)
    bad_density = df.Density(np.array([1, 1, 1, 1.5, 1], np.float32), good_d.activation)
    with pytest.raises(df.CostModelError, match="layer 'c2': weight density 1.5 is outside"):
        df.evaluate(net, good_f, bad_density, U250)
    bad_fold = df.Folding(np.array([3, 1, 1, 1, 1]), *good_f[1:])
    with pytest.raises(df.CostModelError, match="layer 'c1': coarse_in=3 does not divide its input channels"):
        df.evaluate(net, bad_fold, good_d, U250)
    too_big = df.Folding(np.array([1, 1, 1, 1, 1]), np.array([1, 1, 1, 64, 1]), *good_f[2:])
    with pytest.raises(df.CostModelError, match="layer 'c2': coarse_out=64 is outside 1..32"):
        df.evaluate(net, too_big, good_d, U250)
    dense_fine = df.Folding(*good_f[:3], np.array([2, 1, 1, 1, 1]))
    with pytest.raises(df.CostModelError, match="layer 'c1': fine=2 does not divide its kernel window"):
        df.evaluate(net, dense_fine, good_d, U250)
    sparse_fine = df.Folding(*good_f[:3], np.array([1, 1, 1, 2, 1]))  # HASS engines: any 1..K^2
    df.evaluate(net, sparse_fine, good_d, U250)


def test_devices():
    zcu = devices.get_device("zcu102")
    assert (zcu.dsp, zcu.bram18, zcu.clock_mhz) == (2520, 1824, 200)
    assert {"u250", "zcu102", "vcu1525", "vu440", "zc706"} <= set(devices.DEVICES)
    with pytest.raises(devices.DeviceError, match="unknown device 'zcu999'; known devices: "):
        devices.get_device("zcu999")


def test_user_devices_from_yaml(tmp_path):
    path = tmp_path / "boards.yaml"
    path.write_text("myboard: {dsp: 100, bram18: 200, lut: 1000, ff: 2000, clock_mhz: 150, bandwidth_gbps: 10}\n")
    board = devices.load_devices(path)["myboard"]
    assert board.dsp == 100 and devices.get_device("myboard", devices.load_devices(path)) == board
    path.write_text("bad: {dsp: 100, bram18: 200, lut: 1000, ff: 2000, clock_mhz: 150, bandwidth_gbps: 10, lutz: 1}\n")
    with pytest.raises(devices.DeviceError, match=r"boards.yaml: device 'bad': unknown key\(s\) lutz"):
        devices.load_devices(path)
    path.write_text("bad: {dsp: -1, bram18: 200, lut: 1000, ff: 2000, clock_mhz: 150, bandwidth_gbps: 10}\n")
    with pytest.raises(devices.DeviceError, match="device 'bad': dsp must be a number >= 0"):
        devices.load_devices(path)


def test_log_space_folding_helpers():
    from cost_models import relax

    theta = relax.log_of_folding(df.Folding(np.array([4]), np.array([1]), np.array([1]), np.array([9])))
    np.testing.assert_allclose(relax.folding_from_log(theta.coarse_in, 1, 8), [4.0], rtol=1e-6)
    assert float(relax.folding_from_log(jnp.log(100.0), 1, 8)) == 8.0  # clipped to the layer's range
    assert relax.nearest_divisor(5.0, 64) == 4 and relax.nearest_divisor(6.0, 64) == 8  # log-nearest
    assert relax.nearest_divisor(2.9, 9) == 3 and relax.nearest_divisor(0.5, 9) == 1


def test_a_csp_layer_works_and_stores_its_kept_fraction():
    dense_net = one_conv()
    csp_net = df.Network.build(dense_net.layers, [sp.CSPPattern(chunk=16, kept=0.375)])
    assert float(df.Density.from_patterns(csp_net).weight[0]) == 0.375
    folding = df.Folding.of(dense_net, coarse_in={"conv": 2}, fine={"conv": 3})
    dense = df.evaluate(dense_net, folding, df.Density.from_patterns(dense_net), U250)
    csp = df.evaluate(csp_net, folding, df.Density.from_patterns(csp_net), U250)
    assert float(csp.layer_cycles[0]) == pytest.approx(0.375 * float(dense.layer_cycles[0]))
    assert float(csp.effective_macs) == pytest.approx(0.375 * float(dense.effective_macs))
    # storage: the kept values, and one cascade-length counter per weight row (3 x 3 x 64 = 576
    # rows), no indices: 0..4 chunks of 16 channels, 3 bits; 0..16 chunks of 4, 5 bits
    for chunk, bits in ((16, 3), (4, 5)):
        net = df.Network.build(dense_net.layers, [sp.CSPPattern(chunk=chunk, kept=0.375)])
        stored = df.layer_costs(df.tables(net), folding, np.array([0.375]), np.array([1.0]), net.precision,
                                xp=np).weight_bits
        assert float(stored[0]) == pytest.approx(64 * 64 * 9 * 0.375 * 16 + 576 * bits), chunk
    with pytest.raises(ValueError, match="kept must be in"):
        sp.CSPPattern(chunk=4, kept=0.0)


def test_csp_rows_run_together_wait_for_the_longest_cascade():
    """A 1x1 conv, 4 input channels, 8 outputs in 4 chunks of 2. Half the chunks are kept either
    way, but with lengths (4, 0, 4, 0) two streams (channels 0+1, then 2+3) each meet a full
    cascade: no gain over dense; one stream, or the lengths (4, 4, 0, 0), half the cycles."""
    conv = Conv2D("c", (6, 6, 4), 8, kernel=(1, 1), padding=((0, 0), (0, 0)))
    dense = df.Network.build([conv])

    def cycles(lengths, ci):
        net = df.Network.build([conv], {"c": sp.CSPPattern(chunk=2, kept=0.5, lengths=lengths)})
        folding = df.Folding.of(net, coarse_in={"c": ci}, coarse_out={"c": 1})
        ours = float(df.evaluate(net, folding, df.Density.from_patterns(net), U250).layer_cycles[0])
        return ours / float(df.evaluate(dense, folding, df.Density.dense(dense), U250).layer_cycles[0])

    assert cycles((4, 0, 4, 0), 2) == 1.0 and cycles((4, 0, 4, 0), 1) == 0.5 and cycles((4, 4, 0, 0), 2) == 0.5
    assert cycles(None, 2) == 0.5  # unmeasured: every row keeps `kept`
    assert sp.cascade_work(np.array([4, 0, 4, 0]), 4, 1, [1, 2, 4], 1).tolist() == [0.5, 1.0, 1.0]
    # 3x3 taps x 2 channels, fine 3: each of the 3 tap groups x 1 channel group waits for its longest
    lengths = np.array([[1, 0], [0, 0], [0, 0], [2, 2], [0, 0], [0, 0], [0, 0], [0, 0], [0, 4]]).reshape(-1)
    assert sp.cascade_work(lengths, 4, 9, 2, 3) == pytest.approx((1 + 2 + 4) / 3 / 4)

    # traced: independent draws; n = 1 is the mean, and more rows together cost more
    work = lambda n: sp.expected_cascade_work(np.array([4, 0, 4, 0]), 4, n)
    assert float(work(1.0)) == pytest.approx(0.5) and float(work(2.0)) == pytest.approx(0.75)
    assert np.isfinite(float(jax.grad(work)(3.0))) and float(jax.grad(work)(3.0)) > 0
    net = df.Network.build([conv], {"c": sp.CSPPattern(chunk=2, kept=0.5, lengths=(4, 0, 4, 0))})
    relaxed = df.evaluate(net, df.Folding.minimal(net), df.Density.from_patterns(net), U250, temperature=0.1)
    assert np.isfinite(np.asarray(relaxed.layer_cycles)).all()

    with pytest.raises(df.CostModelError, match=r"node 'c': CSP cascade lengths of shape \(3,\), expected \(4,\)"):
        df.Network.build([conv], {"c": sp.CSPPattern(chunk=2, kept=0.5, lengths=(4, 0, 2))})
    with pytest.raises(df.CostModelError, match="node 'c': CSP kept is 0.25 but its cascade lengths keep 0.5"):
        df.Network.build([conv], {"c": sp.CSPPattern(chunk=2, kept=0.25, lengths=(4, 0, 4, 0))})
    with pytest.raises(df.CostModelError, match=r"in 0..4 \(8 channels in chunks of 2\)"):
        df.Network.build([conv], {"c": sp.CSPPattern(chunk=2, kept=0.5, lengths=(5, 0, 3, 0))})


def test_an_activation_on_a_feature_vector_streams_its_features():
    """VGG's classifier: a ReLU between two dense layers has a (features,) shape, not (H, W, C);
    it reads and writes one feature per stream per cycle (it was an unpacking error)."""
    net = df.Network.build([Dense("fc1", 64, 32), Elementwise("relu", (32,)), Dense("fc2", 32, 10)])
    folding = df.Folding.of(net, coarse_in={"relu": 4})
    cost = df.evaluate(net, folding, df.Density.dense(net), devices.get_device("zcu102"))
    assert float(cost.layer_cycles[1]) == 32 / 4


HLS = df.ResourceParams(ram="hls")


def test_the_hls_ram_model_by_hand():
    """fpgaconvnet-model's hls backend on 64 -> 64 channels, 56x56, 3x3, coarse_in = coarse_out = 4,
    fine = 9, 16-bit data, weights and accumulators:
      weights      144 memories (4 x 4 x 9) of 64 * 64 * 9 / 144 = 256 words: 1 block each  = 144
      window       per input stream (4): 2 line buffers of 58 * 16 + 1 = 929 words (the 1,000-deep,
                   18-bit configuration: 1 block) and 3 * 2 window buffers of 17 words (1 block) = 32
      accumulators 4 output streams x 64 / 4 = 16 words (1 block)                            = 4
      biases       4 output streams x 16 words                                              = 4
    184 in all. The lutram model counts the weights and one line buffer per stream pair of rows
    (128 bits x 928 words: 8 blocks) = 152."""
    net = df.Network.build([Conv2D("conv", (56, 56, 64), 64)], None, df.Precision(16, 16, 16))
    folding = df.Folding.of(net, coarse_in={"conv": 4}, coarse_out={"conv": 4}, fine={"conv": 9})
    density = df.Density.dense(net)
    assert float(df.evaluate(net, folding, density, U250, resources=HLS).bram18) == 184
    assert float(df.evaluate(net, folding, density, U250).bram18) == 152


def test_the_hls_ram_model_puts_even_a_tiny_memory_in_bram_and_drops_unread_padding():
    # 8 -> 8 channels, 1x1: 64 weights in 64 memories of one word: a block each in hls, LUTRAM otherwise
    net = df.Network.build([Conv2D("c", (4, 4, 8), 8, kernel=(1, 1), padding=((0, 0), (0, 0)))])
    folding = df.Folding.of(net, coarse_in={"c": 8}, coarse_out={"c": 8})
    assert float(df.evaluate(net, folding, df.Density.dense(net), U250, resources=HLS).layer_bram18[0]) == 64 + 8
    assert float(df.evaluate(net, folding, df.Density.dense(net), U250).layer_bram18[0]) == 0
    # a stride-2 3x3 conv on 14 columns, padded 1: its windows touch 15 columns, not 16, so the line
    # buffer holds 15 * 256 + 1 = 3,841 words (4,000-deep, 4-bit: 4 blocks) and not 4,097 (8 blocks)
    strided = df.Network.build([Conv2D("s", (14, 14, 256), 512, stride=(2, 2))], None, df.Precision(16, 16, 16))
    cost = df.evaluate(strided, df.Folding.minimal(strided), df.Density.dense(strided), U250, resources=HLS)
    weights = np.ceil(512 * 256 * 9 / 1000)
    window, accumulators, biases = 2 * 4 + 6 * 1, np.ceil(512 / 1000), np.ceil(512 / 1000)
    assert float(cost.bram18) == weights + window + accumulators + biases


def test_the_hls_ram_model_relaxes_and_differentiates():
    net = small_net()
    density = df.Density.dense(net)
    folding = df.Folding(*(jnp.array(v, jnp.float32)
                           for v in ([2, 4, 4, 2, 8], [2, 1, 1, 4, 2], [1] * 5, [3, 1, 1, 3, 1])))

    def bram(log_co):
        f = folding._replace(coarse_out=jnp.exp(log_co))
        return df.evaluate(net, f, density, U250, temperature=0.1, resources=HLS).bram18

    grad = jax.jit(jax.grad(bram))(jnp.log(folding.coarse_out))
    assert np.isfinite(np.asarray(grad)).all()
    exact = float(df.evaluate(net, folding, density, U250, resources=HLS).bram18)
    assert 0 < float(bram(jnp.log(folding.coarse_out))) <= exact  # the relaxation drops the ceilings


def test_an_unknown_ram_model_is_named():
    with pytest.raises(df.CostModelError, match="ResourceParams.ram is 'bram': expected one of lutram, hls"):
        df.ResourceParams(ram="bram")
    with pytest.raises(df.CostModelError, match="lut_coefficients has 8 entries: expected 9, one per feature"):
        df.ResourceParams(lut_coefficients=(1.0,) * 8)  # coefficients of an older feature set


def test_measured_histograms_set_the_rate_by_the_slowest_stream():
    """Four channels of a 1x1 conv (windows of one product): channels 0 and 1 always non-zero (one
    cycle per window), 2 and 3 always zero (skipped: none). Dealt slowest first in a snake, two
    streams get one slow and one fast channel each: 0.5 cycles per window. With four streams one
    stream holds a slow channel alone: 1 cycle, the same as the dense engine's."""
    histograms = ((0.0, 1.0), (0.0, 1.0), (1.0, 0.0), (1.0, 0.0))
    assert sp.stream_window_cycles(np.array(histograms), 2, 1) == 0.5
    assert sp.stream_window_cycles(np.array(histograms), 4, 1) == 1.0
    assert sp.stream_window_cycles(np.array(histograms), 2, 1, skip_zero_windows=False) == 1.0
    conv = Conv2D("c", (6, 6, 4), 8, kernel=(1, 1), padding=((0, 0), (0, 0)))
    net = df.Network.build([conv], {"c": sp.UnstructuredPattern(histograms=histograms)})
    dense = df.Network.build([conv])
    for ci, speedup in ((2, 2.0), (4, 1.0)):
        folding = df.Folding.of(net, coarse_in={"c": ci}, coarse_out={"c": 1})
        sparse_cycles = float(df.evaluate(net, folding, df.Density.dense(net), U250).layer_cycles[0])
        dense_cycles = float(df.evaluate(dense, folding, df.Density.dense(dense), U250).layer_cycles[0])
        assert dense_cycles / sparse_cycles == speedup
    relaxed = df.evaluate(net, df.Folding.minimal(net), df.Density.dense(net), U250, temperature=0.1)
    assert np.isfinite(np.asarray(relaxed.layer_cycles)).all()


def test_histograms_of_the_wrong_shape_or_not_distributions_are_named():
    conv = Conv2D("c", (6, 6, 4), 8)
    with pytest.raises(df.CostModelError, match=r"node 'c': HASS histograms of shape \(4, 2\), expected \(4, 10\)"):
        df.Network.build([conv], {"c": sp.UnstructuredPattern(histograms=((0.5, 0.5),) * 4)})
    bad = ((0.5,) * 10,) * 4
    with pytest.raises(df.CostModelError, match="node 'c': every row of its HASS histograms must be a distribution"):
        df.Network.build([conv], {"c": sp.UnstructuredPattern(histograms=bad)})


def test_dpacs_gates_cost_what_cooptim_builds():
    """16 -> 32 channels, 8x8, 3x3, every gate on (density 1). The spatial gate is a 3x3 conv over
    16 channels to one channel at 64 positions (9,216 MACs), an engine of its own on
    ci x min(fine, 9) multipliers; the channel gate a 16 x 32 matrix (512 MACs, channel_group 1)
    on the layer's lanes before its products. DPACS's 1 x 1 spatial gate: 1,024 MACs."""
    conv = Conv2D("c", (8, 8, 16), 32)
    dense = df.Network.build([conv])
    # The gate never sets the rate: it reads the same streams and has one output channel of the
    # layer's, at no more windows. It costs multipliers.
    cases = [  # (pattern, coarse_in, coarse_out, fine, the layer's cycles, extra multipliers)
        (sp.DynamicPattern(), 1, 1, 1, 100 * 16 * 32 * 9 + 512, 1),
        (sp.DynamicPattern(), 4, 32, 9, max(100 * 4 + 512 / 128, 9_216 / 36), 36),
        (sp.DynamicPattern(), 16, 32, 9, max(100 + 1, 9_216 / 144), 144),
        (sp.DynamicPattern(spatial_gate_window=(1, 1)), 16, 32, 9, max(100 + 1, 1_024 / 16), 16),
        (sp.DynamicPattern(spatial=False), 16, 32, 9, 100 + 1, 0),
    ]
    for pattern, ci, co, fine, cycles, gate_multipliers in cases:
        net = df.Network.build([conv], {"c": pattern})
        folding = df.Folding.of(net, coarse_in={"c": ci}, coarse_out={"c": co}, fine={"c": fine})
        cost = df.evaluate(net, folding, df.Density.dense(net), U250)
        dense_dsp = float(df.evaluate(dense, folding, df.Density.dense(dense), U250).layer_dsp[0])
        assert float(cost.layer_cycles[0]) == pytest.approx(cycles), (pattern, ci, co, fine)
        assert float(cost.layer_dsp[0]) == dense_dsp + gate_multipliers, (pattern, ci, co, fine)
