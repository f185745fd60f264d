"""Sparse-aware Flax NNX layers and models, and the helpers that build and inspect them."""

from __future__ import annotations

import dataclasses
import fnmatch

import jax
import jax.numpy as jnp
from flax import nnx

from cost_models import sparsity as cm_sparsity

from cooptim.config import Config, ConfigError, SparsityConfig
from cooptim.nn.blocks import graph_of
from cooptim.nn.gates import GateRecord
from cooptim.nn import histograms as _histograms
from cooptim.nn.layers import SparseConv, SparseDense, SparseLayer, refresh_masks, set_progress
from cooptim.nn.variables import DensityLogit, InputThreshold, LayerSparsity, Progress, StoredMask
from cooptim.nn.taps import ActivationKept, GateTap, LayerInput, capture
from cooptim.nn.models import MODELS, CifarResNet, DigitsCNN, resnet20
from cooptim.sparsity import BalancedGroup, SparsityError, SparsityMethod


class SparsityPlan:
    """Resolves each layer's method from a `SparsityConfig`: the first pattern in
    `layers` that matches the layer name, else `default`. Remembers which config key decided."""

    def __init__(self, cfg: SparsityConfig, pe_in: int | None = None, *, density_scale: float | None = None,
                 input_thresholds: bool = False):
        self.cfg = cfg
        self.pe_in = pe_in
        self.density_scale = density_scale
        self.input_thresholds = input_thresholds
        self.used: set[str] = set()

    def key_for(self, layer: str) -> str:
        for pattern in self.cfg.layers:
            if fnmatch.fnmatchcase(layer, pattern):
                return f"sparsity.layers.{pattern}"
        return "sparsity.default"

    def __call__(self, layer: str) -> LayerSparsity:
        for pattern, method in self.cfg.layers.items():
            if fnmatch.fnmatchcase(layer, pattern):
                self.used.add(pattern)
                return self._spec(method)
        return self._spec(self.cfg.default)

    def _spec(self, method: SparsityMethod) -> LayerSparsity:
        return LayerSparsity(self._resolve(method), self.density_scale, self.input_thresholds)

    def _resolve(self, method: SparsityMethod) -> SparsityMethod:
        # Kang's groups are the engine's input parallelism: taken from the hardware config.
        if isinstance(method, BalancedGroup) and method.group is None and self.pe_in is not None:
            return dataclasses.replace(method, group=self.pe_in)
        return method

    def unused_patterns(self) -> list[str]:
        return [p for p in self.cfg.layers if p not in self.used]


def build_model(cfg: Config, in_shape: tuple[int, int, int], num_classes: int,
                *, source: str = "<config>", abstract: bool = False, input_thresholds: bool = False) -> nnx.Module:
    """Builds the configured model; config problems become one `ConfigError` naming key and file.

    abstract=True builds it with `nnx.eval_shape`: parameter shapes only, nothing allocated (for
    describing large models). input_thresholds=True gives every sparse layer a searchable
    `InputThreshold` (HASS's search).
    """
    scale = cfg.objective.density_lr_scale if cfg.objective.learn_density else None
    plan = SparsityPlan(cfg.sparsity, cfg.hardware.pe_in, density_scale=scale, input_thresholds=input_thresholds)
    current = {"layer": None}

    def sparsity_for(layer: str) -> LayerSparsity:
        current["layer"] = layer
        return plan(layer)

    try:
        sizes = {} if cfg.model.width is None else {"width": cfg.model.width}
        if cfg.model.classifier_width is not None:
            if cfg.model.name != "vgg16":
                raise ConfigError(f"{source}: 'model.classifier_width' applies to vgg16 only, not {cfg.model.name}")
            sizes["hidden"] = cfg.model.classifier_width
        make = lambda: MODELS[cfg.model.name](in_shape, num_classes, sparsity_for, **sizes, rngs=nnx.Rngs(cfg.seed))
        model = nnx.eval_shape(make) if abstract else make()
    except SparsityError as e:
        raise ConfigError(f"{source}: '{plan.key_for(current['layer'])}': {e}") from None
    unused = plan.unused_patterns()
    if unused:
        names = [layer.layer_name for _, layer in sparse_layers(model)]
        raise ConfigError(
            f"{source}: 'sparsity.layers.{unused[0]}' matches no layer of {cfg.model.name}; "
            f"its layers are: {', '.join(names)}"
        )
    return model


