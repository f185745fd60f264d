"""The single-engine (overlay) roofline model."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cost_models import dataflow as df
from cost_models import devices, overlay
from cost_models import sparsity as sp
from cost_models.layers import Conv2D, Elementwise

ZCU102 = devices.get_device("zcu102")


def test_compute_bound_layer_by_hand():
    """32 -> 64 channels, 16x16, 3x3 on a 16 x 16 PE array: ceil(32/16) * ceil(64/16) = 8 tiles
    x 256 positions x 9 taps = 18,432 cycles. Memory: (18,432 weights + 8,192 inputs + 16,384
    outputs) x 16 bits = 688,128 bits at 153.6 Gb/s / 200 MHz = 768 bits/cycle -> 896 cycles."""
    net = df.Network.build([Conv2D("c", (16, 16, 32), 64)])
    cost = overlay.evaluate(net, overlay.Engine(16, 16), df.Density.dense(net), ZCU102)
    assert float(cost.compute_cycles[0]) == 18_432
    assert float(cost.memory_cycles[0]) == pytest.approx(896)
    assert float(cost.cycles) == 18_432
    assert float(cost.dsp) == 256


def test_memory_bound_layer_and_roofline():
    slow = dataclasses.replace(ZCU102, bandwidth_gbps=1.0)
    net = df.Network.build([Conv2D("c", (16, 16, 32), 64)])
    cost = overlay.evaluate(net, overlay.Engine(16, 16), df.Density.dense(net), slow)
    assert float(cost.cycles) == pytest.approx(688_128 / 5.0)  # 1 Gb/s / 200 MHz = 5 bits/cycle
    assert float(cost.cycles) == float(cost.memory_cycles[0])


def test_two_four_halves_compute_and_weight_traffic():
    conv = Conv2D("c", (16, 16, 32), 64)
    dense, nm = df.Network.build([conv]), df.Network.build([conv], [sp.NMPattern(2, 4)])
    a = overlay.evaluate(dense, overlay.Engine(), df.Density.from_patterns(dense), ZCU102)
    b = overlay.evaluate(nm, overlay.Engine(), df.Density.from_patterns(nm), ZCU102)
    assert float(b.compute_cycles[0]) == float(a.compute_cycles[0]) / 2


def test_dpacs_channel_mask_precomputation_saves_weight_loads():
    conv = Conv2D("c", (14, 14, 256), 256)
    slow = dataclasses.replace(ZCU102, bandwidth_gbps=5.0)  # memory-bound, as DPACS found
    density = df.Density(np.array([0.5], np.float32), np.array([0.5], np.float32))
    pre = df.Network.build([conv], [sp.DynamicPattern(precompute_channel_mask=True)])
    late = df.Network.build([conv], [sp.DynamicPattern(precompute_channel_mask=False)])
    c_pre = overlay.evaluate(pre, overlay.Engine(), density, slow)
    c_late = overlay.evaluate(late, overlay.Engine(), density, slow)
    assert float(c_pre.dram_bits) < float(c_late.dram_bits)
    assert float(c_pre.cycles) < float(c_late.cycles)
    # compute: a quarter of the dense MACs plus the gating heads
    dense = df.Network.build([conv])
    full = overlay.evaluate(dense, overlay.Engine(), df.Density.dense(dense), slow)
    assert float(c_pre.compute_cycles[0]) > float(full.compute_cycles[0]) / 4


@pytest.mark.parametrize("n, p, lanes", [(9, 0.5, 4), (72, 0.25, 256), (288, 0.1, 64), (16, 1.0, 8), (16, 0.0, 8)])
def test_expected_lane_max_matches_sampling(n, p, lanes):
    """E[max of `lanes` Binomial(n, p)] against 20,000 sampled PE-array steps."""
    samples = np.random.default_rng(0).binomial(n, p, size=(20_000, lanes)).max(axis=1)
    got = float(sp.expected_lane_max(n, jnp.float32(p), lanes))
    assert got == pytest.approx(samples.mean(), rel=0.01, abs=0.01)


def test_kang_balanced_groups_beat_unstructured_by_the_lane_imbalance():
    """Kang (TCSVT 2019): the array fetches 16 activations at a time; with balanced groups each of
    the 16 filter lanes holds 4 of its 16 weights, with unstructured sparsity at the same density
    each holds Binomial(16, 1/4) and the fetch waits for the fullest lane."""
    conv = Conv2D("c", (16, 16, 64), 64)
    density = df.Density(np.array([0.25], np.float32), np.array([1.0], np.float32))
    kang = df.Network.build([conv], [sp.BalancedGroupPattern(keep=4, group=16)])
    free = df.Network.build([conv], [sp.UnstructuredPattern()])
    engine = overlay.Engine(16, 16)
    balanced = float(overlay.evaluate(kang, engine, density, ZCU102).compute_cycles[0])
    unstructured = float(overlay.evaluate(free, engine, density, ZCU102).compute_cycles[0])
    assert balanced == 16 * 256 * 9 * 0.25  # 4 x 4 tiles x 256 positions x 9 taps, a quarter kept
    imbalance = np.random.default_rng(1).binomial(16, 0.25, size=(20_000, 16)).max(axis=1).mean() / 4
    assert unstructured / balanced == pytest.approx(imbalance, rel=0.01)
    assert unstructured / balanced > 1.6  # the fullest of 16 lanes holds ~1.8x the mean
    # the MACs done are the same; only the time differs
    effective = [float(overlay.evaluate(n, engine, density, ZCU102).effective_macs) for n in (kang, free)]
    assert effective[0] == effective[1]


def test_grad_and_vmap_over_density():
    net = df.Network.build([Conv2D("a", (8, 8, 16), 16), Conv2D("b", (8, 8, 16), 32)],
                           [sp.NMPattern(2, 4), sp.DynamicPattern()])
    f = lambda dw: overlay.evaluate(net, overlay.Engine(8, 8), df.Density(dw, jnp.array([1.0, 0.5])),
                                    ZCU102, temperature=0.05).cycles
    g = jax.jit(jax.grad(f))(jnp.array([0.5, 0.5]))
    assert g.shape == (2,) and bool(jnp.all(g > 0))
    batch = jax.jit(jax.vmap(f))(jnp.linspace(0.2, 1.0, 5)[:, None] * jnp.ones(2))
    assert batch.shape == (5,) and bool(jnp.all(jnp.diff(batch) > 0))


def test_a_block_of_engines_takes_its_slowest_engine_or_its_whole_traffic():
    """DPACS's block engines: a and b in one block, each on its own engine; c alone after them."""
    layers = [Conv2D("a", (16, 16, 32), 32), Conv2D("b", (16, 16, 32), 64), Conv2D("c", (16, 16, 64), 16)]
    net = df.Network.build(layers)
    engine, density = overlay.Engine(8, 8), df.Density.dense(net)
    single = overlay.evaluate(net, engine, density, ZCU102)
    blocks = overlay.evaluate_blocks(net, [["a", "b"]], engine, density, ZCU102)
    compute, memory = np.asarray(single.compute_cycles), np.asarray(single.memory_cycles)
    block = max(compute[:2].max(), memory[:2].sum())
    np.testing.assert_allclose(np.asarray(blocks.layer_cycles), [block, 0.0, single.layer_cycles[2]], rtol=1e-6)
    assert float(blocks.cycles) < float(single.cycles) and float(blocks.dsp) == 2 * float(single.dsp)
    # a slow off-chip link makes the block's whole traffic the bound
    slow = dataclasses.replace(ZCU102, bandwidth_gbps=0.05)
    memory_bound = overlay.evaluate_blocks(net, [["a", "b"]], engine, density, slow)
    # a's and b's weights (9,216 + 18,432), a's input (8,192) and b's output (16,384), 16 bits
    # each, at 0.05 Gb/s / 200 MHz = 0.25 bits per cycle; a's output passes to b on chip
    block_bits = (9_216 + 18_432 + 8_192 + 16_384) * 16
    assert float(memory_bound.layer_cycles[0]) == pytest.approx(block_bits / 0.25, rel=1e-6)
    with pytest.raises(df.CostModelError, match="block layer 'x' is no node of the network"):
        overlay.evaluate_blocks(net, [["a", "x"]], engine, density, ZCU102)


