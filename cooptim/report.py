"""The report of a trained run as a plain dict (report.json); printing it is the CLI's job."""

from __future__ import annotations

import numpy as np
from flax import nnx

from cooptim import data as data_lib
from cooptim import nn
from cooptim.config import Config
from cooptim.hardware import hardware_report


@nnx.jit
def _mask_and_weight(layer) -> tuple:
    """A sparse layer's keep-mask and effective weight, one compiled program per layer (eagerly,
    a method's mask is dozens of small operations, each compiled on its own)."""
    return layer.mask(), layer.effective_kernel()


def layer_report(model, descriptions, gates: dict | None = None, activations: dict | None = None) -> list[dict]:
    """Per sparse layer (`descriptions`: the weighted nodes of the model's graph): shapes, method, pattern,
    density (the fraction of its MACs done), MACs and the pattern check. `gates`
    (`nn.measure_gates`) gives the measured density of dynamically gated layers (their weights are
    dense; their work depends on the input); `activations` (`nn.measure_activity`) the measured
    activation density of layers that skip zero activations (HASS: density = weight x activation)."""
    rows = []
    gates, activations = gates or {}, activations or {}
    layers = {layer.layer_name: layer for _, layer in nn.sparse_layers(model)}
    for desc in descriptions:
        layer = layers[desc.name]
        mask, weight = (np.asarray(a) for a in _mask_and_weight(layer))
        density = gates[desc.name]["density"] if desc.name in gates else float(mask.mean())
        activation = activations.get(desc.name)
        if activation is not None:
            density *= activation
        method = layer.current_method()  # with its learned density, under co-optimization
        check = method.check(mask, layer.layout)
        rows.append({
            "name": desc.name,
            "type": type(desc).__name__,
            "weight_shape": list(desc.weight_shape),
            "method": layer.sparsity.method,
            "pattern": method.pattern().describe(),
            "density": density,
            "weight_density": float(mask.mean()),
            **({"activation_density": activation} if activation is not None else {}),
            "params": desc.params,
            "nonzero_params": int(np.count_nonzero(weight)),
            "macs": desc.macs,
            "effective_macs": desc.macs * density,
            "pattern_ok": check.ok,
            "pattern_check": check.detail,
        })
    return rows


def masks_of(model) -> dict[str, np.ndarray]:
    return {layer.layer_name: np.asarray(_mask_and_weight(layer)[0], np.uint8) for _, layer in nn.sparse_layers(model)}


def build_report(cfg: Config, model, dataset: data_lib.Dataset, steps: int, test: dict,
                 source: str = "<config>") -> dict:
    model.eval()  # measured as deployed: BatchNorm on its running statistics, nothing updated
    graph = nn.graph_of(model, dataset.image_shape)  # built once, used by both reports
    gates, activations = nn.measure_activity(model, (images for images, _ in
                                                     data_lib.eval_batches(dataset.test, cfg.data.eval_batch_size)))
    histograms = nn.measure_window_histograms(model, (images for images, _ in
                                                      data_lib.eval_batches(dataset.test, cfg.data.eval_batch_size)))
    layers = layer_report(model, graph.weighted, gates, activations)
    hardware = hardware_report(model, graph, cfg, source, gates, activations, histograms)
    cycles = dict(zip(hardware["layer_names"], hardware["sparse"]["layer_cycles"]))
    for row in layers:
        row["cycles"] = cycles[row["name"]]
    macs = sum(r["macs"] for r in layers)
    effective = sum(r["effective_macs"] for r in layers)
    params = sum(r["params"] for r in layers)
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "data": cfg.data.name,
        "model": cfg.model.name,
        "steps": steps,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "params": params,
        "nonzero_params": sum(r["nonzero_params"] for r in layers),
        "weight_density": sum(r["weight_density"] * r["params"] for r in layers) / params,
        "macs": macs,
        "effective_macs": effective,
        "mac_speedup": macs / effective,
        "pattern_ok": all(r["pattern_ok"] for r in layers),
        "hardware": hardware,
        "layers": layers,
    }
