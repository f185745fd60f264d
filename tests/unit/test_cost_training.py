"""The training-accelerator model (SAT): a step's three matmuls per layer on a systolic array."""

import dataclasses

import numpy as np
import pytest

import cost_models as cm
from cost_models import overlay, training

VCU1525 = cm.get_device("vcu1525")
FAST = dataclasses.replace(VCU1525, bandwidth_gbps=1e6)  # compute-bound: the ideal ratios hold exactly
# every reduction, kept or not, a multiple of the 32 x 32 array: 1x1 convs, 256 -> 256 channels
NO_PAD = ((0, 0), (0, 0))
LAYERS = [cm.Conv2D("first", (16, 16, 256), 256, (1, 1), padding=NO_PAD),
          cm.Conv2D("c", (16, 16, 256), 256, (1, 1), padding=NO_PAD)]


def step_cycles(patterns, device=FAST, **kwargs):
    net = cm.Network.build(LAYERS, patterns)
    return training.evaluate(net, overlay.Engine(32, 32), device, batch=8, **kwargs)


@pytest.mark.parametrize("n, m", [(2, 8), (2, 4), (1, 4), (4, 8)])
def test_bdwp_step_is_the_ideal_fraction_of_dense(n, m):
    """SAT/BDWP: forward and input gradient N:M, weight gradient dense -> (2N/M + 1)/3 of the
    dense step on the layer that has all three passes (the first has no input gradient)."""
    dense = step_cycles([cm.DensePattern()] * 2).pass_cycles[1].sum()
    bdwp = step_cycles([cm.DensePattern(), cm.NMPattern(n, m)]).pass_cycles[1].sum()
    assert float(bdwp / dense) == pytest.approx((2 * n / m + 1) / 3)


def test_forward_only_nm_training_saves_a_third_at_most():
    dense = step_cycles([cm.DensePattern()] * 2).pass_cycles[1].sum()
    forward_only = step_cycles([cm.DensePattern(), cm.NMPattern(2, 8)], bidirectional=False).pass_cycles[1].sum()
    assert float(forward_only / dense) == pytest.approx((2 / 8 + 2) / 3)


def test_passes_by_hand_and_the_first_layer_has_no_input_gradient():
    """K = 256, C_out = 256, rows = 8 x 256 = 2048 on 32 x 32: forward and input gradient 8 x 8
    tiles x 2048 rows, weight gradient 64 x 8 tiles x 256 reductions."""
    cost = step_cycles([cm.DensePattern()] * 2)
    assert np.asarray(cost.compute_cycles[1]).tolist() == [8 * 8 * 2048, 8 * 8 * 2048, 64 * 8 * 256]
    assert float(cost.compute_cycles[0, 1]) == 0.0  # nothing reads the first layer's input gradient
    assert float(cost.samples_per_s) == pytest.approx(8 / float(cost.seconds))


def test_a_slow_interface_makes_the_passes_memory_bound():
    slow = dataclasses.replace(VCU1525, bandwidth_gbps=0.5)
    cost = step_cycles([cm.DensePattern()] * 2, device=slow)
    assert np.all(np.asarray(cost.pass_cycles[1]) == np.asarray(cost.memory_cycles[1]))
    # then sparsity saves only its share of the traffic, not its share of the MACs
    sparse = step_cycles([cm.DensePattern(), cm.NMPattern(2, 8)], device=slow)
    ratio = float(sparse.pass_cycles[1].sum() / cost.pass_cycles[1].sum())
    assert (2 * 2 / 8 + 1) / 3 < ratio < 1.0
