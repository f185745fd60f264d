"""The time-multiplexed single-engine accelerator (an "overlay"): one PE array runs every layer in turn.

The style of DPACS's, SAT's and Kang's accelerators. The engine multiplies `pe_in` input channels by
`pe_out` output channels per cycle; a layer's time is the larger of its compute and its off-chip
memory traffic (roofline, Williams et al. CACM 2009), and the network's time is the sum over layers.

Sparsity:
  structured (N:M, Kang, CSP): compute and weight traffic scale by the density (SAT, Kang: the
    engine keeps every PE busy because every group keeps the same count).
  dynamic (DPACS): compute scales by active positions x active channels; input traffic by active
    positions; weight traffic by active channels only if the channel mask is computed before the
    weights are fetched (DPACS's channel-mask precomputation), else all weights are loaded; the
    gating heads add their own work (`DynamicPattern.gate_macs`: the spatial gate, one output
    channel, fills one of the pe_out columns; the channel head is a matrix).
  unstructured on an overlay (Kang, TCSVT 2019): the array fetches pe_in activations at a time
    and each of its pe_out filter lanes multiplies them with its non-zero weights of that group; the
    next fetch waits for the fullest lane, so a fetch costs E[max over the pe_out lanes of nnz] /
    pe_in of a dense fetch, nnz ~ Binomial(pe_in, weight x activation density). Balanced groups
    keep the same count in every lane, so they pay only their density: the load imbalance they
    remove.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cost_models import dataflow as df
from cost_models import sparsity as sp
from cost_models.devices import Device
from cost_models.relax import smooth_max


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Engine:
    """The PE array: pe_in x pe_out multipliers; on-chip buffers hold one layer's tile at a time."""

    pe_in: int = 16
    pe_out: int = 16


class OverlayCost(NamedTuple):
    layer_cycles: jax.Array  # (L,)
    compute_cycles: jax.Array  # (L,)
    memory_cycles: jax.Array  # (L,)
    cycles: jax.Array  # per image
    throughput: jax.Array  # images / s
    latency: jax.Array  # s
    dsp: jax.Array
    dram_bits: jax.Array  # off-chip bits per image
    energy_j: jax.Array
    effective_macs: jax.Array


