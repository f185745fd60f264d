"""The layer-pipelined (fpgaConvNet-style) dataflow accelerator.

Every layer gets its own engine; all engines run concurrently on consecutive parts of the stream,
so the pipeline's interval is set by its slowest layer. An engine's folding is four factors
(fpgaConvNet, Venieris & Bouganis, FCCM 2016 / TNNLS 2019):

  coarse_in    input-channel streams (divides C_in / groups)
  coarse_out   output-channel streams (divides C_out / groups)
  coarse_group groups processed in parallel (divides groups)
  fine         multipliers per dot product over the K_h x K_w window (divides K^2 for dense
               engines; any 1..K^2 for HASS's sparse engine)

Non-compute layers (pool, activation, add) use coarse_in as their single `coarse`.

    net = Network.build(layers, patterns)
    cost = evaluate(net, Folding.minimal(net), Density.from_patterns(net), get_device("zcu102"))

`evaluate` is a pure JAX function: jit, grad and vmap work on folding and density. With
`temperature=None` it is the discrete model (exact max and ceil); with a temperature it is the
smooth relaxation (`relax.py`), which tends to the discrete model as the temperature goes to 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cost_models import sparsity as sp
from cost_models.devices import Device
from cost_models.graph import INPUT, Graph, GraphError
from cost_models.layers import Conv2D, Dense, Elementwise, GlobalPool, Layer, Pool, Split, Subsample
from cost_models.relax import smooth_max

CONV, DENSE_LAYER, POOL, GLOBAL_POOL, ELEMENTWISE = range(5)


class CostModelError(ValueError):
    """Inputs the cost model cannot evaluate; the message names the layer."""


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Precision:
    """Fixed-point widths of the datapath, in bits."""

    data_bits: int = 16
    weight_bits: int = 16
    acc_bits: int = 32


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class ResourceParams:
    """Named constants of the resource estimates that have no closed form.

    LUT and FF of a compute engine: a linear model in the features of `logic_features`
    (`LOGIC_FEATURES`: multipliers, streams, lanes, and per lane the logarithms of its filters,
    output positions and channels: the counters and address logic of a lane grow with the log of
    what it counts, as in fpgaConvNet's own per-module models; and per lane its channels, linearly),
    coefficients `lut_coefficients` and
    `ff_coefficients`. The defaults are our non-negative least-squares fit, by relative error, to
    fpgaconvnet-model 0.1.4.2's (hls backend) predictions for the 363 conv and fc records of
    tests/fixtures/fpgaconvnet_peer.json (`python benchmarks/fit_logic.py` prints them): median
    relative error 1.8% (LUT) and 1.5% (FF), at most 9.0% and 7.4% (fpgaConvNet fits its module
    models to synthesis results). The fixture's engines are dense: a sparse engine's index
    multiplexers are added from first principles (`mux_luts_per_bit`, `index_multiplexers`).
    A pooling engine:
    per stream, a constant plus one per window tap, the line through the peer's figures for its
    2 x 2 and 3 x 3 max pools (its pool logic grows linearly with the window; exact on both).
    Activation / add / split engines use `lut_per_simple_stream` / `ff_per_simple_stream`.
    BRAM18 aspect ratios (width -> depth) are Xilinx's (UG573).
    """

    lut_coefficients: tuple = (0.0, 265.487, 0.0, 13.855, 474.671, 150.009, 17.825, 75.42, 0.062)
    ff_coefficients: tuple = (0.0, 293.512, 3.393, 10.896, 669.757, 172.712, 23.233, 75.64, 0.071)
    lut_per_simple_stream: float = 200.0
    lut_per_pool_stream: float = 355.8
    lut_per_pool_tap: float = 136.8
    ff_per_simple_stream: float = 300.0
    ff_per_pool_stream: float = 589.8
    ff_per_pool_tap: float = 179.2
    # How on-chip memories become BRAM18 blocks (`RAM_MODELS`):
    #   "lutram": UG573's aspect ratios (`bram_configs`), arrays of at most `lutram_bits` bits in
    #     LUTRAM; weights, line buffers and skip FIFOs (our model);
    #   "hls": fpgaconvnet-model's hls backend: every memory in BRAM however small, 1,000-deep
    #     configurations (`hls_bram_configs`), FIFOs sized by depth, and also the sliding window's
    #     window buffers, the accumulation buffers and the bias memories (`_hls_bram18`).
    ram: str = "lutram"
    # The index multiplexers of sparse engines in LUTs (`mux_luts_per_bit`); False leaves them out
    # (the model before they were counted: the fit sees dense engines only).
    index_multiplexers: bool = True
    lutram_bits: int = 1024  # arrays this small go to LUTRAM, not BRAM (fpgaConvNet's rule)
    bram_configs: tuple = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
    # fpgaconvnet-model 0.1.4.2, tools/resource_model.py: (width, depth) as its hls backend counts them
    hls_bram_configs: tuple = ((1, 16000), (2, 8000), (4, 4000), (9, 2000), (18, 1000), (36, 512))
    # URAM288 (UG573): natively 72 x 4096; cascaded as fpgaConvNet's extended configurations
    # (fpgaconvnet-model, tools/resource_analytical_model.py, URAM_EXT_CONF_WIDTH)
    uram_configs: tuple = ((1, 262144), (2, 131072), (4, 65536), (9, 32768), (18, 16384), (36, 8192),
                           (72, 4096))

    def __post_init__(self):
        if self.ram not in RAM_MODELS:
            raise CostModelError(f"ResourceParams.ram is {self.ram!r}: expected one of {', '.join(RAM_MODELS)}")
        for name in ("lut_coefficients", "ff_coefficients"):
            if len(getattr(self, name)) != len(LOGIC_FEATURES):
                raise CostModelError(f"ResourceParams.{name} has {len(getattr(self, name))} entries: expected "
                                     f"{len(LOGIC_FEATURES)}, one per feature of LOGIC_FEATURES")


RAM_MODELS = ("lutram", "hls")
# The features of a compute engine's logic (`logic_features`), in `ResourceParams`' coefficient order.
LOGIC_FEATURES = ("multipliers", "input streams", "output streams", "lanes", "lanes x log2 filters per lane",
                  "lanes x log2 output positions", "lanes x log2 channels per lane", "window taps",
                  "lanes x channels per lane")


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class EnergyParams:
    """Energy per operation, in picojoules, and static power, in watts.

    Defaults are order-of-magnitude figures in the spirit of Horowitz (ISSCC 2014) for a 16-bit
    datapath: a MAC ~1 pJ, an on-chip RAM word ~5 pJ, an off-chip bit ~20 pJ (about 1.3 nJ per 64
    bits), plus the board's static power. Override them for a real board.
    """

    pj_per_mac: float = 1.0
    pj_per_onchip_word: float = 5.0
    pj_per_dram_bit: float = 20.0
    static_watts: float = 5.0


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Network:
    """Static description of a network for the cost model: its graph (an engine per node), each
    node's sparsity pattern, and the datapath's precision. `layers` are the graph's nodes' layers."""

    graph: Graph
    patterns: tuple
    precision: Precision = Precision()

    @staticmethod
    def build(layers: Graph | Sequence[Layer], patterns: Sequence[sp.Pattern] | Mapping[str, sp.Pattern] | None = None,
              precision: Precision = Precision()) -> "Network":
        """`layers`: a `Graph`, or a list taken as a pipeline in that order (shapes unchecked, so
        that a list of only the compute layers still works). `patterns`: one per node, or
        {node name: pattern} (nodes not named are dense)."""
        try:  # a list: checked by Graph.build too (names unique, at least one layer)
            graph = layers if isinstance(layers, Graph) else Graph.chain(layers, check_shapes=False)
        except GraphError as e:
            raise CostModelError(str(e)) from None
        if isinstance(patterns, Mapping):
            unknown = sorted(set(patterns) - set(graph.names))
            if unknown:
                raise CostModelError(f"a pattern for {unknown[0]!r}, which is no node of the network")
            patterns = tuple(patterns.get(name, sp.DensePattern()) for name in graph.names)
        patterns = tuple(patterns) if patterns is not None else tuple(sp.DensePattern() for _ in graph.nodes)
        if len(patterns) != len(graph):
            raise CostModelError(f"{len(patterns)} patterns for {len(graph)} layers")
        net = Network(graph, patterns, precision)
        if any(getattr(p, "histograms", None) is not None or getattr(p, "lengths", None) is not None
               for p in patterns):
            tables(net)  # checks measured statistics against their nodes now, not at the first evaluation
        return net

    @property
    def layers(self) -> tuple:
        return self.graph.layers

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(l.name for l in self.layers)

    def __len__(self) -> int:
        return len(self.layers)


class Folding(NamedTuple):
    """Per-layer folding factors, each shape (L,); ints for the discrete model, floats relaxed."""

    coarse_in: jax.Array
    coarse_out: jax.Array
    coarse_group: jax.Array
    fine: jax.Array

    @staticmethod
    def minimal(net: Network) -> "Folding":
        ones = np.ones(len(net), np.int32)
        return Folding(ones, ones, ones, ones)

    @staticmethod
    def maximal(net: Network) -> "Folding":
        t = tables(net)
        return Folding(*(t[k].astype(np.int32) for k in ("max_ci", "max_co", "max_cg", "max_fine")))

    @staticmethod
    def of(net: Network, **per_layer: dict) -> "Folding":
        """Folding from {factor: {layer name: value}}; unnamed layers get 1."""
        index = {n: i for i, n in enumerate(net.names)}
        arrays = {k: np.ones(len(net), np.int32) for k in Folding._fields}
        for factor, values in per_layer.items():
            if factor not in arrays:
                raise CostModelError(f"unknown folding factor {factor!r}; use {Folding._fields}")
            for name, v in values.items():
                if name not in index:
                    raise CostModelError(f"no layer {name!r} in the network ({', '.join(net.names)})")
                arrays[factor][index[name]] = v
        return Folding(**arrays)


class Density(NamedTuple):
    """Per-layer densities in [0, 1], each shape (L,).

    weight: fraction of weights kept (structured patterns: their work fraction; DPACS: the
      expected fraction of active channels). activation: fraction of non-zero input activations
      (HASS) or, for DPACS, of active spatial positions. Dense layers ignore both.
    """

    weight: jax.Array
    activation: jax.Array

    @staticmethod
    def from_patterns(net: Network) -> "Density":
        w = np.array([getattr(p, "work_fraction", 1.0) if p.work_kind == sp.STRUCTURED else 1.0
                      for p in net.patterns], np.float32)
        return Density(w, np.ones(len(net), np.float32))

    @staticmethod
    def dense(net: Network) -> "Density":
        ones = np.ones(len(net), np.float32)
        return Density(ones, ones)


class MemoryPlan(NamedTuple):
    """Where each engine's weights live, as fpgaConvNet's optimiser decides it
    (fpgaconvnet-optimiser, solvers/greedy_partition.py, allocate_memory): `uram` is 1 where they
    are in URAM instead of BRAM; `streamed` is the fraction of them read from off-chip memory for
    every image, through a buffer one block deep per weight memory, at the cost of bandwidth.
    Each (L,). `evaluate` without a plan pools URAM with BRAM (16 BRAM18 per URAM) and keeps every
    weight on chip."""

    uram: jax.Array
    streamed: jax.Array

    @staticmethod
    def all_bram(net: "Network") -> "MemoryPlan":
        zeros = np.zeros(len(net), np.float32)
        return MemoryPlan(zeros, zeros)


class Cost(NamedTuple):
    """The cost of one network on one device. Per-layer fields have shape (L,)."""

    layer_cycles: jax.Array  # cycles per image of each engine
    interval: jax.Array  # cycles per image of the pipeline (the bottleneck, incl. off-chip I/O)
    throughput: jax.Array  # images per second
    latency: jax.Array  # seconds for one image, pipeline fill included
    layer_dsp: jax.Array
    layer_bram18: jax.Array
    dsp: jax.Array
    bram18: jax.Array
    lut: jax.Array
    ff: jax.Array
    bandwidth_gbps: jax.Array  # off-chip traffic at the modelled throughput
    energy_j: jax.Array  # joules per image
    effective_macs: jax.Array  # expected MACs per image after sparsity
    utilisation: dict  # {'dsp','bram18','lut','ff','bandwidth'}: used / available; 'bram18'
    # is against BRAM18 + 16 x URAM (UltraRAM counted in BRAM18 equivalents)
    layer_lut: jax.Array
    layer_ff: jax.Array
    layer_uram: jax.Array  # URAM blocks of each engine (0 unless a `MemoryPlan` puts weights there)
    uram: jax.Array


@functools.lru_cache(maxsize=256)
def tables(net: Network) -> dict[str, np.ndarray]:
    """Static per-layer quantities as float64 NumPy arrays (computed once per network)."""
    rows = []
    for node in net.graph.nodes:
        layer = node.layer
        r = dict(kind=ELEMENTWISE, c_in=1, c_out=1, groups=1, kh=1, kw=1, ho_wo=1, positions=1, in_words=1,
                 in_pad_words=1, out_words=1, wp=1, w_touched=1, macs=0, params=0, ports=1)
        if isinstance(layer, Conv2D):
            (h, w, c), (ho, wo, f) = layer.in_shape, layer.out_shape
            (pt, pb), (pl, pr) = layer.padding
            (sh, sw), (kh, kw) = layer.stride, layer.kernel
            # fpgaConvNet: the sliding window walks the rows/cols the windows touch,
            # (Ho-1)*S + K, and yields one window per S_h x S_w input positions.
            touched = ((ho - 1) * sh + kh) * ((wo - 1) * sw + kw) / (sh * sw)
            r.update(kind=CONV, c_in=c, c_out=f, groups=layer.groups, kh=kh,
                     kw=kw, ho_wo=ho * wo, positions=max(touched, ho * wo), in_words=h * w * c,
                     # the input stream is read whole, plus the padding the windows touch
                     in_pad_words=max(((ho - 1) * sh + kh) * ((wo - 1) * sw + kw), h * w) * c,
                     out_words=ho * wo * f,
                     wp=w + pl + pr, w_touched=(wo - 1) * sw + kw, macs=layer.macs, params=layer.params)
        elif isinstance(layer, Dense):
            r.update(kind=DENSE_LAYER, c_in=layer.in_features, c_out=layer.out_features,
                     in_words=layer.in_features, in_pad_words=layer.in_features,
                     out_words=layer.out_features, macs=layer.macs, params=layer.params)
        elif isinstance(layer, Pool):
            (h, w, c), (ho, wo, _) = layer.in_shape, layer.out_shape
            (pt, pb), (pl, pr) = layer.padding
            (sh, sw), (kh, kw) = layer.stride, layer.kernel
            r.update(kind=POOL, c_in=c, c_out=c, kh=kh, kw=kw, ho_wo=ho * wo, in_words=h * w * c,
                     # as a conv's: the input read whole plus the padding the windows touch
                     in_pad_words=max(((ho - 1) * sh + kh) * ((wo - 1) * sw + kw), h * w) * c,
                     out_words=ho * wo * c, wp=w + pl + pr, w_touched=(wo - 1) * sw + kw)
        elif isinstance(layer, (GlobalPool, Elementwise, Split, Subsample)):
            # (H, W, C) maps, or (features,) vectors after a dense layer (VGG's classifier ReLUs)
            c, co = layer.in_shape[-1], layer.out_shape[-1]
            in_words, out_words = math.prod(layer.in_shape), math.prod(layer.out_shape)
            # a split writes `outputs` streams, a merge reads one per input: their logic per port
            ports = layer.outputs if isinstance(layer, Split) else len(node.inputs)
            r.update(kind=GLOBAL_POOL if isinstance(layer, GlobalPool) else ELEMENTWISE, c_in=c,
                     c_out=co, in_words=in_words, in_pad_words=in_words, out_words=out_words, ports=ports)
        else:
            raise CostModelError(f"layer {getattr(layer, 'name', layer)!r}: unsupported type {type(layer).__name__}")
        rows.append(r)
    t = {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}
    t["kind"] = t["kind"].astype(np.int32)
    t["k2"] = t["kh"] * t["kw"]
    compute = (t["kind"] == CONV) | (t["kind"] == DENSE_LAYER)
    t["max_ci"] = np.where(t["kind"] == CONV, t["c_in"] / t["groups"], t["c_in"])
    t["max_co"] = np.where(compute, np.where(t["kind"] == CONV, t["c_out"] / t["groups"], t["c_out"]), 1)
    t["max_cg"] = t["groups"]
    t["max_fine"] = np.where(t["kind"] == CONV, t["k2"], 1)
    t["work_kind"] = np.array([p.work_kind if c else sp.DENSE for p, c in zip(net.patterns, compute)], np.int32)
    t["index_bits"] = np.array([p.index_bits_per_value for p in net.patterns], np.float64)
    # CSP stores no indices but one length counter per weight row (its cascade), over the row's
    # kept values: counter_bits / (columns x kept) bits per stored value
    for i, p in enumerate(net.patterns):
        if isinstance(p, sp.CSPPattern) and compute[i]:
            t["index_bits"][i] = p.counter_bits(int(t["max_co"][i])) / (t["max_co"][i] * p.kept)
    t["skip_zero"] = np.array([getattr(p, "skip_zero_windows", True) for p in net.patterns])
    # Index logic: each multiplier of a sparse engine selects its operands through a multiplexer
    # of `mux_inputs` inputs: N:M one activation of the M its kept weight's index names (SAT/BDWP),
    # Kang one of its group's, HASS the next non-zero (activation, weight) pair of its K^2 window
    # (fpgaConvNet's SparseVectorDot), so both operands. Dense, CSP (a row's consecutive weights
    # meet one activation, Hanson et al.) and DPACS (masks gate whole positions and channels) select
    # nothing.
    t["mux_inputs"] = np.array([p.m if isinstance(p, sp.NMPattern) else p.group if isinstance(
        p, sp.BalancedGroupPattern) else k2 if isinstance(p, sp.UnstructuredPattern) else 1
        for p, k2 in zip(net.patterns, t["k2"])], np.float64) * compute
    t["mux_luts_per_bit"] = np.array([mux_luts_per_bit(int(n)) for n in t["mux_inputs"]], np.float64)
    t["mux_both_operands"] = np.array([isinstance(p, sp.UnstructuredPattern) for p in net.patterns])
    t["node"] = np.arange(len(net.patterns))
    gates = [p.gate_macs(int(c_in), int(c_out), int(ho_wo), (int(kh), int(kw))) if kind == CONV and isinstance(
        p, sp.DynamicPattern) else (0.0, 0.0, 1) for p, kind, c_in, c_out, ho_wo, kh, kw in zip(
        net.patterns, t["kind"], t["c_in"], t["c_out"], t["ho_wo"], t["kh"], t["kw"])]
    t["gate_spatial_macs"], t["gate_channel_macs"], t["gate_taps"] = (np.array(g, np.float64) for g in zip(*gates))
    t["histograms"] = _histograms(net, t)
    t["csp_chunks"] = np.array([c_out // p.chunk if isinstance(p, sp.CSPPattern) else 1
                                for p, c_out in zip(net.patterns, t["c_out"].astype(int))], np.float64)
    t["cascades"] = _cascades(net, t)
    # the measured mean fraction of zero products per window (NaN where none is measured)
    t["measured_zeros"] = np.array([np.nan if h is None else 1.0 - (h @ np.arange(h.shape[1])).mean() / (h.shape[1] - 1)
                                    for h in t["histograms"]])
    # Pipeline fill: the fraction of its input a layer must receive before its first output.
    window = np.where((t["kind"] == CONV) | (t["kind"] == POOL),
                      ((t["kh"] - 1) * t["wp"] + t["kw"]) * t["c_in"] / np.maximum(t["in_pad_words"], 1), 0.0)
    t["fill"] = np.where((t["kind"] == DENSE_LAYER) | (t["kind"] == GLOBAL_POOL), 1.0, window)
    graph = net.graph
    # The pipeline fills along its longest path (in a chain: every layer's fill, summed).
    depth = {INPUT: 0.0}
    for i, node in enumerate(graph.nodes):
        depth[node.name] = t["fill"][i] + max(depth[src] for src in node.inputs)
    t["path_fill"] = np.float64(depth[graph.output])
    t["input_words"] = np.float64(math.prod(graph.input_shape))
    # The FIFO on each merge's shorter branch, in words (`Graph.skip_buffers`).
    skip = graph.skip_buffers()
    t["skip_words"] = np.array([skip[n.name][1] if n.name in skip else 0.0 for n in graph.nodes], np.float64)
    return t


def _histograms(net: Network, t: dict) -> np.ndarray:
    """(L,) object array: each node's measured HASS histograms as a (C_in, K^2 + 1) array, or
    None; checked against the node's shape."""
    out = np.empty(len(net.patterns), object)
    for i, pattern in enumerate(net.patterns):
        histograms = getattr(pattern, "histograms", None)
        if histograms is None or t["work_kind"][i] != sp.UNSTRUCTURED:
            continue
        h = np.asarray(histograms, np.float64)
        expected = (int(t["c_in"][i]), int(t["k2"][i]) + 1)
        name = net.graph.names[i]
        if t["kind"][i] != CONV or h.shape != expected:
            raise CostModelError(f"node {name!r}: HASS histograms of shape {h.shape}, expected {expected} "
                                 f"(input channels, K^2 + 1 non-zero counts) for a conv")
        if not (np.isfinite(h).all() and (h >= 0).all() and np.allclose(h.sum(axis=1), 1.0, atol=1e-6)):
            raise CostModelError(f"node {name!r}: every row of its HASS histograms must be a distribution "
                                 f"(non-negative, summing to 1)")
        out[i] = h
    return out


def _cascades(net: Network, t: dict) -> np.ndarray:
    """(L,) object array: each CSP node's measured cascade lengths (`CSPPattern.lengths`) as an
    int array, or None; checked against the node's weight rows and chunks."""
    out = np.empty(len(net.patterns), object)
    for i, pattern in enumerate(net.patterns):
        lengths = getattr(pattern, "lengths", None)
        if lengths is None or not isinstance(pattern, sp.CSPPattern):
            continue
        name, lengths = net.graph.names[i], np.asarray(lengths)
        rows = int(t["k2"][i] * t["c_in"][i]) if t["kind"][i] == CONV else int(t["c_in"][i])
        chunks = int(t["csp_chunks"][i])
        if t["kind"][i] not in (CONV, DENSE_LAYER) or t["groups"][i] != 1 or lengths.shape != (rows,):
            raise CostModelError(f"node {name!r}: CSP cascade lengths of shape {lengths.shape}, expected "
                                 f"({rows},): one per weight row of an ungrouped conv or dense layer")
        if not (np.issubdtype(lengths.dtype, np.integer) and (lengths >= 0).all() and (lengths <= chunks).all()):
            raise CostModelError(f"node {name!r}: CSP cascade lengths must be whole numbers of chunks in "
                                 f"0..{chunks} ({int(t['c_out'][i])} channels in chunks of {pattern.chunk})")
        if abs(lengths.mean() / chunks - pattern.kept) > 1e-6:
            raise CostModelError(f"node {name!r}: CSP kept is {pattern.kept:g} but its cascade lengths keep "
                                 f"{lengths.mean() / chunks:g} of the chunks")
        out[i] = lengths
    return out


def _measured_nodes(t: dict, key: str):
    """(rows, statistic) for each node whose pattern carries a measured `key` of `tables`
    ("histograms", "cascades"); rows: that node's entries of `t` (the DSE gathers many per node)."""
    measured = np.flatnonzero([s is not None for s in t[key]])
    for node in np.unique(t["node"][measured]):
        rows = measured[t["node"][measured] == node]
        yield rows, t[key][rows[0]]


def _concrete_rows(folding, rows, shape):
    """Each of a concrete folding's factors at `rows`, rounded; None when any is traced."""
    concrete = [_concrete(x) for x in folding]
    if any(f is None for f in concrete):
        return None
    return [np.round(np.broadcast_to(f, shape)[rows]) for f in concrete]


def _cascade_factor(t: dict, ci, cg, fine, factor, temperature, xp):
    """`factor` (the fraction of dense cycles) with the rows whose CSP pattern has measured
    cascade lengths replaced by the rows run together's longest cascade: `sp.cascade_work` for a
    concrete folding, `sp.expected_cascade_work` (independent draws) under tracing."""
    for rows, lengths in _measured_nodes(t, "cascades"):
        chunks = int(t["csp_chunks"][rows[0]])
        conv = t["kind"][rows[0]] == CONV
        taps = int(t["k2"][rows[0]]) if conv else 1
        concrete = _concrete_rows((ci, cg, fine), rows, factor.shape)
        if temperature is None and concrete is not None:
            ci_, cg_, fine_ = concrete
            work = sp.cascade_work(lengths, chunks, taps, ci_ * cg_, fine_ if conv else 1)
        else:
            together = xp.asarray(ci)[rows] * (xp.asarray(cg)[rows] * xp.asarray(fine)[rows] if conv else 1.0)
            work = sp.expected_cascade_work(lengths, chunks, together, xp)
        factor = _set_rows(factor, rows, xp.asarray(work, factor.dtype), xp)
    return factor


def _measured_window_cycles(t: dict, ci, cg, fine, window, temperature, xp):
    """`window` with the rows whose pattern has measured histograms replaced: the slowest stream's
    expected cycles (`sp.stream_window_cycles`) for a concrete folding; under tracing (the stream
    count is not known) the channels' mean histogram, sum_j ceil(j / fine) mean_c H[c, j]."""
    for rows, h in _measured_nodes(t, "histograms"):
        concrete = _concrete_rows((ci, cg, fine), rows, window.shape)
        if temperature is None and concrete is not None:
            ci_, cg_, fine_ = concrete
            cycles = sp.stream_window_cycles(h, ci_ * cg_, fine_, bool(t["skip_zero"][rows[0]]))
        else:
            j = np.arange(h.shape[1])
            per_bin = sp.soft_ceil(j / xp.asarray(fine)[rows][..., None], h.shape[1] - 1, temperature, xp)
            if not t["skip_zero"][rows[0]]:
                per_bin = xp.where(j == 0, 1.0, per_bin)
            cycles = (per_bin * h.mean(axis=0)).sum(-1)
        window = _set_rows(window, rows, xp.asarray(cycles, window.dtype), xp)
    return window


def dsp_per_multiplier(p: Precision) -> float:
    # fpgaConvNet (chisel backend): ceil(dw/18) * ceil(ww/27) DSP48 per multiplier, and two
    # multiplications packed per DSP when both operands are <= 8 bits.
    dsp = math.ceil(p.data_bits / 18) * math.ceil(p.weight_bits / 27)
    return dsp * (0.5 if p.data_bits <= 8 and p.weight_bits <= 8 else 1.0)


def _bram18(width, depth, params: ResourceParams, temperature, xp=jnp, configs=None):
    """BRAM18 blocks for a (width bits x depth words) array: the best aspect ratio (UG573);
    arrays of at most `lutram_bits` bits go to LUTRAM (fpgaConvNet's rule). `configs`: another
    RAM's (width, depth) configurations (URAM's)."""
    width, depth = xp.maximum(width, 1e-9), xp.maximum(depth, 1e-9)
    blocks = []
    for w_cfg, d_cfg in configs or params.bram_configs:
        bw, bd = width / w_cfg, depth / d_cfg
        if temperature is None:
            blocks.append(xp.ceil(bw - 1e-9) * xp.ceil(bd - 1e-9))
        else:  # relaxed: the bit-count bound, at least one block per dimension
            blocks.append(xp.maximum(bw, 1.0) * xp.maximum(bd, 1.0))
    best = xp.min(xp.stack(blocks), axis=0)
    return xp.where(width * depth <= params.lutram_bits, 0.0, best)


def mux_luts_per_bit(inputs: int) -> int:
    """LUTs per bit of an `inputs`:1 multiplexer on UltraScale(+) CLBs (Xilinx UG574, CLB
    multiplexers): a LUT6 is a 4:1 multiplexer, and the F7, F8 and F9 multiplexers join 2, 4 or 8
    LUTs into an 8:1, 16:1 or 32:1 one without more LUTs; wider ones join 32:1 blocks the same way."""
    if inputs <= 1:
        return 0
    if inputs <= 32:
        return math.ceil(inputs / 4)
    blocks = math.ceil(inputs / 32)
    return 8 * blocks + mux_luts_per_bit(blocks)


def logic_features(t: dict, ci, co, cg, fine, width, xp=jnp):
    """(F, rows) features of each compute engine's LUT / FF (`LOGIC_FEATURES`). A lane is one
    ci x co x cg dot-product unit (fpgaConvNet's conv, accumulate and glue modules, repeated per
    lane); its filters, positions and channels are what its counters run over. The peer's logic
    also grows linearly in the channels a lane accumulates over (probed on the wheel: about 0.05
    LUT per input channel and output stream, for fc and conv alike), which the log terms alone
    under-extrapolate (VGG-16's fc1, 25,088 inputs, was 29% low). `width`: data bits / 16 (the
    fixture is 16-bit), scaling the stream and window terms."""
    is_conv = t["kind"] == CONV
    lanes = xp.where(is_conv, ci * co * cg, ci * co)
    streams_in = xp.where(is_conv, ci * cg, ci)
    streams_out = xp.where(is_conv, co * cg, co)
    filters = t["c_out"] / streams_out
    channels = t["c_in"] / streams_in
    log2 = lambda x: xp.log2(xp.maximum(x, 1.0))
    return xp.stack([lanes * xp.where(is_conv, fine, 1.0), streams_in * width, streams_out * width, lanes * width,
                     lanes * log2(filters), lanes * log2(t["ho_wo"]), lanes * log2(channels),
                     streams_in * t["k2"] * width, lanes * channels])


def _hls_ram_bram18(width, depth, configs, temperature, xp=jnp):
    """BRAM18 blocks of a RAM as fpgaconvnet-model's hls backend counts them
    (tools/resource_model.py, bram_memory_resource_model): the narrowest configuration at least
    `width` bits wide, ceil(depth / its depth) blocks of it, at least one however small (no
    LUTRAM), the depth truncated to whole words. Wider than the widest configuration: that
    many columns side by side (our extension: the peer accepts at most 36 bits)."""
    width, depth = width + xp.zeros_like(depth), xp.asarray(depth)
    config_depth = xp.select([width <= w for w, _ in configs], [float(d) for _, d in configs], float(configs[-1][1]))
    columns = xp.maximum(xp.ceil(width / configs[-1][0] - 1e-9), 1.0)
    if temperature is None:
        words = xp.floor(depth + 1e-9)
        return columns * xp.ceil(words / config_depth - 1e-9)
    return xp.where(depth > 0, columns * xp.maximum(depth / config_depth, 1.0), 0.0)


def _hls_fifo_bram18(width, depth, configs, temperature, xp=jnp):
    """BRAM18 blocks of a FIFO as fpgaconvnet-model's hls backend counts them
    (tools/resource_model.py, bram_stream_resource_model, after a Xilinx forum post on HLS FIFOs):
    the shallowest configuration at least `depth` deep (the deepest one for deeper FIFOs, as the
    peer does), ceil(width / its width) blocks of it."""
    width, depth = width + xp.zeros_like(depth), xp.asarray(depth)
    by_depth = sorted(configs, key=lambda c: c[1])
    config_width = xp.select([depth <= d for _, d in by_depth], [float(w) for w, _ in by_depth],
                             float(by_depth[-1][0]))
    blocks = xp.ceil(width / config_width - 1e-9) if temperature is None else xp.maximum(width / config_width, 1.0)
    return xp.where(depth > 0, blocks, 0.0)


def _hls_bram18(t: dict, ci, co, cg, banks, weights_per_bank, weight_bits, streams_in, pr: Precision,
                resources: ResourceParams, temperature, xp):
    """Each engine's BRAM18 as fpgaconvnet-model 0.1.4.2's hls backend counts it
    (models/layers/hls/ConvolutionLayer.py and InnerProductLayer.py `resource`, modules/
    SlidingWindow.py and Accum.py `rsc`), with our widths: (weights, everything) per row.
    `banks`: the weight memories, one per multiplier."""
    configs = resources.hls_bram_configs
    kind = t["kind"]
    is_conv, is_dense, is_pool = kind == CONV, kind == DENSE_LAYER, kind == POOL
    compute = is_conv | is_dense
    weights = xp.where(compute & (t["params"] > 0),
                       banks * _hls_ram_bram18(weight_bits, weights_per_bank, configs, temperature, xp), 0.0)
    # the sliding window, one per input stream: K_h - 1 line buffers of a row's words (+1) and
    # K_h (K_w - 1) window buffers of the channels (+1); none for a 1 x 1 conv. The row is the
    # columns the windows touch: the peer drops the right padding that no window reads.
    channels = t["c_in"] / streams_in
    line = (t["kh"] - 1) * _hls_fifo_bram18(pr.data_bits, t["w_touched"] * channels + 1, configs, temperature, xp)
    window = t["kh"] * (t["kw"] - 1) * _hls_fifo_bram18(pr.data_bits, channels + 1, configs, temperature, xp)
    has_window = (is_conv | is_pool) & (t["k2"] > 1)
    sliding = xp.where(has_window, streams_in * (line + window), 0.0)
    # accumulation buffers: a filter's partial sums per output stream, unless each stream sums one channel
    accum_streams = xp.where(is_conv, co * cg, co)
    accum_depth = xp.where(is_conv, t["c_out"] / (co * t["groups"]), t["c_out"] / co)
    accumulates = compute & (xp.where(is_conv, t["c_in"] / (ci * cg), t["c_in"] / ci) > 1 + 1e-9)
    accum = xp.where(accumulates, accum_streams * _hls_ram_bram18(pr.acc_bits, accum_depth, configs, temperature, xp),
                     0.0)
    # the biases, one memory per output stream
    bias = xp.where(compute, co * _hls_ram_bram18(pr.acc_bits, t["c_out"] / co, configs, temperature, xp), 0.0)
    # a merge's skip FIFO (our model; the peer counts none), one memory per lane
    skip = xp.where(t["skip_words"] > 0,
                    ci * _hls_ram_bram18(pr.data_bits, t["skip_words"] / ci, configs, temperature, xp), 0.0)
    return weights, weights + sliding + accum + bias + skip


class LayerCost(NamedTuple):
    """What each engine costs on its own, one entry per row of the tables it was given."""

    cycles: jax.Array  # cycles per image
    dsp: jax.Array
    bram18: jax.Array
    lut: jax.Array
    ff: jax.Array
    macs_factor: jax.Array  # the fraction of the layer's MACs done after sparsity
    # The weight memories apart (included in `bram18`), for placing them elsewhere (`MemoryPlan`):
    weight_bram18: jax.Array  # BRAM18 blocks holding all the weights
    weight_uram: jax.Array  # URAM blocks the same weights would take instead
    weight_row_bram18: jax.Array  # one block deep per weight memory: a streaming buffer in BRAM
    weight_row_uram: jax.Array  # ... in URAM
    weight_bits: jax.Array  # bits of weights (indices included) read per image if all streamed


def _set_rows(base, rows: np.ndarray, values, xp):
    """`base` with `values` at `rows` (functional for jax.numpy, a copy for numpy)."""
    if xp is np:
        out = np.array(base, copy=True)
        out[rows] = values
        return out
    return base.at[rows].set(values)


def layer_costs(t: dict, folding: Folding, d_w, d_a, precision: Precision, *, temperature: float | None = None,
                resources: ResourceParams = ResourceParams(), xp=jnp) -> LayerCost:
    """Every engine's own cycles and resources, which depend only on its own folding and density.

    `t` holds per-row arrays of `tables(net)` (one row per layer, or any gathering of layers: the
    DSE evaluates every valid folding of every layer at once this way), `folding`, `d_w` and `d_a`
    one value per row. `xp`: jax.numpy (traceable, float32), or numpy for concrete inputs with
    `temperature=None` (float64, no JAX dispatch or compilation)."""
    dtype = np.float64 if xp is np else jnp.float32
    ci, co, cg, fine = (xp.asarray(x, dtype) for x in folding)
    d_w, d_a = xp.asarray(d_w, dtype), xp.asarray(d_a, dtype)
    kind, work = t["kind"], t["work_kind"]
    is_conv, is_dense = kind == CONV, kind == DENSE_LAYER
    pr = precision

    # --- cycles per image of each engine (fpgaConvNet's module rates; HASS for sparse windows)
    groups = t["groups"]
    # fpgaConvNet: dot products per stream = positions * (C/g)/ci * (F/g)/co * g/cg, where
    # positions = max(windows the sliding window yields, Ho*Wo) (see `tables`).
    dot_products = t["positions"] * (t["c_in"] / groups) / ci * (t["c_out"] / groups) / co * groups / cg
    # Structured (N:M, Kang, CSP): the reduction shrinks by the density (SAT, Kang, CSP);
    # DPACS: active positions x active channels.
    factor = xp.select([work == sp.STRUCTURED, work == sp.DYNAMIC], [d_w, d_w * d_a], 1.0)
    factor = _cascade_factor(t, ci, cg, fine, factor, temperature, xp)
    window = t["k2"] / fine * factor
    # HASS: E[ceil(nnz / fine)] over a window, nnz ~ Binomial(K^2, d_w * d_a), exact; computed
    # only for the unstructured engines, in one batch per window size (its tables are
    # (K^2 + 1)^2 relaxed: a 7x7 stem must not size every 3x3 layer's).
    for size in np.unique(t["k2"][work == sp.UNSTRUCTURED]):
        rows = np.flatnonzero((work == sp.UNSTRUCTURED) & (t["k2"] == size))
        expected = sp.expected_window_cycles(int(size), xp.clip(d_w[rows] * d_a[rows], 0.0, 1.0), fine[rows],
                                             temperature, t["skip_zero"][rows], xp)
        window = _set_rows(window, rows, expected, xp)
    window = _measured_window_cycles(t, ci, cg, fine, window, temperature, xp)
    # Too few zeros for a sparse engine (`sp.SPARSE_ENGINE_MIN_ZEROS`): fpgaConvNet builds the
    # dense one, and so does a concrete cost. The relaxed model keeps the sparse expectation there
    # (at most 10% below the dense cost) so that its gradient still leads towards sparsity.
    if temperature is None:
        zeros = xp.where(np.isnan(t["measured_zeros"]), 1.0 - xp.clip(d_w * d_a, 0.0, 1.0), t["measured_zeros"])
        dense_engine = (work == sp.UNSTRUCTURED) & (zeros < sp.SPARSE_ENGINE_MIN_ZEROS)
        window = xp.where(dense_engine, xp.ceil(t["k2"] / fine - 1e-9), window)  # every window full
    # DPACS's gating heads (`DynamicPattern.gate_macs`). The spatial gate is an engine of its own
    # beside the layer's, reading the same input streams: a conv with one output channel on
    # ci x cg x min(fine, its taps) multipliers; the pipeline runs at the slower of the two. The
    # channel gate, once per image, is a matrix on the layer's ci x co x cg lanes before its products.
    gate_multipliers = xp.where(t["gate_spatial_macs"] > 0, ci * cg * xp.minimum(fine, t["gate_taps"]), 0.0)
    spatial_gate = t["gate_spatial_macs"] / xp.maximum(gate_multipliers, 1.0)
    conv_compute = xp.maximum(dot_products * window + t["gate_channel_macs"] / (ci * co * cg), spatial_gate)
    dense_compute = t["c_in"] * t["c_out"] * factor / (ci * co)  # fpgaConvNet inner product, fine = 1
    compute = xp.select([is_conv, is_dense], [conv_compute, dense_compute], t["in_pad_words"] / ci)
    # Data-movement bounds: the sliding window reads the padded input, one word per stream per
    # cycle; the output is written one word per stream per cycle (fpgaConvNet).
    streams_in = xp.where(is_conv, ci * cg, ci)
    streams_out = xp.select([is_conv, is_dense], [co * cg, co], ci)
    in_bound = t["in_pad_words"] / streams_in
    out_bound = t["out_words"] / streams_out
    cycles = smooth_max(xp.stack([compute, in_bound, out_bound]), temperature, axis=0, xp=xp)

    # --- resources
    multipliers = xp.select([is_conv, is_dense], [ci * co * cg * fine, ci * co], 0.0)
    # fpgaConvNet (hls): the dot-product multipliers plus one accumulator per output stream.
    accumulators = xp.select([is_conv, is_dense], [co * cg, co], 0.0)
    dsp = (multipliers + gate_multipliers) * dsp_per_multiplier(pr) + accumulators
    stored = xp.where(work == sp.STRUCTURED, d_w, 1.0)  # structured patterns store kept values only
    weight_bits = pr.weight_bits + t["index_bits"]
    banks = xp.maximum(multipliers, 1.0)
    # fpgaConvNet: one weight memory per multiplier, each (weight bits) wide and W / banks deep.
    weight_bram = banks * _bram18(weight_bits, t["params"] * stored / banks, resources, temperature, xp)
    weight_bram = xp.where(t["params"] > 0, weight_bram, 0.0)
    weight_uram = banks * _bram18(weight_bits, t["params"] * stored / banks, resources, temperature, xp,
                                  resources.uram_configs)
    weight_uram = xp.where(t["params"] > 0, weight_uram, 0.0)
    # fpgaConvNet streams a weight memory one block-deep slice at a time through a buffer of one
    # block per memory and per block column (models/layers/utils.py, stream_buffer)
    row_bram = banks * xp.ceil(weight_bits / resources.bram_configs[-1][0] - 1e-9)
    row_uram = banks * xp.ceil(weight_bits / resources.uram_configs[-1][0] - 1e-9)
    if resources.ram == "hls":
        weight_bram, bram = _hls_bram18(t, ci, co, cg, banks, t["params"] * stored / banks, weight_bits,
                                        streams_in, pr, resources, temperature, xp)
    else:
        has_window = ((kind == CONV) | (kind == POOL)) & (t["kh"] > 1)
        line_bram = _bram18((t["kh"] - 1) * streams_in * pr.data_bits,
                            t["c_in"] / streams_in * t["wp"], resources, temperature, xp)
        # A merge's skip FIFO: `skip_words` deep, one stream per coarse lane (our model, see
        # `Graph.skip_buffers`; fpgaConvNet sizes these buffers in its hardware generator).
        skip_bram = _bram18(pr.data_bits * ci, t["skip_words"] / ci, resources, temperature, xp)
        bram = (weight_bram + xp.where(has_window, line_bram, 0.0)
                + xp.where(t["skip_words"] > 0, skip_bram, 0.0))
    has_weights = (t["params"] > 0) & (weight_bram > 0)
    is_compute = is_conv | is_dense
    width = pr.data_bits / 16  # the fit is for 16-bit streams; logic scales with the width

    features = logic_features(t, ci, co, cg, fine, width, xp)

    def logic(coefficients, per_simple, per_pool, per_tap):
        compute_logic = xp.tensordot(xp.asarray(coefficients, dtype), features, axes=1)
        return xp.select([is_compute, kind == POOL],
                         [compute_logic, (per_pool + per_tap * t["k2"]) * streams_in * width],
                         per_simple * streams_in * width * t["ports"])

    r = resources
    # the index logic of sparse engines (`tables`' mux_inputs), which the dense fit cannot see
    mux_bits = pr.data_bits + xp.where(t["mux_both_operands"], pr.weight_bits, 0)
    mux_lut = multipliers * mux_bits * t["mux_luts_per_bit"] * float(resources.index_multiplexers)
    lut = logic(r.lut_coefficients, r.lut_per_simple_stream, r.lut_per_pool_stream, r.lut_per_pool_tap) + mux_lut
    ff = logic(r.ff_coefficients, r.ff_per_simple_stream, r.ff_per_pool_stream, r.ff_per_pool_tap)
    macs_factor = xp.select([work == sp.STRUCTURED, work == sp.UNSTRUCTURED, work == sp.DYNAMIC],
                            [d_w, d_w * d_a, d_w * d_a], 1.0)
    return LayerCost(cycles, dsp, bram, lut, ff, macs_factor, weight_bram, weight_uram,
                     xp.where(has_weights, row_bram, 0.0), xp.where(has_weights, row_uram, 0.0),
                     t["params"] * stored * weight_bits)


def place_weights(bram18, weight_bram18, weight_uram, row_bram18, row_uram, plan: MemoryPlan, xp=jnp):
    """(BRAM18, URAM) of each engine with its weights placed by `plan`: the weight memories'
    blocks leave BRAM; the part not streamed goes to URAM or stays in BRAM, and a streamed engine
    keeps a buffer one block deep per memory there. The other arguments are `LayerCost`'s fields."""
    in_uram, streamed = plan
    buffered = (streamed > 0) * 1.0
    on_bram = xp.ceil((1 - streamed) * weight_bram18 - 1e-6) + buffered * row_bram18
    on_uram = xp.ceil((1 - streamed) * weight_uram - 1e-6) + buffered * row_uram
    return bram18 - weight_bram18 + (1 - in_uram) * on_bram, in_uram * on_uram


def uram_utilisation(uram, device: Device, xp=jnp):
    """URAM used / the device's; a device without URAM cannot hold any (any use is infinitely over)."""
    return uram / device.uram if device.uram else xp.where(uram > 0, np.inf, 0.0)


def io_bits_per_image(net: Network) -> float:
    """Bits per image of the off-chip streams: the network's input in, its output out."""
    t = tables(net)
    return float((t["input_words"] + t["out_words"][-1]) * net.precision.data_bits)


def io_cycles(net: Network, device: Device) -> float:
    """Cycles per image of the off-chip input/output stream at the device's bandwidth."""
    return io_bits_per_image(net) * device.clock_mhz * 1e6 / (device.bandwidth_gbps * 1e9)


def evaluate(net: Network, folding: Folding, density: Density, device: Device, *,
             temperature: float | None = None, resources: ResourceParams = ResourceParams(),
             energy: EnergyParams = EnergyParams(), memory: MemoryPlan | None = None, xp=jnp) -> Cost:
    """The cost of `net` with `folding` and `density` on `device`.

    Args:
      net: static network description.
      folding: per-layer factors, shape (L,) each.
      density: per-layer weight and activation densities in [0, 1], shape (L,) each.
      device: the FPGA; its clock sets cycles -> seconds.
      temperature: None for the discrete model; > 0 for the smooth relaxation.
      memory: where the weights live (`MemoryPlan`); None: all on chip, URAM pooled with BRAM
        as 16 BRAM18 each (utilisation then has no 'uram' entry).
      xp: jax.numpy (default: jit, grad and vmap work), or numpy to evaluate concrete inputs
        with `temperature=None` in float64 without JAX (no compilation: what the DSE uses).
    Returns:
      a `Cost` pytree (see its fields).
    Raises:
      CostModelError naming the layer, for concrete (non-traced) inputs that are out of range.
    """
    check(net, folding, density, discrete=temperature is None)
    if xp is np and temperature is not None:
        raise CostModelError("the NumPy path evaluates the discrete model only (temperature=None)")
    t = tables(net)
    pr = net.precision
    layer = layer_costs(t, folding, density.weight, density.activation, pr, temperature=temperature,
                        resources=resources, xp=xp)

    # --- where the weights live
    layer_bram, layer_uram, io_bits = layer.bram18, xp.zeros_like(layer.bram18), io_bits_per_image(net)
    if memory is not None:
        memory = MemoryPlan(*(xp.asarray(x, layer.cycles.dtype) for x in memory))
        layer_bram, layer_uram = place_weights(layer.bram18, layer.weight_bram18, layer.weight_uram,
                                               layer.weight_row_bram18, layer.weight_row_uram, memory, xp)
        io_bits = io_bits + (memory.streamed * layer.weight_bits).sum()

    # --- pipeline: interval = slowest stage, including the off-chip streams (input, output and
    # streamed weights) at the device's bandwidth
    clock_hz = device.clock_mhz * 1e6
    io = xp.asarray(io_bits * clock_hz / (device.bandwidth_gbps * 1e9), layer.cycles.dtype)
    interval = smooth_max(xp.concatenate([layer.cycles, io[None]]), temperature, xp=xp)
    throughput = clock_hz / interval
    latency = interval * (1.0 + t["path_fill"]) / clock_hz

    # --- off-chip traffic and energy
    bandwidth_gbps = io_bits * throughput / 1e9
    effective_macs = (t["macs"] * layer.macs_factor).sum()
    effective_macs = effective_macs + (t["gate_spatial_macs"] + t["gate_channel_macs"]).sum()  # DPACS gates too
    dynamic_pj = (effective_macs * (energy.pj_per_mac + energy.pj_per_onchip_word)
                  + (t["in_words"] + t["out_words"]).sum() * energy.pj_per_onchip_word
                  + io_bits * energy.pj_per_dram_bit)
    energy_j = dynamic_pj * 1e-12 + energy.static_watts / throughput

    dsp, bram, lut, ff = layer.dsp.sum(), layer_bram.sum(), layer.lut.sum(), layer.ff.sum()
    uram = layer_uram.sum()
    utilisation = {
        "dsp": dsp / device.dsp,
        "lut": lut / device.lut,
        "ff": ff / device.ff,
        "bandwidth": bandwidth_gbps / device.bandwidth_gbps,
    }
    if memory is None:
        # on-chip memory in BRAM18 equivalents: a URAM (288 Kb) holds 16 BRAM18s (18 Kb) of
        # weights (a pooled bound: `MemoryPlan` places weights in one or the other)
        utilisation["bram18"] = bram / (device.bram18 + 16 * device.uram)
    else:
        utilisation["bram18"] = bram / device.bram18
        utilisation["uram"] = uram_utilisation(uram, device, xp)
    return Cost(layer.cycles, interval, throughput, latency, layer.dsp, layer_bram, dsp, bram, lut,
                ff, bandwidth_gbps, energy_j, effective_macs, utilisation, layer.lut, layer.ff, layer_uram, uram)


def _concrete(x) -> np.ndarray | None:
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def check(net: Network, folding: Folding, density: Density, *, discrete: bool = True) -> None:
    """Raises CostModelError naming the layer for out-of-range concrete inputs (traced inputs
    are not checked)."""
    t = tables(net)
    L = len(net)
    for field, values in zip(Density._fields, density):
        v = _concrete(values)
        if v is None:
            continue
        if v.shape != (L,):
            raise CostModelError(f"density.{field} has shape {v.shape}, expected ({L},) for {L} layers")
        bad = np.flatnonzero(~((v >= 0) & (v <= 1)))
        if bad.size:
            i = bad[0]
            raise CostModelError(f"layer {net.names[i]!r}: {field} density {v[i]} is outside [0, 1]")
    limits = {"coarse_in": ("max_ci", "input channels (per group)"),
              "coarse_out": ("max_co", "output channels (per group)"),
              "coarse_group": ("max_cg", "groups"), "fine": ("max_fine", "kernel window (K^2)")}
    for field, values in zip(Folding._fields, folding):
        v = _concrete(values)
        if v is None:
            continue
        if v.shape != (L,):
            raise CostModelError(f"folding.{field} has shape {v.shape}, expected ({L},) for {L} layers")
        limit_key, what = limits[field]
        limit = t[limit_key]
        for i in range(L):
            value = float(v[i])
            if not value >= 1 or value > limit[i] + 1e-6:
                raise CostModelError(f"layer {net.names[i]!r}: {field}={value:g} is outside 1..{limit[i]:g} "
                                     f"(its {what})")
            if not discrete:
                continue
            if value != round(value):
                raise CostModelError(f"layer {net.names[i]!r}: {field}={value:g} is not an integer")
            sparse_fine = field == "fine" and t["work_kind"][i] == sp.UNSTRUCTURED
            if not sparse_fine and round(limit[i]) % round(value):
                raise CostModelError(f"layer {net.names[i]!r}: {field}={value:g} does not divide its "
                                     f"{what} ({limit[i]:g})")
