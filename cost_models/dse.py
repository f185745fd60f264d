"""Discrete design-space exploration: integer folding within the device's resources.

- `greedy`: fpgaConvNet's bottleneck lifting (Venieris & Bouganis, TNNLS 2019, Sec. V): start with
  every engine at its smallest folding; repeatedly take the slowest engine and raise one of its
  factors to the next valid value, choosing the step that speeds that engine up most per DSP
  spent, as long as the whole design fits; stop when the bottleneck cannot be sped up.
- `anneal`: simulated annealing from greedy's design (so never worse than it), moving one factor
  of one layer at a time, for where greedy's one-engine-at-a-time steps get stuck.
- `exhaustive`: every combination of valid factors, for small networks (to test the others).

All three read designs off an `OptionTable`: every valid folding of every layer costed once in
NumPy, so none compiles anything.

Valid factors divide the layer's dimension (`fine` divides K^2, except for HASS's sparse engines,
which take any 1..K^2).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from cost_models import dataflow as df
from cost_models import sparsity as sp
from cost_models.devices import Device
from cost_models.relax import divisors

RESOURCES = ("dsp", "bram18", "lut", "ff")


class DeviceFitError(ValueError):
    """The network (or one of its layers) cannot fit the device even at its smallest folding."""


@dataclasses.dataclass(frozen=True)
class DSEResult:
    folding: df.Folding
    cost: df.Cost
    evaluations: int
    memory: df.MemoryPlan | None = None  # where the weights live (None: pooled, all on chip)


def factor_options(net: df.Network) -> list[dict[str, list[int]]]:
    """Per layer, the valid values of each folding factor."""
    t = df.tables(net)
    out = []
    for i in range(len(net)):
        sparse_fine = t["work_kind"][i] == sp.UNSTRUCTURED
        k2 = int(t["max_fine"][i])
        out.append({
            "coarse_in": divisors(int(t["max_ci"][i])),
            "coarse_out": divisors(int(t["max_co"][i])),
            "coarse_group": divisors(int(t["max_cg"][i])),
            "fine": list(range(1, k2 + 1)) if sparse_fine else divisors(k2),
        })
    return out


@dataclasses.dataclass(frozen=True)
class OptionTable:
    """Every valid folding of every layer and what the layer then costs on its own: the discrete
    model in NumPy (`df.layer_costs`), evaluated once per (network, density, device). An engine's
    cycles and resources depend only on its own folding and density, so the DSE reads designs off
    this table: no JAX dispatch or compilation in its loop.

    Row r belongs to layer `layer[r]`; layer l's rows are `start[l]:start[l+1]`, in the order of
    `itertools.product` over its factor options (`factor_options`), so the row of the options at
    positions (i, j, k, m) is start[l] + ((i * n_co + j) * n_cg + k) * n_fine + m.
    """

    options: tuple  # per layer, the valid values of each factor (`factor_options`)
    sizes: np.ndarray  # (L, 4) the number of options of each factor
    start: np.ndarray  # (L + 1,)
    folding: np.ndarray  # (R, 4) int32 factors of each row
    cycles: np.ndarray  # (R,) the engine's cycles per image
    resources: np.ndarray  # (R, 4) the engine's DSP, BRAM18, LUT, FF (`RESOURCES`)
    capacity: np.ndarray  # (4,) the device's (BRAM18 counts URAM as 16 BRAM18, as `df.evaluate`)
    io_cycles: float  # the off-chip input/output stream's cycles per image
    weights: np.ndarray  # (R, 5) the weight memories: BRAM18, URAM, buffer BRAM18, buffer URAM, bits
    params: df.ResourceParams = df.ResourceParams()  # the resource model it was costed with

    def row(self, layer: int, positions) -> int:
        i, j, k, m = positions
        _, n_co, n_cg, n_fine = self.sizes[layer]
        return int(self.start[layer] + ((i * n_co + j) * n_cg + k) * n_fine + m)


def option_table(net: df.Network, density: df.Density, device: Device,
                 resources: df.ResourceParams = df.ResourceParams()) -> OptionTable:
    """The `OptionTable` of `net` with `density` on `device`, costed with `resources`."""
    options = factor_options(net)
    per_layer = [np.array(list(itertools.product(*(o[f] for f in df.Folding._fields))), np.int32).reshape(-1, 4)
                 for o in options]
    sizes = np.array([[len(o[f]) for f in df.Folding._fields] for o in options], np.int64)
    start = np.concatenate([[0], np.cumsum([len(p) for p in per_layer])])
    layer = np.repeat(np.arange(len(net)), [len(p) for p in per_layer])
    folding = np.concatenate(per_layer)
    t = df.tables(net)
    rows = {k: (v[layer] if np.ndim(v) == 1 else v) for k, v in t.items()}
    weight, activation = (np.asarray(x, np.float64)[layer] for x in density)
    cost = df.layer_costs(rows, df.Folding(*folding.T), weight, activation, net.precision, resources=resources,
                          xp=np)
    used = np.stack([cost.dsp, cost.bram18, cost.lut, cost.ff], axis=1)
    capacity = np.array([device.dsp, device.bram18 + 16 * device.uram, device.lut, device.ff], np.float64)
    weights = np.stack([cost.weight_bram18, cost.weight_uram, cost.weight_row_bram18, cost.weight_row_uram,
                        np.broadcast_to(cost.weight_bits, cost.cycles.shape)], axis=1)
    return OptionTable(tuple(options), sizes, start, folding, cost.cycles, used, capacity,
                       float(df.io_cycles(net, device)), weights, resources)


MEMORY = ("pooled", "on_chip", "streamed")
PLANNED_RESOURCES = ("dsp", "bram18", "uram", "lut", "ff")


def allocate_memory(table: OptionTable, rows: np.ndarray, device: Device, *, limit: float = 1.0,
                    stream: bool = False) -> df.MemoryPlan:
    """Where the weights of the design `rows` live, as fpgaConvNet's optimiser decides it
    (fpgaconvnet-optimiser, solvers/greedy_partition.py, allocate_memory):

    1. Balance BRAM and URAM: the engines with the most weight BRAM move to URAM one by one,
       until BRAM's utilisation would drop below URAM's; that last move is kept only if it
       leaves the two closer.
    2. With `stream`, while BRAM or URAM is over `limit`: stream another tenth of one engine's
       weights from off-chip memory, the engine that frees the most blocks of the RAM that is
       over per bit of bandwidth it adds (its buffer counted against it).
    """
    bram_w, uram_w, row_bram, row_uram, bits = table.weights[rows].T
    in_uram, streamed = np.zeros(len(rows)), np.zeros(len(rows))

    def totals():
        bram, uram = _memory(table, rows, df.MemoryPlan(in_uram, streamed))
        return bram / device.bram18, float(df.uram_utilisation(uram, device, np))

    if device.uram:
        bram_util, uram_util = totals()
        for layer in np.argsort(-bram_w, kind="stable"):
            if bram_w[layer] == 0:
                break
            in_uram[layer] = 1
            new_bram, new_uram = totals()
            if new_bram <= new_uram and bram_util >= uram_util:
                if abs(new_bram - new_uram) >= abs(bram_util - uram_util):
                    in_uram[layer] = 0
                break
            bram_util, uram_util = new_bram, new_uram
    if stream:
        bram_util, uram_util = totals()
        while bram_util > limit or uram_util > limit:
            over_uram = bram_util <= limit
            blocks = np.where(over_uram, uram_w, bram_w)
            buffer = np.where(over_uram, row_uram, row_bram)
            candidates = np.flatnonzero((in_uram == over_uram) & (blocks > 0) & (streamed < 1 - 1e-9))
            if candidates.size == 0:
                break
            freed = 0.1 * blocks[candidates] - np.where(streamed[candidates] > 0, 0.0, buffer[candidates])
            layer = candidates[int(np.argmax(freed / np.maximum(0.1 * bits[candidates], 1e-9)))]
            streamed[layer] = min(1.0, round(streamed[layer] + 0.1, 6))
            bram_util, uram_util = totals()
    return df.MemoryPlan(in_uram, streamed)


def _memory(table: OptionTable, rows: np.ndarray, plan: df.MemoryPlan) -> tuple[float, float]:
    """(BRAM18, URAM) of the design `rows` with its weights placed by `plan` (as `df.evaluate`
    with `memory=plan` counts them)."""
    bram_w, uram_w, row_bram, row_uram, _ = table.weights[rows].T
    bram, uram = df.place_weights(table.resources[rows, 1], bram_w, uram_w, row_bram, row_uram, plan, np)
    return float(bram.sum()), float(uram.sum())


def _planned(table, rows, device, limit, stream):
    """(interval, utilisation of `PLANNED_RESOURCES`, plan) of the design `rows` with its weights
    placed by `allocate_memory`, read off the table (as `df.evaluate` with that plan gives them)."""
    plan = allocate_memory(table, rows, device, limit=limit, stream=stream)
    bram, uram = _memory(table, rows, plan)
    dsp, _, lut, ff = table.resources[rows].sum(axis=0)
    streamed_bits = float((plan.streamed * table.weights[rows, 4]).sum())
    cycles_per_bit = device.clock_mhz * 1e6 / (device.bandwidth_gbps * 1e9)
    interval = max(float(table.cycles[rows].max()), table.io_cycles + streamed_bits * cycles_per_bit)
    util = np.array([dsp / device.dsp, bram / device.bram18, float(df.uram_utilisation(uram, device, np)),
                     lut / device.lut, ff / device.ff])
    return interval, util, plan


def _check_fits_alone(net: df.Network, table: OptionTable, device: Device, limit: float) -> None:
    """Raises DeviceFitError naming the first layer that alone exceeds the device at minimal folding."""
    for i, name in enumerate(net.names):
        util = table.resources[table.start[i]] / table.capacity
        for r, u in zip(RESOURCES, util):
            if u > limit:
                raise DeviceFitError(
                    f"layer {name!r} alone needs {u:.0%} of the {device.name}'s {r.upper()} at its smallest "
                    f"folding (limit {limit:.0%}); it cannot fit this device")


def _unplaceable(net, table, device, limit, util) -> DeviceFitError:
    _check_fits_alone(net, table, device, limit)
    worst = RESOURCES[int(np.argmax(util))]
    return DeviceFitError(f"the network needs {util.max():.0%} of the {device.name}'s {worst.upper()} "
                          f"at its smallest folding (limit {limit:.0%})")


def _next_steps(table: OptionTable, positions: np.ndarray, layer: int) -> list[np.ndarray]:
    """Greedy's candidates: `layer`'s option positions with one factor raised to its next value."""
    steps = []
    for k in range(4):
        if positions[layer, k] + 1 < table.sizes[layer, k]:
            step = positions[layer].copy()
            step[k] += 1
            steps.append(step)
    return steps


def greedy(net: df.Network, density: df.Density, device: Device, *, limit: float = 1.0,
           max_steps: int = 10_000, memory: str = "pooled",
           resources: df.ResourceParams = df.ResourceParams()) -> DSEResult:
    """fpgaConvNet-style greedy folding for the highest throughput within `limit` x resources.

    `memory`: "pooled" keeps every weight on chip and counts a URAM as 16 BRAM18 in one pool;
    "on_chip" checks BRAM and URAM apart, with the weights balanced between them; "streamed" also
    streams weights from off-chip memory where they do not fit, their bandwidth in the interval
    (both as fpgaConvNet's optimiser, `allocate_memory`). The result's `memory` is the plan.
    `resources`: the resource model (`df.ResourceParams`, e.g. its `ram`)."""
    if memory not in MEMORY:
        raise ValueError(f"memory={memory!r}: use one of {', '.join(MEMORY)}")
    table = option_table(net, density, device, resources)
    if memory != "pooled":
        return _greedy_planned(net, density, device, table, limit, max_steps, memory == "streamed")
    rows, _, evaluations = _greedy_rows(net, device, table, limit, max_steps)
    folding = df.Folding(*table.folding[rows].T)
    return DSEResult(folding, df.evaluate(net, folding, density, device, resources=table.params, xp=np), evaluations)


def _greedy_rows(net, device, table, limit, max_steps) -> tuple[np.ndarray, np.ndarray, int]:
    """`greedy` (pooled memory) on `table`: (the design's table rows, their option positions, the
    evaluations made)."""
    positions = np.zeros((len(net), 4), np.int64)  # every factor at its first option, 1
    rows = table.start[:-1].copy()
    cycles = table.cycles[rows]
    util = table.resources[rows].sum(axis=0) / table.capacity
    evaluations = 1
    if (util > limit).any():
        raise _unplaceable(net, table, device, limit, util)
    for _ in range(max_steps):
        bottleneck = int(np.argmax(cycles))
        steps = _next_steps(table, positions, bottleneck)
        if not steps:
            break
        candidates = np.array([table.row(bottleneck, step) for step in steps])
        evaluations += len(candidates)
        others = table.resources[rows].sum(axis=0) - table.resources[rows[bottleneck]]
        c_util = (others + table.resources[candidates]) / table.capacity
        c_cycles = table.cycles[candidates]
        fits = (c_util <= limit).all(axis=1)
        faster = c_cycles < cycles[bottleneck] * (1 - 1e-9)
        ok = np.flatnonzero(fits & faster)
        if ok.size == 0:
            break
        # speed-up of the bottleneck engine per share of the device it costs, counted in the
        # resource the step uses most (so a step that fills the binding resource is expensive)
        gain = np.log(cycles[bottleneck] / c_cycles[ok])
        spent = np.maximum((c_util[ok] - util[None, :]).max(axis=1), 1e-6)
        best = ok[int(np.argmax(gain / spent))]
        positions[bottleneck] = steps[best]
        rows[bottleneck] = candidates[best]
        cycles[bottleneck], util = c_cycles[best], c_util[best]
    return rows, positions, evaluations


def _greedy_planned(net, density, device, table, limit, max_steps, stream) -> DSEResult:
    """`greedy` with the weights placed by `allocate_memory` at every step: a candidate must fit
    every resource type and must not lengthen the interval (streamed weights' bandwidth can)."""
    positions = np.zeros((len(net), 4), np.int64)
    rows = table.start[:-1].copy()
    cycles = table.cycles[rows]
    interval, util, plan = _planned(table, rows, device, limit, stream)
    evaluations = 1
    if (util > limit).any():
        worst = PLANNED_RESOURCES[int(np.argmax(util))]
        raise DeviceFitError(f"the network needs {util.max():.0%} of the {device.name}'s {worst.upper()} at "
                             f"its smallest folding (limit {limit:.0%}) with its weights "
                             f"{'streamed where they do not fit' if stream else 'in BRAM and URAM'}")
    for _ in range(max_steps):
        if interval > cycles.max() * (1 + 1e-9):
            break  # bound by the off-chip streams: no engine's folding makes it faster
        bottleneck = int(np.argmax(cycles))
        steps = _next_steps(table, positions, bottleneck)
        if not steps:
            break
        evaluations += len(steps)
        best, best_score = None, -np.inf
        for step in steps:
            row = table.row(bottleneck, step)
            if not table.cycles[row] < cycles[bottleneck] * (1 - 1e-9):
                continue
            candidate = rows.copy()
            candidate[bottleneck] = row
            c_interval, c_util, c_plan = _planned(table, candidate, device, limit, stream)
            if (c_util > limit).any() or c_interval > interval * (1 + 1e-9):
                continue
            gain = np.log(cycles[bottleneck] / table.cycles[row])
            score = gain / max((c_util - util).max(), 1e-6)
            if score > best_score:
                best, best_score = (step, row, c_interval, c_util, c_plan), score
        if best is None:
            break
        step, row, interval, util, plan = best
        positions[bottleneck], rows[bottleneck] = step, row
        cycles[bottleneck] = table.cycles[row]
    folding = df.Folding(*table.folding[rows].T)
    cost = df.evaluate(net, folding, density, device, resources=table.params, memory=plan, xp=np)
    return DSEResult(folding, cost, evaluations, plan)


def exhaustive(net: df.Network, density: df.Density, device: Device, *, limit: float = 1.0,
               max_points: int = 2_000_000, chunk: int = 65536,
               resources: df.ResourceParams = df.ResourceParams()) -> DSEResult:
    """Every combination of valid factors (for small networks); the highest throughput that fits,
    fewest DSPs among equals (the first in `itertools.product` order among exact ties)."""
    table = option_table(net, density, device, resources)
    counts = np.diff(table.start)
    total = int(np.prod(counts, dtype=np.float64))
    if total > max_points:
        raise ValueError(f"{total:,} design points exceed max_points={max_points:,}; use greedy()")
    best_key, best = None, None
    for first in range(0, total, chunk):
        index = np.arange(first, min(first + chunk, total))
        # design number -> one row per layer, the last layer varying fastest (itertools.product)
        rows = np.stack(np.unravel_index(index, counts), axis=1) + table.start[:-1]  # (B, L)
        interval = np.maximum(table.cycles[rows].max(axis=1), table.io_cycles)
        used = table.resources[rows].sum(axis=1)  # (B, 4)
        fits = (used / table.capacity <= limit).all(axis=1)
        if not fits.any():
            continue
        idx = np.flatnonzero(fits)
        i = idx[np.lexsort((used[idx, 0], interval[idx]))[0]]
        key = (interval[i], used[i, 0])
        if best_key is None or key < best_key:
            best_key, best = key, rows[i]
    if best is None:
        _check_fits_alone(net, table, device, limit)
        raise DeviceFitError(f"no folding of the network fits the {device.name} (limit {limit:.0%})")
    folding = df.Folding(*table.folding[best].T)
    return DSEResult(folding, df.evaluate(net, folding, density, device, resources=table.params, xp=np), total)


def anneal(net: df.Network, density: df.Density, device: Device, *, limit: float = 1.0, steps: int = 20_000,
           chains: int = 4, start_temperature: float = 1.0, end_temperature: float = 1e-3,
           seed: int = 0, resources: df.ResourceParams = df.ResourceParams()) -> DSEResult:
    """Simulated annealing over foldings, from greedy's design (Kirkpatrick et al., Science 1983;
    fpgaConvNet's optimiser offers it beside its greedy solver).

    A move sets one factor of one layer to another of its valid values; a move that does not fit
    `limit` x every resource is rejected. The energy is log(interval) plus a small DSP term (fewer
    DSPs among equal intervals, as `exhaustive`), so a temperature is a relative change in
    throughput; it falls geometrically from `start_temperature` to `end_temperature` over `steps`.
    `chains` independent chains (seeded from `seed`) start from greedy's design; the best design
    any of them saw is returned, so never a worse one than greedy's."""
    table = option_table(net, density, device, resources)
    greedy_rows, first, evaluations = _greedy_rows(net, device, table, limit, 10_000)

    def energy(cycles, used):
        return np.log(max(cycles.max(), table.io_cycles)) + 1e-3 * used[0] / table.capacity[0]

    movable = np.argwhere(table.sizes > 1)  # (layer, factor) pairs with more than one option
    temperatures = np.geomspace(start_temperature, end_temperature, steps)
    best_rows = greedy_rows
    best_energy = energy(table.cycles[best_rows], table.resources[best_rows].sum(axis=0))
    for chain in range(chains if len(movable) else 0):
        rng = np.random.default_rng((seed, chain))
        positions, rows = first.copy(), greedy_rows.copy()
        cycles, used = table.cycles[rows].copy(), table.resources[rows].sum(axis=0)
        current = energy(cycles, used)
        for temperature in temperatures:
            layer, k = movable[rng.integers(len(movable))]
            step = positions[layer].copy()
            step[k] = rng.integers(table.sizes[layer, k] - 1)  # any other value of that factor
            step[k] += step[k] >= positions[layer, k]
            row = table.row(layer, step)
            new_used = used - table.resources[rows[layer]] + table.resources[row]
            if (new_used / table.capacity > limit).any():
                continue
            new_cycles = cycles.copy()
            new_cycles[layer] = table.cycles[row]
            proposal = energy(new_cycles, new_used)
            if proposal <= current or rng.random() < np.exp((current - proposal) / temperature):
                positions[layer], rows[layer], cycles, used, current = step, row, new_cycles, new_used, proposal
                if current < best_energy:
                    best_energy, best_rows = current, rows.copy()
    folding = df.Folding(*table.folding[best_rows].T)
    cost = df.evaluate(net, folding, density, device, resources=table.params, xp=np)
    return DSEResult(folding, cost, evaluations + chains * steps)


@dataclasses.dataclass(frozen=True)
class Partitioned:
    """A network run as partitions, one after the other, the FPGA reconfigured between them."""

    bounds: tuple[tuple[int, int], ...]  # each partition's nodes, start..stop-1 of the network's
    designs: tuple[DSEResult, ...]  # each partition's design (its own DSE)
    batch: int
    seconds_per_batch: float  # every partition over the batch, reconfigurations included

    @property
    def throughput(self) -> float:
        """Images per second."""
        return self.batch / self.seconds_per_batch


def partition(net: df.Network, density: df.Density, device: Device, *, batch: int = 1, limit: float = 1.0,
              memory: str = "pooled", resources: df.ResourceParams = df.ResourceParams()) -> Partitioned:
    """fpgaConvNet's partitioning with reconfiguration (Venieris & Bouganis, TNNLS 2019, Sec. V):
    the network is cut where one tensor crosses (`Graph.cut_points`) into partitions, each
    designed by `greedy` for the whole device, which run one after the other on a batch of
    `batch` images, the FPGA reconfigured before each (`device.reconfiguration_s`; none with a
    single partition). The tensors between partitions go through off-chip memory (each
    partition's own input and output streams). A partition's time for the batch is its first
    image's latency plus (batch - 1) intervals. The cuts are chosen by dynamic programming for the
    least time per batch; a network that fits whole and gains nothing from cuts stays whole."""
    graph = net.graph
    cuts = [0, *graph.cut_points, len(net)]
    clock = device.clock_mhz * 1e6
    weight, activation = (np.asarray(x) for x in density)
    designs = {}

    def seconds(a: int, b: int) -> float:
        if (a, b) not in designs:
            sub = df.Network.build(graph.segment(a, b), net.patterns[a:b], net.precision)
            try:
                designs[a, b] = greedy(sub, df.Density(weight[a:b], activation[a:b]), device, limit=limit,
                                       memory=memory, resources=resources)
            except DeviceFitError:
                designs[a, b] = None
        design = designs[a, b]
        if design is None:
            return np.inf
        return float(design.cost.latency) + (batch - 1) * float(design.cost.interval) / clock

    whole = seconds(0, len(net))
    best = {0: (0.0, None)}  # cut position -> (least seconds to reach it, the cut before it)
    for j in cuts[1:]:
        best[j] = min(((best[i][0] + seconds(i, j) + device.reconfiguration_s, i) for i in cuts if i < j
                       and best[i][0] < np.inf), default=(np.inf, None))
    total, bounds = best[len(net)][0], []
    if whole <= total:
        total, bounds = whole, [(0, len(net))]
    else:
        j = len(net)
        while j:
            bounds.append((best[j][1], j))
            j = best[j][1]
        bounds.reverse()
    if not np.isfinite(total):
        raise DeviceFitError(f"no partitioning of the network fits the {device.name} (limit {limit:.0%})")
    return Partitioned(tuple(bounds), tuple(designs[b] for b in bounds), batch, total)