def sparse_layers(model: nnx.Module) -> list[tuple[tuple, SparseLayer]]:
    """(graph path, layer) of every sparse layer, in definition order."""
    return [(path, node) for path, node in nnx.iter_graph(model) if isinstance(node, SparseLayer)]


def describe(model: nnx.Module, in_shape: tuple[int, int, int]) -> list:
    """The layers with weights (cost_models descriptions), in execution order: the weighted nodes
    of the model's graph (`graph_of`)."""
    return list(graph_of(model, in_shape).weighted)


def gated_layers(model: nnx.Module) -> list[SparseLayer]:
    """The layers with dynamic (per-input) gates."""
    return [layer for _, layer in sparse_layers(model) if layer.sparsity.gates]


def gate_stats(records: dict[str, GateRecord]) -> dict[str, tuple[jax.Array, jax.Array]]:
    """{layer: (active (position, channel) fraction, active channel fraction)} of gate taps."""
    return {name: (r.density, r.channel.mean()) for name, r in records.items()}


def unstructured_layers(model: nnx.Module) -> list[SparseLayer]:
    """The layers whose method skips zero activations (HASS's unstructured engines)."""
    return [layer for _, layer in sparse_layers(model)
            if layer.current_method().pattern().work_kind == cm_sparsity.UNSTRUCTURED]


@nnx.jit
def _activity(model, images, thresholds):
    """One forward pass: the gates' stats, and per thresholded layer (kept inputs, inputs)."""
    _, taps = capture(model, images, GateTap, LayerInput)
    kept = {name: ((jnp.abs(taps[LayerInput][name][0]) > t).sum(), taps[LayerInput][name][0].size)
            for name, t in thresholds.items()}
    return gate_stats(taps[GateTap]), kept


def measure_activity(model: nnx.Module, batches) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """What a network's input-dependent sparsity does over `batches` (iterable of images
    (B, H, W, C) float32), in one forward pass per batch:

    - gates: {layer: {"density": active (position, channel) fraction, "channel": active channel
      fraction}} of every dynamically gated layer (DPACS);
    - activations: {layer: fraction of its input activations that are non-zero after its
      activation threshold} of every layer whose method skips zero activations (HASS: the ReLU's
      zeros and the thresholded ones).

    Each is empty for a model without such layers."""
    thresholds = {layer.layer_name: float(layer.current_method().activation_threshold)
                  for layer in unstructured_layers(model)}
    if not gated_layers(model) and not thresholds:
        return {}, {}
    gate_sums: dict[str, list[float]] = {}
    kept, total = dict.fromkeys(thresholds, 0.0), dict.fromkeys(thresholds, 0)
    count = 0
    for images in batches:
        n = images.shape[0]
        gates, inputs = _activity(model, jnp.asarray(images), thresholds)
        for name, (density, channel) in gates.items():
            sums = gate_sums.setdefault(name, [0.0, 0.0])
            sums[0] += float(density) * n
            sums[1] += float(channel) * n
        for name, (nonzero, size) in inputs.items():
            kept[name] += float(nonzero)
            total[name] += int(size)
        count += n
    gates = {name: {"density": d / count, "channel": c / count} for name, (d, c) in gate_sums.items()}
    return gates, {name: kept[name] / max(total[name], 1) for name in thresholds}


def measure_window_histograms(model: nnx.Module, batches) -> dict:
    """{layer: (C_in, K^2 + 1) histogram} of the ungrouped convs whose method skips zero
    activations (HASS): per input channel, the distribution of windows by their number of
    non-zero weight x activation products (`cooptim.nn.histograms`). Empty without such layers."""
    convs = [layer for layer in unstructured_layers(model) if isinstance(layer, SparseConv)]
    return _histograms.measure_window_histograms(model, convs, batches) if convs else {}


def measure_gates(model: nnx.Module, batches) -> dict[str, dict[str, float]]:
    """The gates' part of `measure_activity`."""
    return measure_activity(model, batches)[0]


__all__ = [
    "ActivationKept",
    "DensityLogit",
    "GateRecord",
    "GateTap",
    "InputThreshold",
    "LayerInput",
    "LayerSparsity",
    "MODELS",
    "CifarResNet",
    "DigitsCNN",
    "SparseConv",
    "SparseDense",
    "SparseLayer",
    "SparsityPlan",
    "StoredMask",
    "Progress",
    "build_model",
    "capture",
    "describe",
    "gate_stats",
    "gated_layers",
    "graph_of",
    "measure_activity",
    "measure_gates",
    "measure_window_histograms",
    "refresh_masks",
    "resnet20",
    "set_progress",
    "sparse_layers",
]
