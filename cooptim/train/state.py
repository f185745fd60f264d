"""One training state: everything a run needs to continue, in one NNX object, one checkpoint.

`TrainState` holds
  net          the trainable parameters: the model and, with `objective.folding: learned`, the
               relaxed folding (log factors, `LearnedFolding`)
  optimizer    ONE optax optimizer over every parameter of `net`: the model's transformation, and
               Adam with `objective.folding_lr` on the learned folding (its own partition)
  folding      the current integer folding of the DSE (co-optimization), or None
  gates        the dynamic gates' activity on the last batch, which the next DSE re-solve reads
  optimizer.step  completed steps
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import cost_models as cm
from cooptim.config import Config, OptimizerConfig
from cooptim.train.parallel import to_host


class FoldingFactor(nnx.Variable):
    """One factor (coarse_in, coarse_out or fine) of the integer folding, (L,) int32. Not trained."""


class GateActivity(nnx.Variable):
    """The gates' (density, channel fraction) per gated layer on the last batch. Not trained."""


class LearnedFolding(nnx.Module):
    """The relaxed folding as trainable log factors (`objective.folding: learned`), one
    (L,) float32 `nnx.Param` per factor of `cm.Folding`."""

    def __init__(self, start: cm.Folding):
        for name, value in zip(cm.Folding._fields, cm.relax.log_of_folding(start)):
            setattr(self, name, nnx.Param(jnp.asarray(value, jnp.float32)))

    def theta(self) -> cm.Folding:
        return cm.Folding(*(getattr(self, name)[...] for name in cm.Folding._fields))


class IntegerFolding(nnx.Module):
    """The DSE's integer folding, one (L,) int32 `FoldingFactor` per factor of `cm.Folding`."""

    def __init__(self, folding: cm.Folding):
        for name, value in zip(cm.Folding._fields, folding):
            setattr(self, name, FoldingFactor(jnp.asarray(value, jnp.int32)))

    def get(self) -> cm.Folding:
        return cm.Folding(*(getattr(self, name)[...] for name in cm.Folding._fields))

    def set(self, folding: cm.Folding) -> None:
        for name, value in zip(cm.Folding._fields, folding):
            getattr(self, name)[...] = jnp.asarray(value, jnp.int32)


class GateStats(nnx.Module):
    """(density, channel) per gated layer in `names` order, and whether a batch was measured yet."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        if names:
            self.values = GateActivity(jnp.zeros((len(names), 2), jnp.float32))
            self.measured = GateActivity(jnp.zeros((), jnp.bool_))
        else:  # orbax saves no empty arrays
            self.values = self.measured = None

    def record(self, stats: dict) -> None:
        """Keeps a batch's `nn.gate_stats` (inside the step: traced)."""
        if self.names:
            self.values[...] = jnp.stack([jnp.stack(stats[n]) for n in self.names]).astype(jnp.float32)
            self.measured[...] = jnp.ones((), jnp.bool_)

    def as_dict(self) -> dict | None:
        """{layer: {"density", "channel"}} as `nn.measure_gates` gives, or None before any batch."""
        if not self.names or not bool(to_host(self.measured[...])):
            return None
        values = to_host(self.values[...])
        return {n: {"density": float(d), "channel": float(c)} for n, (d, c) in zip(self.names, values)}


class Trainable(nnx.Module):
    def __init__(self, model: nnx.Module, folding: LearnedFolding | None):
        self.model = model
        self.folding = folding


class TrainState(nnx.Module):
    def __init__(self, model: nnx.Module, tx: optax.GradientTransformation, *, folding: cm.Folding | None = None,
                 learn_folding: bool = False, gated: tuple[str, ...] = ()):
        self.net = Trainable(model, LearnedFolding(folding) if learn_folding else None)
        self.optimizer = nnx.Optimizer(self.net, tx, wrt=nnx.Param)
        self.folding = IntegerFolding(folding) if folding is not None else None
        self.gates = GateStats(tuple(gated))

    @property
    def model(self) -> nnx.Module:
        return self.net.model

    @property
    def step(self) -> int:
        return int(to_host(self.optimizer.step[...]))


def _is_kernel(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def model_transformation(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation of the model's parameters; weight decay applies to weights with ndim > 1."""
    if cfg.schedule == "constant":
        lr = optax.constant_schedule(cfg.learning_rate)
    elif cfg.schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, total_steps)
    else:
        lr = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, cfg.warmup_steps, total_steps)
    if cfg.name == "adamw":
        return optax.adamw(lr, weight_decay=cfg.weight_decay, mask=_is_kernel)
    base = optax.sgd(lr, momentum=cfg.momentum, nesterov=cfg.nesterov) if cfg.name == "sgd" else optax.adam(lr)
    if cfg.weight_decay:
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=_is_kernel), base)
    return base


def _partition(params):
    """'folding' for the learned folding's parameters, 'model' for the rest."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "folding" if getattr(path[0], "key", None) == "folding" else "model", params)


def transformation(cfg: Config, total_steps: int) -> optax.GradientTransformation:
    """The one optimizer of a run: the model's transformation, and with a learned folding, Adam at
    `objective.folding_lr` on it (its own partition)."""
    model_tx = model_transformation(cfg.optimizer, total_steps)
    if cfg.objective.folding != "learned":
        return model_tx
    return optax.multi_transform({"model": model_tx, "folding": optax.adam(cfg.objective.folding_lr)}, _partition)
