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

Energy: MACs, off-chip bits and on-chip buffer accesses (Eyeriss's accounting, ISCA 2016), the
activation fetches as each engine makes them: the array refetches its inputs for every tile of
output channels, CSP's engine reads each activation once (`evaluate`'s comment gives the sources).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Sequence

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
    """The PE array: pe_in x pe_out x taps multipliers; on-chip buffers hold one layer's tile at a time.

    `taps`: kernel positions of a window computed in the same cycle. 1 (the default) walks a K x K
    window one tap per cycle, as DPACS's serial engine does; DPACS's parallel engine unrolls the
    whole 3 x 3 window (CASR-HKU/DPACS, hardware/source/*/*_parallel/conv.h: the k loop inside the
    II=1 pipeline), so it sets taps=9 and a layer with a larger window takes ceil(K^2 / taps) passes.
    """

    pe_in: int = 16
    pe_out: int = 16
    taps: int = 1
    # None: weights stream in while the array computes (prefetched, part of the roofline's
    # traffic). An int: a layer's weights are first loaded into the array's buffers at this many
    # words per cycle and only then does it compute, as DPACS's engines do (conv.h: the w.read()
    # loop fills w_buffer, one pe_in-wide word per cycle, before the compute loop).
    weight_load_words: int | None = None
    # None: feature maps move at the device's bandwidth. An int: they enter and leave the engine
    # through ports of this many words per cycle (DPACS's top.cpp: fin is PI_0 words wide, fout
    # PO_1), a bound of its own once pruning removes compute: the I/O bottleneck DPACS reports.
    feature_port_words: int | None = None
    # 0: one pipeline over a layer's whole tile loop nest, II=1 throughout. Otherwise only the
    # loop over one dimension of channel tiles (`pipelined_tiles`: "out" or "in") is pipelined,
    # inside unpipelined loops over positions, kernel passes and the other dimension's tiles, so
    # each entry into it costs `loop_fill` cycles (the pipeline's depth) on top of its trip
    # count: DPACS's 3 x 3 engines pipeline the output tiles (conv.h `conv_3x3_double_*`), its
    # 1 x 1 engines the input tiles (`conv1x1_dsp_double`). The depth is HLS's schedule, not
    # in the source; positions a dynamic pattern skips pay no fill.
    loop_fill: int = 0
    pipelined_tiles: str = "out"

    def __post_init__(self):
        for field in ("pe_in", "pe_out", "taps", "weight_load_words", "feature_port_words"):
            if getattr(self, field) is not None and int(getattr(self, field)) < 1:
                raise ValueError(f"Engine.{field} must be at least 1, got {getattr(self, field)}")
        if int(self.loop_fill) < 0:
            raise ValueError(f"Engine.loop_fill must be at least 0, got {self.loop_fill}")
        if self.pipelined_tiles not in ("out", "in"):
            raise ValueError(f"Engine.pipelined_tiles must be 'out' or 'in', got {self.pipelined_tiles!r}")


class OverlayCost(NamedTuple):
    layer_cycles: jax.Array  # (L,)
    compute_cycles: jax.Array  # (L,) weight loading (when not prefetched) included
    load_cycles: jax.Array  # (L,) loading weights before compute; 0 when prefetched
    memory_cycles: jax.Array  # (L,)
    cycles: jax.Array  # per image
    throughput: jax.Array  # images / s
    latency: jax.Array  # s
    dsp: jax.Array
    dram_bits: jax.Array  # off-chip bits per image
    onchip_words: jax.Array  # on-chip buffer accesses per image: weight operands, activation fetches, outputs
    energy_j: jax.Array
    effective_macs: jax.Array


