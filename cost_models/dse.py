"""Discrete design-space exploration: integer folding within the device's resources.

- `greedy`: fpgaConvNet's bottleneck lifting (Venieris & Bouganis, TNNLS 2019, Sec. V): start with
  every engine at its smallest folding; repeatedly take the slowest engine and raise one of its
  factors to the next valid value, choosing the step that speeds that engine up most per DSP
  spent, as long as the whole design fits; stop when the bottleneck cannot be sped up.
- `exhaustive`: every combination of valid factors, for small networks (to test `greedy`).

Valid factors divide the layer's dimension (`fine` divides K^2, except for HASS's sparse engines,
which take any 1..K^2).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
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


@functools.lru_cache(maxsize=32)
def _batched_cost(net: df.Network, device: Device):
    """A jitted function: (folding with a leading batch axis, density) -> (interval, layer cycles,
    utilisation of each resource), evaluated for every folding in the batch."""

    def one(folding, density):
        cost = df.evaluate(net, folding, density, device)
        util = jnp.stack([cost.utilisation[r] for r in RESOURCES])
        return cost.interval, cost.layer_cycles, util, cost.layer_dsp

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


@functools.lru_cache(maxsize=32)
def _final_cost(net: df.Network, device: Device):
    """The jitted discrete `df.evaluate` of one folding (compiled once, not run op by op)."""
    return jax.jit(lambda folding, density: df.evaluate(net, folding, density, device))


# Greedy's candidates (one step of each factor of the bottleneck) go in batches of this fixed size,
# padded with copies, so that the batched cost compiles once per network instead of once per size.
GREEDY_BATCH = len(df.Folding._fields)


def _stack(foldings: list[np.ndarray], size: int | None = None) -> df.Folding:
    if size is not None:
        foldings = foldings + [foldings[0]] * (size - len(foldings))
    arr = np.stack(foldings)  # (B, 4, L)
    return df.Folding(*(arr[:, k] for k in range(4)))


def _check_fits_alone(net, density, device, limit):
    """Raises DeviceFitError naming the first layer that alone exceeds the device at minimal folding."""
    minimal = np.ones((4, len(net)), np.int32)
    for i, name in enumerate(net.names):
        sub = df.Network.build([net.layers[i]], [net.patterns[i]], net.precision)
        sub_d = df.Density(np.asarray(density.weight)[i:i + 1], np.asarray(density.activation)[i:i + 1])
        cost = df.evaluate(sub, df.Folding(*minimal[:, i:i + 1]), sub_d, device)
        for r in RESOURCES:
            if float(cost.utilisation[r]) > limit:
                raise DeviceFitError(
                    f"layer {name!r} alone needs {float(cost.utilisation[r]):.0%} of the {device.name}'s "
                    f"{r.upper()} at its smallest folding (limit {limit:.0%}); it cannot fit this device")


def greedy(net: df.Network, density: df.Density, device: Device, *, limit: float = 1.0,
           max_steps: int = 10_000) -> DSEResult:
    """fpgaConvNet-style greedy folding for the highest throughput within `limit` x resources."""
    options = factor_options(net)
    cost_fn = _batched_cost(net, device)
    current = np.ones((4, len(net)), np.int32)
    _, cycles, util, _ = (np.asarray(x)[0] for x in cost_fn(_stack([current], GREEDY_BATCH), density))
    evaluations = 1
    if (util > limit).any():
        _check_fits_alone(net, density, device, limit)
        worst = RESOURCES[int(np.argmax(util))]
        raise DeviceFitError(f"the network needs {util.max():.0%} of the {device.name}'s {worst.upper()} "
                             f"at its smallest folding (limit {limit:.0%})")
    for _ in range(max_steps):
        bottleneck = int(np.argmax(cycles))
        candidates = []
        for k, factor in enumerate(df.Folding._fields):
            values = options[bottleneck][factor]
            position = values.index(int(current[k, bottleneck]))
            if position + 1 < len(values):
                step = current.copy()
                step[k, bottleneck] = values[position + 1]
                candidates.append(step)
        if not candidates:
            break
        _, c_cycles, c_util, _ = (np.asarray(x)[:len(candidates)]
                                  for x in cost_fn(_stack(candidates, GREEDY_BATCH), density))
        evaluations += len(candidates)
        fits = (c_util <= limit).all(axis=1)
        faster = c_cycles[:, bottleneck] < cycles[bottleneck] * (1 - 1e-9)
        ok = np.flatnonzero(fits & faster)
        if ok.size == 0:
            break
        # speed-up of the bottleneck engine per share of the device it costs, counted in the
        # resource the step uses most (so a step that fills the binding resource is expensive)
        gain = np.log(cycles[bottleneck] / c_cycles[ok, bottleneck])
        spent = np.maximum((c_util[ok] - util[None, :]).max(axis=1), 1e-6)
        best = ok[int(np.argmax(gain / spent))]
        current = candidates[best]
        cycles, util = c_cycles[best], c_util[best]
    folding = df.Folding(*(current[k] for k in range(4)))
    return DSEResult(folding, _final_cost(net, device)(folding, density), evaluations)


def exhaustive(net: df.Network, density: df.Density, device: Device, *, limit: float = 1.0,
               max_points: int = 2_000_000, chunk: int = 4096) -> DSEResult:
    """Every combination of valid factors (for small networks); the highest throughput that fits,
    fewest DSPs among equals."""
    options = factor_options(net)
    per_layer = [list(itertools.product(*(o[f] for f in df.Folding._fields))) for o in options]
    total = int(np.prod([len(p) for p in per_layer], dtype=np.float64))
    if total > max_points:
        raise ValueError(f"{total:,} design points exceed max_points={max_points:,}; use greedy()")
    cost_fn = _batched_cost(net, device)
    best_key, best = None, None
    points = itertools.product(*per_layer)
    while True:
        batch = list(itertools.islice(points, chunk))
        if not batch:
            break
        arr = np.array(batch, np.int32).transpose(0, 2, 1)  # (B, 4, L)
        interval, _, util, layer_dsp = (np.asarray(x) for x in cost_fn(_stack(list(arr)), density))
        fits = (util <= limit).all(axis=1)
        if not fits.any():
            continue
        dsp = layer_dsp.sum(axis=1)
        idx = np.flatnonzero(fits)
        i = idx[np.lexsort((dsp[idx], interval[idx]))[0]]
        key = (interval[i], dsp[i])
        if best_key is None or key < best_key:
            best_key, best = key, arr[i]
    if best is None:
        _check_fits_alone(net, density, device, limit)
        raise DeviceFitError(f"no folding of the network fits the {device.name} (limit {limit:.0%})")
    folding = df.Folding(*(best[k] for k in range(4)))
    return DSEResult(folding, _final_cost(net, device)(folding, density), total)
