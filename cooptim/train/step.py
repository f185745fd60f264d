"""The one train step and the eval step.

    step(state, images, labels, step, progress, next_progress, lam, temperature) -> metrics

Loss = cross-entropy + each gated layer's sparsity-target loss (DPACS, from the gate taps)
+ the hardware terms of `objective` (co-optimization), with the integer folding of the state or
its learned folding. The step sets the layers' training progress from its argument (no host
mutation of the model), refreshes the stored masks that are due, updates every parameter with
the state's one optimizer, keeps the gates' activity for the next DSE re-solve, and leaves the
model at `next_progress` (the fraction of training done after it).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import optax
from flax import nnx

from cooptim import nn
from cooptim.data import eval_batches
from cooptim.objective import HardwareObjective, hardware_loss
from cooptim.train.parallel import DataParallel, to_host
from cooptim.train.state import TrainState, Trainable


def task_loss(model, images, labels):
    """(cross-entropy + the gated layers' sparsity-target losses, logits, gate taps)."""
    logits, taps = nn.capture(model, images, nn.GateTap)
    gates = taps[nn.GateTap]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    layers = {layer.layer_name: layer for _, layer in nn.sparse_layers(model)}
    for name, record in gates.items():
        layer = layers[name]
        loss = loss + layer.sparsity.target_loss(record.density, layer.learned_density())
    return loss, logits, gates


def make_step(objective: HardwareObjective | None = None):
    """The jitted train step of a run (with the hardware terms of `objective`, if given). Without
    an objective it is one shared function, so its compilations are reused by every run of the
    process (nnx.jit caches them by the state's structure)."""
    if objective is None:
        return _plain_step()
    # equal objectives (same objective config, network, device and pruned layers) share one step,
    # so a resumed or repeated run reuses the compilations of the one before
    key = (objective.cfg, objective.net, objective.device, objective.pruned.tobytes(), objective.macs.tobytes())
    if key not in _STEPS:
        _STEPS[key] = _make_step(objective)
    return _STEPS[key]


_STEPS: dict = {}


@functools.cache
def _plain_step():
    return _make_step(None)


def _make_step(objective: HardwareObjective | None):

    def loss_fn(net: Trainable, folding, images, labels, lam, temperature):
        task, logits, gates = task_loss(net.model, images, labels)
        terms = {}
        if objective is not None:
            if net.folding is not None:  # learned: the relaxed folding, trained by this loss
                folding = objective.learned_folding(net.folding.theta())
            hardware, terms = hardware_loss(objective, net.model, gates, folding, lam, temperature)
            task = task + hardware
        return task, (logits, terms, nn.gate_stats(gates))

    @nnx.jit
    def step(state: TrainState, images, labels, step, progress, next_progress, lam, temperature):
        model = state.model
        nn.set_progress(model, progress)
        nn.refresh_masks(model, step)
        folding = state.folding.get() if state.folding is not None else None
        (loss, (logits, terms, stats)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
            state.net, folding, images, labels, lam, temperature)
        state.optimizer.update(state.net, grads)
        state.gates.record(stats)
        nn.set_progress(model, next_progress)
        metrics = {"loss": loss, "accuracy": (logits.argmax(-1) == labels).mean()}
        if objective is not None:
            metrics.update(overall_density=terms["overall_density"], modelled_throughput=terms["throughput"])
        return metrics

    return step


@nnx.jit
def eval_step(model, images, labels):
    """Returns (summed loss, number correct) of a batch."""
    logits = model(images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
    return loss, (logits.argmax(-1) == labels).sum()


def evaluate(model, source, batch_size: int, parallel: DataParallel | None = None) -> dict:
    """Accuracy and mean loss over a whole source, with BatchNorm in inference mode. With
    `parallel`, every batch is split over its mesh (replicated where it does not divide)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for images, labels in eval_batches(source, batch_size):
        if parallel is None:
            images, labels = jnp.asarray(images), jnp.asarray(labels)
        elif len(labels) % parallel.size == 0:
            rows = parallel.local_rows(len(labels))
            images, labels = parallel.shard(images[rows], len(labels)), parallel.shard(labels[rows], len(labels))
        else:
            images, labels = parallel.replicated(images), parallel.replicated(labels)
        loss, right = to_host(eval_step(model, images, labels))
        loss_sum += float(loss)
        correct += int(right)
    model.train()
    n = len(source)
    return {"accuracy": correct / n, "loss": loss_sum / n}