def test_a_window_engine_takes_one_pass_per_taps_kernel_positions():
    """DPACS's parallel engine computes a whole 3 x 3 window per cycle (taps=9): a 3 x 3 conv is
    one pass of its tiles, a 5 x 5 conv ceil(25 / 9) = 3, a 1 x 1 conv one; each multiplier a DSP."""
    engine = overlay.Engine(16, 16, taps=9)
    for kernel, passes in (((3, 3), 1), ((5, 5), 3), ((1, 1), 1)):
        conv = Conv2D("c", (16, 16, 32), 64, kernel)
        net = df.Network.build([conv])
        cost = overlay.evaluate(net, engine, df.Density.dense(net), ZCU102)
        positions = conv.out_shape[0] * conv.out_shape[1]
        assert float(cost.compute_cycles[0]) == 2 * 4 * positions * passes
    assert float(cost.dsp) == 16 * 16 * 9


def test_weights_loaded_before_compute_add_their_load_time():
    """An engine that loads a layer's weights at 16 words per cycle before computing (DPACS's
    conv.h) takes 18,432 / 16 = 1,152 cycles more than one that prefetches them."""
    net = df.Network.build([Conv2D("c", (16, 16, 32), 64)])
    prefetched = overlay.evaluate(net, overlay.Engine(16, 16), df.Density.dense(net), ZCU102)
    loading = overlay.evaluate(net, overlay.Engine(16, 16, weight_load_words=16), df.Density.dense(net), ZCU102)
    assert float(prefetched.load_cycles[0]) == 0.0
    assert float(loading.load_cycles[0]) == 1_152
    assert float(loading.compute_cycles[0]) == float(prefetched.compute_cycles[0]) + 1_152


