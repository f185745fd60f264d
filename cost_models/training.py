"""A training accelerator: one systolic array running every layer's three training matmuls (SAT).

SAT (Fang et al., IEEE TCAD 2023, arXiv 2309.13015) trains N:M-sparse networks on an FPGA whose
systolic array runs dense and N:M matmuls. Per layer and training step, with X the layer's input
rows (batch x output positions, each a window of K = k^2 C_in / g values) and W its (K, C_out)
weight:

  forward          Y  = X W        reduction over K       N:M along W's input axis (nm, bdwp)
  input gradient   dX = dY W^T     reduction over C_out   N:M along W's output axis (bdwp only)
  weight gradient  dW = X^T dY     reduction over rows    dense (the update stays dense)

Each pass is a matmul (rows x reduction) @ (reduction x columns) on one PE array (`overlay.Engine`,
pe_in x pe_out), weight-stationary: ceil(reduction / pe_in) x ceil(columns / pe_out) tiles, each
streaming the pass's rows through the array. An N:M operand shortens its reduction to N/M of it (SAT's sparse mode); a
pass's time is the larger of its compute and its off-chip traffic (roofline, as `overlay`). The
first layer computes no input gradient (nothing reads it). When every pass is compute-bound and
tiles evenly, BDWP's step takes (2N/M + 1)/3 of the dense step's cycles, the ideal ratio of
SAT/BDWP; plain N:M training (forward only) takes (N/M + 2)/3.

Our first-order model: the array size is a parameter (not SAT's published configuration), there is
no fill/drain or im2col cost, and every operand crosses the off-chip interface once per pass.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cost_models import dataflow as df
from cost_models import sparsity as sp
from cost_models.devices import Device
from cost_models.overlay import Engine

PASSES = ("forward", "input_gradient", "weight_gradient")


class TrainingCost(NamedTuple):
    pass_cycles: jax.Array  # (L, 3): forward, input gradient, weight gradient per layer
    compute_cycles: jax.Array  # (L, 3)
    memory_cycles: jax.Array  # (L, 3)
    cycles: jax.Array  # per training step (one batch)
    seconds: jax.Array
    samples_per_s: jax.Array


def evaluate(net: df.Network, array: Engine, device: Device, batch: int, *,
             bidirectional: bool = True) -> TrainingCost:
    """Cycles of one training step of `batch` samples for `net` on `array`.

    `net`'s N:M patterns sparsify the forward pass; with `bidirectional` (BDWP) also the input
    gradient (the backward copy of W is N:M along its output axis, SAT's sparse mode on W^T).
    Dense layers (no pattern) and non-compute nodes (pools, activations, adds) are not costed.
    """
    t = df.tables(net)
    compute = (t["kind"] == df.CONV) | (t["kind"] == df.DENSE_LAYER)
    reduction = np.where(t["kind"] == df.CONV, t["k2"] * t["c_in"] / t["groups"], t["c_in"])
    columns = t["c_out"]
    rows = batch * np.where(t["kind"] == df.CONV, t["ho_wo"], 1.0)
    keep = np.array([p.n / p.m if isinstance(p, sp.NMPattern) else 1.0 for p in net.patterns])
    first = np.arange(len(keep)) == int(np.argmax(compute))  # the first layer with weights

    def tiles(reduce, cols):
        return np.ceil(reduce / array.pe_in) * np.ceil(cols / array.pe_out)

    # (L, 3) cycles of compute: tiles of the stationary operand x the rows streamed through
    forward = tiles(reduction * keep, columns) * rows
    input_gradient = np.where(first, 0.0, tiles(columns * (keep if bidirectional else 1.0), reduction) * rows)
    weight_gradient = tiles(rows, columns) * reduction
    compute_cycles = np.where(compute[:, None], np.stack([forward, input_gradient, weight_gradient], 1), 0.0)

    # off-chip traffic of each pass: its two operands and its result, N:M weights as kept values
    # plus indices
    pr = net.precision
    weight_bits = t["params"] * keep * (pr.weight_bits + t["index_bits"])
    dense_weight_bits = t["params"] * pr.weight_bits
    x_bits = rows * reduction * pr.data_bits  # the layer's input windows
    dy_bits = rows * columns * pr.data_bits  # the output gradient
    traffic = np.stack([x_bits + weight_bits + dy_bits,  # forward: X, W in, Y out
                        np.where(first, 0.0, dy_bits + (weight_bits if bidirectional else dense_weight_bits)
                                 + x_bits),  # input gradient: dY, W in, dX out
                        x_bits + dy_bits + dense_weight_bits], 1)  # weight gradient: X, dY in, dW out
    bits_per_cycle = device.bandwidth_gbps * 1e9 / (device.clock_mhz * 1e6)
    memory_cycles = np.where(compute_cycles > 0, traffic / bits_per_cycle, 0.0)
    pass_cycles = np.maximum(compute_cycles, memory_cycles)
    cycles = pass_cycles.sum()
    seconds = cycles / (device.clock_mhz * 1e6)
    return TrainingCost(jnp.asarray(pass_cycles), jnp.asarray(compute_cycles), jnp.asarray(memory_cycles),
                        jnp.asarray(cycles), jnp.asarray(seconds), jnp.asarray(batch / seconds))
