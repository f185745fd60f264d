"""The co-optimization objective: the task loss plus the hardware cost of the current densities.

    loss = task + lambda(t) * cost + resource_weight * sum_r max(0, utilisation_r - 1)^2
                + density_weight * (overall density - density_target)^2

`cost` is -log throughput, log latency or log energy per image of the network under the relaxed
dataflow cost model (`cost_models.dataflow.evaluate` with a temperature: the pipeline's bottleneck
is a log-space smooth max, so its gradient reaches every layer near the bottleneck, weighted by how
close it is). The folding is integer and held fixed between re-solves by the greedy DSE (every
`dse_every` steps, or once), as fpgaConvNet's optimiser does between its moves; the densities are
what the gradient moves: the learned per-layer density variables (`objective.learn_density`) and
the dynamic gates' densities.

The overall density is MAC-weighted over the pruned layers (the layers whose method is not
`dense`), so a target of 0.5 means half of those layers' multiply-accumulates are kept.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

import cost_models as cm
from cooptim import nn
from cooptim.config import Config, HardwareConfig, ObjectiveConfig
from cooptim.hardware import densities_of, design, device_of, network_of, resource_params


def lambda_at(cfg: ObjectiveConfig, progress: float) -> float:
    """The cost weight at a fraction of training: 0 before `warmup_start`, `weight` after
    `warmup_end`, linear in between."""
    if cfg.warmup_end <= cfg.warmup_start:
        return cfg.weight if progress >= cfg.warmup_start else 0.0
    ramp = (progress - cfg.warmup_start) / (cfg.warmup_end - cfg.warmup_start)
    return cfg.weight * min(max(ramp, 0.0), 1.0)


def temperature_at(cfg: ObjectiveConfig, progress: float) -> float:
    """The relaxation temperature: geometric from `temperature_start` to `temperature_end`."""
    p = min(max(progress, 0.0), 1.0)
    return math.exp((1 - p) * math.log(cfg.temperature_start) + p * math.log(cfg.temperature_end))


@dataclasses.dataclass(frozen=True)
class HardwareObjective:
    """The hardware terms of one model on one device. Build with `HardwareObjective.of`. Holds no
    training state: the current integer folding and the learned one live in the `TrainState`.

    net: the cost model's network, every node of the model's graph (order = `names`); macs: (L,)
    MACs per node; pruned: (L,) bool, the layers whose method is not dense.
    """

    cfg: ObjectiveConfig
    net: cm.Network
    device: cm.Device
    hardware: HardwareConfig
    names: tuple[str, ...]
    macs: np.ndarray
    pruned: np.ndarray

    @classmethod
    def of(cls, cfg: Config, model, in_shape, source: str = "<config>") -> "HardwareObjective":
        if cfg.hardware.accelerator != "dataflow":
            raise ValueError(f"{source}: 'objective.weight' > 0 needs hardware.accelerator: dataflow "
                             f"(the overlay has no folding to co-optimize)")
        net = network_of(model, nn.graph_of(model, in_shape), cfg.hardware)
        layers = {layer.layer_name: layer for _, layer in nn.sparse_layers(model)}
        pruned = np.array([n in layers and layers[n].sparsity.method != "dense" for n in net.names])
        if not pruned.any():
            raise ValueError(f"{source}: 'objective': no layer is pruned, so there is nothing for the "
                             f"hardware cost to move")
        macs = np.array([layer.macs for layer in net.layers], np.float64)
        return cls(cfg.objective, net, device_of(cfg.hardware, source), cfg.hardware, tuple(net.names), macs, pruned)

    # ---------------------------------------------------------------- densities of a model

    def densities(self, model, gates) -> cm.Density:
        """Traced (L,) densities of `model` for the cost model: each layer's `density()` (its
        learned variable or its method's own), and for dynamically gated layers the gates' density
        from this batch (`gates`: {layer: `nn.GateRecord`}, the gate taps), split as channel x rest."""
        layers = {layer.layer_name: layer for _, layer in nn.sparse_layers(model)}
        by_gate = gates
        weight, activation = [], []
        for name in self.names:
            if name not in layers:  # a node without weights
                weight.append(jnp.float32(1.0))
                activation.append(jnp.float32(1.0))
            elif name in by_gate:
                channel = by_gate[name].channel.mean()
                weight.append(channel)
                activation.append(by_gate[name].density / jnp.maximum(channel, 1e-6))
            else:
                weight.append(jnp.asarray(layers[name].density(), jnp.float32))
                activation.append(jnp.float32(1.0))
        return cm.Density(jnp.stack(weight), jnp.stack(activation))

    def overall_density(self, density: cm.Density) -> jax.Array:
        """MAC-weighted density of the pruned layers."""
        work = density.weight * density.activation
        macs = jnp.asarray(np.where(self.pruned, self.macs, 0.0), jnp.float32)
        return (work * macs).sum() / macs.sum()

    # ---------------------------------------------------------------- the loss terms

    def terms(self, density: cm.Density, folding: cm.Folding, lam, temperature) -> dict:
        """The hardware terms of the loss at `density` with integer `folding` (scalars)."""
        cost = cm.dataflow.evaluate(self.net, folding, density, self.device, temperature=temperature,
                                    resources=resource_params(self.hardware))
        kind = self.cfg.cost
        objective = {"throughput": -jnp.log(cost.throughput), "latency": jnp.log(cost.latency),
                     "energy": jnp.log(cost.energy_j)}[kind]
        over = jnp.stack([jnp.maximum(v - 1.0, 0.0) for v in cost.utilisation.values()])
        resource = self.cfg.resource_weight * (over ** 2).sum()
        overall = self.overall_density(density)
        target = 0.0
        if self.cfg.density_target is not None:
            target = self.cfg.density_weight * (overall - self.cfg.density_target) ** 2
        return {"loss": lam * objective + resource + target, "cost": objective,
                "throughput": cost.throughput, "overall_density": overall}

    # ---------------------------------------------------------------- integer folding

    def concrete_densities(self, model, gate_stats: dict | None = None) -> cm.Density:
        """Concrete densities for the DSE: each layer's `density()` (its learned variable or its
        method's own) and the gates' measured activity (`gate_stats` as `nn.measure_gates` gives)."""
        return densities_of(model, self.names, gate_stats, static=lambda layer: float(layer.density()))

    def solve_folding(self, model, gate_stats: dict | None = None) -> cm.Folding:
        """The integer folding of the greedy DSE for the model's current densities."""
        return design(self.net, self.concrete_densities(model, gate_stats), self.hardware, self.device).folding

    def due(self, step: int) -> bool:
        """Whether the folding is re-solved before `step` (the first solve is at step 0, when
        the training state is made)."""
        return self.cfg.folding == "dse" and step > 0 and step % self.cfg.dse_every == 0

    # ---------------------------------------------------------------- learned (relaxed) folding

    def learned_folding(self, theta: cm.Folding) -> cm.Folding:
        """Continuous folding exp(theta), each factor clipped to [1, its maximum for the layer]."""
        upper = cm.Folding.maximal(self.net)
        return cm.Folding(*(cm.relax.folding_from_log(t, 1.0, jnp.asarray(u, jnp.float32))
                            for t, u in zip(theta, upper)))


def hardware_loss(objective: HardwareObjective, model, gates, folding, lam, temperature) -> tuple:
    """(loss, metrics) of the hardware terms for the model's current densities."""
    terms = objective.terms(objective.densities(model, gates), folding, lam, temperature)
    return terms["loss"], terms