def evaluate(net: df.Network, engine: Engine, density: df.Density, device: Device, *,
             temperature: float | None = None,
             energy: df.EnergyParams = df.EnergyParams()) -> OverlayCost:
    """Roofline cost of `net` on one `engine`; pure JAX, so jit / grad / vmap apply to density.

    Args:
      net: static network (its patterns say how sparsity is exploited).
      engine: PE-array size (static).
      density: per layer (L,) weight and activation densities; for DPACS layers `weight` is the
        expected fraction of active channels and `activation` of active positions.
      temperature: None for exact ceil / max; > 0 for the smooth relaxation.
    """
    df.check(net, df.Folding.minimal(net), density)
    t = df.tables(net)
    pr = net.precision
    d_w = jnp.asarray(density.weight, jnp.float32)
    d_a = jnp.asarray(density.activation, jnp.float32)
    work = t["work_kind"]
    is_compute = (t["kind"] == df.CONV) | (t["kind"] == df.DENSE_LAYER)

    def ceil(x):  # tiles are whole; relaxed: the continuous number of tiles
        return jnp.ceil(x - 1e-9) if temperature is None else x

    # Compute: tiles of pe_in input channels x pe_out output channels, one per cycle per output
    # position and kernel tap. Non-compute layers stream through at pe_in words per cycle.
    cin = t["c_in"] / t["groups"]
    tiles = ceil(cin / engine.pe_in) * ceil(t["c_out"] / engine.pe_out)
    dense_compute = jnp.where(is_compute, tiles * t["ho_wo"] * t["k2"], t["in_words"] / engine.pe_in)
    factor = jnp.select([work == sp.STRUCTURED, work == sp.DYNAMIC, work == sp.UNSTRUCTURED],
                        [d_w, d_w * d_a, d_w * d_a], 1.0)
    # unstructured: per fetch, the expected fullest of the pe_out lanes over its group of the
    # fetched activations (the layer's channels when it has fewer than pe_in), relative to dense
    per_lane = np.where(is_compute & (work == sp.UNSTRUCTURED), np.minimum(cin, engine.pe_in), 1).astype(int)
    lane_max = sp.expected_lane_max(per_lane, jnp.clip(d_w * d_a, 0.0, 1.0), engine.pe_out)
    compute_factor = jnp.where(work == sp.UNSTRUCTURED, lane_max / per_lane, factor)
    # DPACS's gating heads as built (`DynamicPattern.gate_macs`): the spatial gate has one output
    # channel, so it fills one of the array's pe_out columns; the channel gate is a matrix.
    gate_cycles = t["gate_spatial_macs"] / engine.pe_in + t["gate_channel_macs"] / (engine.pe_in * engine.pe_out)
    compute = dense_compute * compute_factor + gate_cycles

    # Memory: weights (values + indices) once per image, input and output activations.
    stored = jnp.where(work == sp.STRUCTURED, d_w, 1.0)
    precomputed = np.array([getattr(p, "precompute_channel_mask", False) for p in net.patterns])
    loaded = jnp.where((work == sp.DYNAMIC) & precomputed, d_w, stored)
    weight_bits = t["params"] * loaded * (pr.weight_bits + t["index_bits"])
    act_in = jnp.where(work == sp.DYNAMIC, d_a, 1.0) * t["in_words"] * pr.data_bits
    act_out = t["out_words"] * pr.data_bits
    dram_bits = weight_bits + act_in + act_out
    bits_per_cycle = device.bandwidth_gbps * 1e9 / (device.clock_mhz * 1e6)
    memory = dram_bits / bits_per_cycle

    layer_cycles = smooth_max(jnp.stack([compute, memory]), temperature, axis=0)
    cycles = layer_cycles.sum()
    clock_hz = device.clock_mhz * 1e6
    effective_macs = (t["macs"] * factor).sum()
    effective_macs = effective_macs + (t["gate_spatial_macs"] + t["gate_channel_macs"]).sum()  # DPACS gates too
    energy_j = ((effective_macs * energy.pj_per_mac + dram_bits.sum() * energy.pj_per_dram_bit) * 1e-12
                + energy.static_watts * cycles / clock_hz)
    return OverlayCost(layer_cycles, compute, memory, cycles, clock_hz / cycles, cycles / clock_hz,
                       jnp.float32(engine.pe_in * engine.pe_out * df.dsp_per_multiplier(pr)), dram_bits.sum(), energy_j,
                       effective_macs)


def evaluate_blocks(net: df.Network, blocks: Sequence[Sequence[str]], engine: Engine, density: df.Density,
                    device: Device, *, temperature: float | None = None,
                    energy: df.EnergyParams = df.EnergyParams()) -> OverlayCost:
    """DPACS's parallel variant: the layers of each block (a residual block's convs) each on an
    `engine` of their own, pipelined, so a block takes the slowest engine's compute or the block's
    whole off-chip traffic at the device's bandwidth, whichever is longer (the memory I/O
    bottleneck DPACS reports as pruning removes compute). The layers in no block run one after
    the other on one `engine`, as in `evaluate`; `layer_cycles` gives each block's time to its
    first layer and 0 to the others."""
    single = evaluate(net, engine, density, device, temperature=temperature, energy=energy)
    index = {name: i for i, name in enumerate(net.names)}
    unknown = sorted({name for block in blocks for name in block} - set(index))
    if unknown:
        raise df.CostModelError(f"block layer {unknown[0]!r} is no node of the network")
    layer_cycles = single.layer_cycles
    for block in blocks:
        rows = np.array([index[name] for name in block])
        both = jnp.stack([single.compute_cycles[rows].max(), single.memory_cycles[rows].sum()])
        layer_cycles = layer_cycles.at[rows].set(0.0).at[rows[0]].set(smooth_max(both, temperature, axis=0))
    cycles = layer_cycles.sum()
    clock_hz = device.clock_mhz * 1e6
    engines = max((len(block) for block in blocks), default=1)  # the largest block's, reused by the others
    energy_j = single.energy_j - energy.static_watts * (single.cycles - cycles) / clock_hz
    return single._replace(layer_cycles=layer_cycles, cycles=cycles, throughput=clock_hz / cycles,
                           latency=cycles / clock_hz, dsp=single.dsp * engines, energy_j=energy_j)