def _engine_table(net: df.Network, engine: Engine, layer_engines: Mapping[str, Engine] | None) -> dict:
    """Per-layer engine parameters, (L,) NumPy arrays: `engine` unless `layer_engines` names one."""
    layer_engines = dict(layer_engines or {})
    unknown = sorted(set(layer_engines) - set(net.names))
    if unknown:
        raise df.CostModelError(f"layer_engines names {unknown[0]!r}, which is no node of the network")
    chosen = [layer_engines.get(name, engine) for name in net.names]
    table = {f: np.array([getattr(e, f) for e in chosen], np.float64)
             for f in ("pe_in", "pe_out", "taps", "loop_fill")}
    table["pipelined_out"] = np.array([e.pipelined_tiles == "out" for e in chosen])
    for field in ("weight_load_words", "feature_port_words"):  # 0: not set
        table[field] = np.array([getattr(e, field) or 0 for e in chosen], np.float64)
    return table


def evaluate(net: df.Network, engine: Engine, density: df.Density, device: Device, *,
             temperature: float | None = None, layer_engines: Mapping[str, Engine] | None = None,
             energy: df.EnergyParams = df.EnergyParams()) -> OverlayCost:
    """Roofline cost of `net` on one `engine`; pure JAX, so jit / grad / vmap apply to density.

    Args:
      net: static network (its patterns say how sparsity is exploited).
      engine: PE-array size (static).
      layer_engines: node name -> the engine that runs it, where it is not `engine` (DPACS's
        bottleneck designs size each conv's engine apart); `dsp` counts `engine`'s multipliers.
      density: per layer (L,) weight and activation densities; for DPACS layers `weight` is the
        expected fraction of active channels and `activation` of active positions.
      temperature: None for exact ceil / max; > 0 for the smooth relaxation.
    """
    return _evaluate(net, engine, density, device, temperature, layer_engines, energy)[0]