def test_a_block_loads_its_weights_in_layer_order_through_one_port():
    """DPACS's top.cpp routes one weight stream to a block's engines: b's compute starts after a's
    load and its own, so the block ends at the later of a's load + compute and a's load + b's load
    + b's compute."""
    layers = [Conv2D("a", (16, 16, 32), 32), Conv2D("b", (16, 16, 32), 64)]
    net = df.Network.build(layers)
    engine, density = overlay.Engine(8, 8, weight_load_words=2), df.Density.dense(net)
    single = overlay.evaluate(net, engine, density, ZCU102)
    load, compute = np.asarray(single.load_cycles), np.asarray(single.compute_cycles) - np.asarray(single.load_cycles)
    block = overlay.evaluate_blocks(net, [["a", "b"]], engine, density, ZCU102)
    expected = max(load[0] + compute[0], load[0] + load[1] + compute[1])
    assert float(block.cycles) == pytest.approx(expected, rel=1e-6)
    assert expected > max(load[0] + compute[0], load[1] + compute[1])  # the shared port is what binds


def test_layer_engines_size_each_layer_apart_and_bad_engines_are_named():
    layers = [Conv2D("a", (16, 16, 32), 32), Conv2D("b", (16, 16, 32), 64)]
    net = df.Network.build(layers)
    density = df.Density.dense(net)
    base = overlay.evaluate(net, overlay.Engine(8, 8), density, ZCU102)
    mixed = overlay.evaluate(net, overlay.Engine(8, 8), density, ZCU102, layer_engines={"b": overlay.Engine(32, 16)})
    assert float(mixed.compute_cycles[0]) == float(base.compute_cycles[0])
    assert float(mixed.compute_cycles[1]) == 1 * 4 * 256 * 9  # ceil(32/32) x ceil(64/16) tiles
    with pytest.raises(df.CostModelError, match="layer_engines names 'x', which is no node"):
        overlay.evaluate(net, overlay.Engine(8, 8), density, ZCU102, layer_engines={"x": overlay.Engine()})
    for field in ("pe_in", "pe_out", "taps", "weight_load_words"):
        with pytest.raises(ValueError, match=f"Engine.{field} must be at least 1, got 0"):
            overlay.Engine(**{field: 0})


def test_a_block_needs_an_engine_per_compute_layer_only():
    """A block of a conv, an elementwise ReLU and a conv runs on two engines, not three."""
    layers = [Conv2D("a", (16, 16, 32), 32), Elementwise("relu", (16, 16, 32)), Conv2D("b", (16, 16, 32), 32)]
    net = df.Network.build(layers)
    engine, density = overlay.Engine(8, 8), df.Density.dense(net)
    single = overlay.evaluate(net, engine, density, ZCU102)
    block = overlay.evaluate_blocks(net, [["a", "relu", "b"]], engine, density, ZCU102)
    assert float(block.dsp) == 2 * float(single.dsp)


