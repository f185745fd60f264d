"""From a model and a config to the cost model: the network description, its device, its cost.

The trainer's report calls `hardware_report`: it runs the DSE for the configured device on the
trained (sparse) network and on its dense counterpart, so the speedup is the headline.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import cost_models as cm
from cooptim import nn
from cooptim.config import Config, ConfigError, HardwareConfig
from cooptim.sparsity.csp import cascade_lengths


def device_of(hw: HardwareConfig, source: str = "<config>") -> cm.Device:
    """The configured device (with its clock override); unknown names are a ConfigError."""
    try:
        extra = cm.load_devices(hw.devices_file) if hw.devices_file else None
        return cm.get_device(hw.device, extra).with_clock(hw.clock_mhz)
    except cm.DeviceError as e:
        key = "hardware.devices_file" if "cannot read" in str(e) else "hardware.device"
        raise ConfigError(f"{source}: '{key}': {e}") from None


def network_of(model, graph: cm.Graph, hw: HardwareConfig, *, dense: bool = False,
               histograms: dict | None = None, cascades: bool = False) -> cm.Network:
    """The cost model's network of a cooptim model: its graph (`nn.graph_of`, every node an
    engine) and its sparse layers' patterns (all dense with `dense=True`). `histograms`
    (`nn.measure_window_histograms`) go into the patterns of the HASS layers they were measured on;
    with `cascades`, a CSP layer's pattern carries its mask's cascade lengths now
    (`measured_cascades`): for a trained model, not for a training objective, whose masks move."""
    layers = {layer.layer_name: layer for _, layer in nn.sparse_layers(model)}
    patterns = {} if dense else {n.name: layers[n.name].current_method().pattern()
                                 for n in graph.nodes if n.name in layers}
    if not dense:
        for name, histogram in (histograms or {}).items():
            patterns[name] = dataclasses.replace(patterns[name], histograms=tuple(map(tuple, histogram.tolist())))
        for name, lengths in (_cascade_lengths(model) if cascades else {}).items():
            chunks = layers[name].layout.shape[layers[name].layout.out_axis] // patterns[name].chunk
            patterns[name] = dataclasses.replace(patterns[name], lengths=tuple(lengths.tolist()),
                                                 kept=float(lengths.mean()) / chunks)
    return cm.Network.build(graph, patterns, cm.Precision(hw.data_bits, hw.weight_bits, hw.acc_bits))


def _cascade_lengths(model) -> dict[str, np.ndarray]:
    """{layer: its mask's cascade lengths} of the CSP layers whose lengths the cost model takes:
    the ungrouped ones that keep something (a grouped conv's rows meet only their group's filters)."""
    out = {}
    for _, layer in nn.sparse_layers(model):
        pattern = layer.current_method().pattern()
        if isinstance(pattern, cm.CSPPattern) and getattr(layer, "groups", 1) == 1:
            lengths = cascade_lengths(np.asarray(layer.mask()), layer.layout, pattern.chunk)
            if lengths.any():
                out[layer.layer_name] = lengths
    return out


def measured_cascades(model) -> list[str]:
    """The CSP layers whose cascade lengths the cost model takes from their masks."""
    return list(_cascade_lengths(model))


def design(net: cm.Network, density: cm.Density, hw: HardwareConfig, device: cm.Device) -> cm.dse.DSEResult:
    """The dataflow design of the DSE for `net`: greedy folding within `hardware.resource_budget`
    of the device, weights placed by `hardware.memory`, memories counted by `hardware.ram`."""
    return cm.dse.greedy(net, density, device, memory=hw.memory, limit=hw.resource_budget,
                         resources=resource_params(hw))


def resource_params(hw: HardwareConfig) -> cm.ResourceParams:
    """The cost model's resource constants with `hardware.ram`'s memory model."""
    return cm.ResourceParams(ram=hw.ram)


def memory_plan(net: cm.Network, result: cm.dse.DSEResult) -> dict:
    """{layer: {"ram": "bram" | "uram", "streamed": fraction}} of the layers with weights, or {}
    for a pooled design."""
    if result.memory is None:
        return {}
    uram, streamed = (np.asarray(x) for x in result.memory)
    return {name: {"ram": "uram" if uram[i] else "bram", "streamed": round(float(streamed[i]), 3)}
            for i, name in enumerate(net.names) if getattr(net.layers[i], "params", 0)}


def cost_summary(cost) -> dict:
    """A cost model's `Cost` as plain floats (throughput, latency, energy, resources, per-layer cycles)."""
    util = {k: float(v) for k, v in cost.utilisation.items()} if hasattr(cost, "utilisation") else {}
    return {
        "throughput": float(cost.throughput),
        "latency_s": float(cost.latency),
        "energy_j": float(cost.energy_j),
        "dsp": float(cost.dsp),
        **({"bram18": float(cost.bram18), "uram": float(cost.uram), "lut": float(cost.lut), "ff": float(cost.ff)}
           if hasattr(cost, "bram18") else {}),
        "utilisation": util,
        "layer_cycles": [float(c) for c in np.asarray(cost.layer_cycles)],
        # the dataflow design's per-layer resources; the overlay has one engine for all layers
        **({"layer_dsp": [float(c) for c in np.asarray(cost.layer_dsp)]} if hasattr(cost, "layer_dsp") else {}),
        **({"layer_bram18": [float(c) for c in np.asarray(cost.layer_bram18)]} if hasattr(cost, "layer_bram18") else {}),
    }


def evaluate(net: cm.Network, density: cm.Density, cfg: Config, device: cm.Device) -> dict:
    """The cost of one network: DSE'd dataflow design, or the fixed overlay engine."""
    hw = cfg.hardware
    if hw.accelerator == "overlay":
        cost = cm.overlay.evaluate(net, cm.overlay.Engine(hw.pe_in, hw.pe_out), density, device)
        return {**cost_summary(cost), "folding": None}
    result = design(net, density, hw, device)
    return {**cost_summary(result.cost), "folding": folding_by_layer(net, result.folding),
            "memory": hw.memory, "memory_plan": memory_plan(net, result)}


def folding_by_layer(net: cm.Network, folding: cm.Folding) -> dict:
    """{layer name: {factor: int}} of an integer folding."""
    return {name: {f: int(np.asarray(v)[i]) for f, v in zip(cm.Folding._fields, folding)}
            for i, name in enumerate(net.names)}


def _mask_density(layer) -> float:
    return float(np.asarray(layer.mask()).mean())


def densities_of(model, names, gates: dict | None = None, static=_mask_density,
                 activations: dict | None = None) -> cm.Density:
    """The cost model's densities of a trained model's layers `names`.

    Static patterns: `static(layer)`, by default the measured density of each layer's mask (for
    structured patterns, their exact work fraction). Dynamically gated layers (`gates` = `nn.measure_gates`): weight = the active
    channel fraction (the weights that are loaded), activation = the active (position, channel)
    fraction divided by it, so that their product is the measured work fraction. Layers that skip
    zero activations (HASS, `activations` = `nn.measure_activity`): activation = the measured
    non-zero fraction of their input (1.0 where not given).
    """
    layers = {layer.layer_name: layer for _, layer in nn.sparse_layers(model)}
    gates, activations = gates or {}, activations or {}
    weight, activation = [], []
    for name in names:
        if name not in layers:  # a node without weights (pool, activation, add, split)
            weight.append(1.0)
            activation.append(1.0)
        elif name in gates:
            channel = max(gates[name]["channel"], 1e-6)
            weight.append(channel)
            activation.append(min(gates[name]["density"] / channel, 1.0))
        else:
            weight.append(static(layers[name]))
            activation.append(activations.get(name, 1.0))
    return cm.Density(np.array(weight, np.float32), np.array(activation, np.float32))


def check_dense_design(model, in_shape: tuple, cfg: Config, source: str = "<config>") -> None:
    """Before a run: the dense design that every report compares against must fit the device (a
    dataflow design of a large network on a small board may not), else one ConfigError."""
    if cfg.hardware.accelerator != "dataflow":
        return
    device = device_of(cfg.hardware, source)
    net = network_of(model, nn.graph_of(model, in_shape), cfg.hardware, dense=True)
    try:
        design(net, cm.Density.dense(net), cfg.hardware, device)
    except cm.dse.DeviceFitError as e:
        raise ConfigError(f"{source}: 'hardware.device': {e}; the report's dense design must fit: choose a larger "
                          f"device, another 'hardware.memory' or a larger 'hardware.resource_budget'") from None


def hardware_report(model, graph: cm.Graph, cfg: Config, source: str = "<config>", gates: dict | None = None,
                    activations: dict | None = None, histograms: dict | None = None) -> dict:
    """Cost of the trained network and of its dense counterpart on the configured device.

    `graph`: the model's graph, `nn.graph_of(model, in_shape)`; `gates`: the measured gate activity
    of dynamically gated layers (`nn.measure_gates`); `activations`: the measured activation
    density of layers that skip zero activations (`nn.measure_activity`); `histograms` their
    measured window histograms (`nn.measure_window_histograms`: the cost model then deals their
    channels to the engine's streams and waits for the slowest). `nodes` lists every engine,
    weighted or not.
    """
    device = device_of(cfg.hardware, source)
    sparse_net = network_of(model, graph, cfg.hardware, histograms=histograms, cascades=True)
    dense_net = network_of(model, graph, cfg.hardware, dense=True)
    sparse = evaluate(sparse_net, densities_of(model, sparse_net.names, gates, activations=activations), cfg, device)
    dense = evaluate(dense_net, cm.Density.dense(dense_net), cfg, device)
    bottleneck = int(np.argmax(sparse["layer_cycles"]))
    nodes = [{"name": node.name, "op": cm.graph.op_name(node.layer), "inputs": list(node.inputs),
              "out_shape": list(cm.graph.out_shape(node.layer)), "cycles": sparse["layer_cycles"][i],
              # per-engine resources of a dataflow design; None on the overlay, whose one engine runs every node
              "dsp": sparse.get("layer_dsp", [None] * len(graph))[i],
              "bram18": sparse.get("layer_bram18", [None] * len(graph))[i],
              "folding": (sparse["folding"] or {}).get(node.name)}
             for i, node in enumerate(graph.nodes)]
    skip = graph.skip_buffers()
    return {
        "device": device.name,
        "clock_mhz": device.clock_mhz,
        "accelerator": cfg.hardware.accelerator,
        "sparse": sparse,
        "dense": dense,
        "bottleneck_layer": sparse_net.names[bottleneck],
        "speedup": sparse["throughput"] / dense["throughput"],
        "layer_names": list(sparse_net.names),
        "nodes": nodes,
        "skip_buffers": {merge: {"edge_from": src, "words": words} for merge, (src, words) in skip.items()},
        "measured_histograms": sorted(histograms or {}),
        "measured_cascades": [name for name, pattern in zip(sparse_net.names, sparse_net.patterns)
                              if getattr(pattern, "lengths", None) is not None],
    }