def _evaluate(net, engine, density, device, temperature, layer_engines, energy) -> tuple[OverlayCost, dict]:
    """`evaluate`, and the per-layer quantities `evaluate_blocks` regroups: the network's tables,
    which layers compute, weight bits, the device's bits per cycle, each layer's engine table."""
    df.check(net, df.Folding.minimal(net), density)
    t = df.tables(net)
    pr = net.precision
    d_w = jnp.asarray(density.weight, jnp.float32)
    d_a = jnp.asarray(density.activation, jnp.float32)
    work = t["work_kind"]
    is_compute = (t["kind"] == df.CONV) | (t["kind"] == df.DENSE_LAYER)
    e = _engine_table(net, engine, layer_engines)

    def ceil(x):  # tiles are whole; relaxed: the continuous number of tiles
        return jnp.ceil(x - 1e-9) if temperature is None else x

    # Compute: tiles of pe_in input channels x pe_out output channels, one per cycle per output
    # position and kernel tap. Non-compute layers stream through at pe_in words per cycle.
    cin = t["c_in"] / t["groups"]
    in_tiles, out_tiles = ceil(cin / e["pe_in"]), ceil(t["c_out"] / e["pe_out"])
    tiles = in_tiles * out_tiles
    passes = np.ceil(t["k2"] / e["taps"])
    dense_compute = jnp.where(is_compute, tiles * t["ho_wo"] * passes, t["in_words"] / e["pe_in"])
    factor = jnp.select([work == sp.STRUCTURED, work == sp.DYNAMIC, work == sp.UNSTRUCTURED],
                        [d_w, d_w * d_a, d_w * d_a], 1.0)
    # unstructured: per fetch, the expected fullest of the pe_out lanes over its group of the
    # fetched activations (the layer's channels when it has fewer than pe_in), relative to dense
    per_lane = np.where(is_compute & (work == sp.UNSTRUCTURED), np.minimum(cin, e["pe_in"]), 1).astype(int)
    lane_max = sp.expected_lane_max(per_lane, jnp.clip(d_w * d_a, 0.0, 1.0), e["pe_out"][:, None])
    compute_factor = jnp.where(work == sp.UNSTRUCTURED, lane_max / per_lane, factor)
    # DPACS's gating heads as built (`DynamicPattern.gate_macs`): the spatial gate has one output
    # channel, so it fills one of the array's pe_out columns; the channel gate is a matrix.
    gate_cycles = t["gate_spatial_macs"] / e["pe_in"] + t["gate_channel_macs"] / (e["pe_in"] * e["pe_out"])

    # positions a dynamic pattern computes (and reads); every other layer's are all computed
    active = jnp.where(work == sp.DYNAMIC, d_a, 1.0)

    # Memory: weights (values + indices) once per image, input and output activations.
    stored = jnp.where(work == sp.STRUCTURED, d_w, 1.0)
    precomputed = np.array([getattr(p, "precompute_channel_mask", False) for p in net.patterns])
    loaded = jnp.where((work == sp.DYNAMIC) & precomputed, d_w, stored)
    loads_first = is_compute & (e["weight_load_words"] > 0)
    load = jnp.where(loads_first, t["params"] * loaded / np.maximum(e["weight_load_words"], 1), 0.0)
    # pipeline fill (`Engine.loop_fill`): once per entry into the pipelined tile loop, i.e. per
    # tile of the other dimension, kernel pass and active position
    entries = jnp.where(e["pipelined_out"], in_tiles, out_tiles)
    fill = jnp.where(is_compute, t["ho_wo"] * passes * entries * e["loop_fill"] * active, 0.0)
    compute = dense_compute * compute_factor + fill + gate_cycles + load
    weight_bits = t["params"] * loaded * (pr.weight_bits + t["index_bits"])
    act_in = active * t["in_words"] * pr.data_bits
    act_out = t["out_words"] * pr.data_bits
    dram_bits = weight_bits + act_in + act_out
    bits_per_cycle = device.bandwidth_gbps * 1e9 / (device.clock_mhz * 1e6)
    # feature ports: input and output on their own AXI channels, so the larger of the two
    port = np.maximum(e["feature_port_words"], 1)
    port_cycles = jnp.where(e["feature_port_words"] > 0,
                            jnp.maximum(act_in, act_out) / pr.data_bits / port, 0.0)
    memory = smooth_max(jnp.stack([dram_bits / bits_per_cycle, port_cycles]), temperature, axis=0)

    layer_cycles = smooth_max(jnp.stack([compute, memory]), temperature, axis=0)
    cycles = layer_cycles.sum()
    clock_hz = device.clock_mhz * 1e6
    effective_macs = (t["macs"] * factor).sum()
    effective_macs = effective_macs + (t["gate_spatial_macs"] + t["gate_channel_macs"]).sum()  # DPACS gates too

    # On-chip accesses, counted as Eyeriss does (Chen et al., ISCA 2016: energy by level of the
    # hierarchy times its accesses): one weight operand per effective MAC and each output written
    # once, as in the dataflow model; activations as the engine fetches them. The array fetches
    # pe_in x taps of them per cycle, shared by its pe_out lanes, and fetches the same ones again
    # for every tile of pe_out output channels; CSP's engine reads each unique activation once and
    # cascades it through that input's weight row (Hanson et al., ISCA 2022, CSP-A), so its
    # fetches do not grow with the output channels. Non-compute layers read their input once.
    is_csp = is_compute & np.array([isinstance(p, sp.CSPPattern) for p in net.patterns])
    array_fetches = dense_compute * compute_factor * e["pe_in"] * e["taps"]
    activation_reads = jnp.where(is_csp | ~is_compute, t["in_words"], array_fetches)
    onchip_words = effective_macs + activation_reads.sum() + t["out_words"].sum()
    energy_j = ((effective_macs * energy.pj_per_mac + onchip_words * energy.pj_per_onchip_word
                 + dram_bits.sum() * energy.pj_per_dram_bit) * 1e-12
                + energy.static_watts * cycles / clock_hz)
    dsp = jnp.float32(engine.pe_in * engine.pe_out * engine.taps * df.dsp_per_multiplier(pr))
    cost = OverlayCost(layer_cycles, compute, load, memory, cycles, clock_hz / cycles, cycles / clock_hz, dsp,
                       dram_bits.sum(), onchip_words, energy_j, effective_macs)
    return cost, {"tables": t, "is_compute": is_compute, "weight_bits": weight_bits,
                  "bits_per_cycle": bits_per_cycle, "engines": e}