def test_csp_reads_each_activation_once_where_the_array_refetches_per_output_tile():
    """64 -> 64 channels, 16 x 16, 3 x 3 on a 16 x 16 array: the array fetches 16 activations per
    cycle over 4 x 4 tiles x 256 positions x 9 taps = 589,824 reads, the 16,384 inputs once per
    tap and output tile; CSP reads the 16,384 once (Hanson et al., ISCA 2022). The weight
    operands (one per MAC) and the outputs are the same, so the energy differs by the 573,440
    activation reads saved, less CSP's off-chip length counters."""
    conv = Conv2D("c", (16, 16, 64), 64)
    dense = df.Network.build([conv])
    csp = df.Network.build([conv], [sp.CSPPattern(chunk=8, kept=1.0)])
    engine, no_static = overlay.Engine(16, 16), df.EnergyParams(static_watts=0.0)
    a = overlay.evaluate(dense, engine, df.Density.dense(dense), ZCU102, energy=no_static)
    b = overlay.evaluate(csp, engine, df.Density.from_patterns(csp), ZCU102, energy=no_static)
    macs, outputs = 16 * 16 * 64 * 64 * 9, 16 * 16 * 64
    assert float(a.onchip_words) == macs + 589_824 + outputs
    assert float(b.onchip_words) == macs + 16_384 + outputs
    counters_j = float(b.dram_bits - a.dram_bits) * no_static.pj_per_dram_bit * 1e-12
    saved_j = 573_440 * no_static.pj_per_onchip_word * 1e-12 - counters_j
    assert float(a.energy_j - b.energy_j) == pytest.approx(saved_j, rel=1e-5)
    # at half the weights, 2:4 halves the array's fetches; CSP still reads each activation once
    nm = df.Network.build([conv], [sp.NMPattern(2, 4)])
    half = df.Network.build([conv], [sp.CSPPattern(chunk=8, kept=0.5)])
    c = overlay.evaluate(nm, engine, df.Density.from_patterns(nm), ZCU102, energy=no_static)
    d = overlay.evaluate(half, engine, df.Density.from_patterns(half), ZCU102, energy=no_static)
    assert float(c.onchip_words) == macs / 2 + 589_824 / 2 + outputs
    assert float(d.onchip_words) == macs / 2 + 16_384 + outputs


def test_feature_ports_bound_a_layer_and_a_block_once_compute_is_small():
    """32 -> 64 channels, 16 x 16, 3 x 3 on a 32 x 32 array: 2 tiles x 256 x 9 = 4,608 cycles of
    compute, but through one-word feature ports the 16,384 outputs take 16,384 cycles (the input,
    8,192 words, moves on its own channel meanwhile). In a block a -> b only a's input and b's
    output cross the ports."""
    conv = Conv2D("c", (16, 16, 32), 64)
    net = df.Network.build([conv])
    cost = overlay.evaluate(net, overlay.Engine(32, 32, feature_port_words=1), df.Density.dense(net), ZCU102)
    assert float(cost.compute_cycles[0]) == 4_608
    assert float(cost.memory_cycles[0]) == 16_384 and float(cost.cycles) == 16_384
    block_net = df.Network.build([Conv2D("a", (16, 16, 32), 32), Conv2D("b", (16, 16, 32), 16)])
    engine, density = overlay.Engine(32, 32, feature_port_words=1), df.Density.dense(block_net)
    block = overlay.evaluate_blocks(block_net, [["a", "b"]], engine, density, ZCU102)
    assert float(block.cycles) == 8_192  # a's input; b's output is 4,096 words, a's output never leaves


def test_pipeline_fill_is_paid_per_entry_into_the_pipelined_tile_loop():
    """32 -> 64 channels, 16 x 16, 3 x 3 on a 16 x 16 array with a 5-cycle fill: pipelining the
    output tiles, the loop is entered per input tile (2), tap (9) and position (256): 2 x 9 x 256 x
    5 = 23,040 cycles on top of the 18,432; pipelining the input tiles, per output tile (4):
    46,080. Positions a dynamic pattern skips pay none."""
    conv = Conv2D("c", (16, 16, 32), 64)
    net = df.Network.build([conv])
    dense = df.Density.dense(net)
    out = overlay.evaluate(net, overlay.Engine(16, 16, loop_fill=5), dense, ZCU102)
    inner = overlay.evaluate(net, overlay.Engine(16, 16, loop_fill=5, pipelined_tiles="in"), dense, ZCU102)
    assert float(out.compute_cycles[0]) == 18_432 + 23_040
    assert float(inner.compute_cycles[0]) == 18_432 + 46_080
    gated = df.Network.build([conv], [sp.DynamicPattern(spatial_gate_window=(1, 1))])
    half = df.Density(np.array([1.0], np.float32), np.array([0.5], np.float32))
    no_fill = overlay.evaluate(gated, overlay.Engine(16, 16), half, ZCU102)
    with_fill = overlay.evaluate(gated, overlay.Engine(16, 16, loop_fill=5), half, ZCU102)
    assert float(with_fill.compute_cycles[0] - no_fill.compute_cycles[0]) == 23_040 / 2
    with pytest.raises(ValueError, match="Engine.pipelined_tiles must be 'out' or 'in', got 'x'"):
        overlay.Engine(pipelined_tiles="x")
    with pytest.raises(ValueError, match="Engine.loop_fill must be at least 0, got -1"):
        overlay.Engine(loop_fill=-1)