def evaluate_blocks(net: df.Network, blocks: Sequence[Sequence[str]], engine: Engine, density: df.Density,
                    device: Device, *, temperature: float | None = None,
                    layer_engines: Mapping[str, Engine] | None = None,
                    energy: df.EnergyParams = df.EnergyParams()) -> OverlayCost:
    """DPACS's block engines (CASR-HKU/DPACS, hardware/source/*/top.cpp: one HLS dataflow region
    per residual block, serial and parallel designs alike): the layers of each block each on an
    `engine` of their own, pipelined, so a block takes its slowest engine or its off-chip traffic,
    whichever is longer (the memory I/O bottleneck DPACS reports as pruning removes compute). The
    traffic is the block's weights, its input read in full (a dynamic block's spatial gate sees
    every position: DPACS's conv_1x1_mask_wrap) and its output; what passes between its engines
    stays on chip. It moves at the device's bandwidth, and the feature maps also through the
    ports of the block's first and last compute engines (`Engine.feature_port_words`). When the
    engine loads its weights before computing (`Engine.weight_load_words`), the block's weights
    arrive through one port in layer order (top.cpp's Load_Weight_Merge -> route_weight), so a
    layer finishes after the loads of every layer before it in its block, its own, and its
    compute. The layers in no block run one after
    the other on one `engine`, as in `evaluate`; `layer_cycles` gives each block's time to its
    first layer and 0 to the others."""
    single, parts = _evaluate(net, engine, density, device, temperature, layer_engines, energy)
    index = {name: i for i, name in enumerate(net.names)}
    unknown = sorted({name for block in blocks for name in block} - set(index))
    if unknown:
        raise df.CostModelError(f"block layer {unknown[0]!r} is no node of the network")
    t, is_compute = parts["tables"], parts["is_compute"]
    layer_cycles = single.layer_cycles
    ports = parts["engines"]["feature_port_words"]
    for block in blocks:
        rows = np.array([index[name] for name in block])
        finish = jnp.cumsum(single.load_cycles[rows]) + single.compute_cycles[rows] - single.load_cycles[rows]
        words_in, words_out = t["in_words"][rows[0]], t["out_words"][rows[-1]]
        traffic = parts["weight_bits"][rows].sum() + (words_in + words_out) * net.precision.data_bits
        engines_used = rows[is_compute[rows]] if is_compute[rows].any() else rows
        port_in, port_out = ports[engines_used[0]], ports[engines_used[-1]]
        port_cycles = max(words_in / port_in if port_in else 0.0, words_out / port_out if port_out else 0.0)
        memory = smooth_max(jnp.stack([traffic / parts["bits_per_cycle"], jnp.float32(port_cycles)]),
                            temperature, axis=0)
        both = jnp.stack([smooth_max(finish, temperature, axis=0), memory])
        layer_cycles = layer_cycles.at[rows].set(0.0).at[rows[0]].set(smooth_max(both, temperature, axis=0))
    cycles = layer_cycles.sum()
    clock_hz = device.clock_mhz * 1e6
    # the block with the most compute layers sets the engine count; the other blocks reuse them
    engines = max((int(is_compute[[index[name] for name in block]].sum()) for block in blocks), default=1)
    energy_j = single.energy_j - energy.static_watts * (single.cycles - cycles) / clock_hz
    return single._replace(layer_cycles=layer_cycles, cycles=cycles, throughput=clock_hz / cycles,
                           latency=cycles / clock_hz, dsp=single.dsp * max(engines, 1), energy_j=energy_j)
