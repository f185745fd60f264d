"""Compare the dataflow model with fpgaConvNet's own predictions (see benchmarks/peer_fpgaconvnet.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from cost_models import dataflow, devices, networks
from cost_models.layers import Conv2D, Dense, Pool


def layer_from_record(spec: dict):
    """A layer description from a peer-fixture record, with fpgaConvNet's padding convention."""
    if spec["type"] == "dense":
        return Dense(spec["name"], spec["in_features"], spec["out_features"])
    k, s, p = spec["kernel"], spec["stride"], spec["padding"]
    if spec["type"] == "pool":
        return Pool(spec["name"], tuple(spec["in_shape"]), (k, k), (s, s), ((p, p), (p, p)))
    return Conv2D(spec["name"], tuple(spec["in_shape"]), spec["out_channels"], (k, k), (s, s),
                  ((p, p), (p, p)), spec["groups"])


def fixture_network(fixture: str | Path) -> tuple[list[dict], dataflow.Network, dataflow.Folding]:
    """The fixture's records, and all of them as one network (every record one engine) with their
    foldings, at the fixture's widths (16-bit data, weights, accumulators and biases: the peer's
    defaults). A layer's cycles and resources do not depend on the others', so one evaluation
    reads them all."""
    records = json.loads(Path(fixture).read_text())["records"]
    layers = [dataclasses.replace(layer_from_record(rec["layer"]), name=f"{i}:{rec['layer']['name']}")
              for i, rec in enumerate(records)]
    net = dataflow.Network.build(layers, None, dataflow.Precision(data_bits=16, weight_bits=16, acc_bits=16))
    folding = dataflow.Folding(*(np.array([rec["folding"][k] for rec in records]) for k in dataflow.Folding._fields))
    return records, net, folding


def compare(fixture: str | Path, resources: dataflow.ResourceParams = dataflow.ResourceParams()
            ) -> dict[str, np.ndarray]:
    """Our and the peer's cycles/DSP/BRAM/LUT/FF for every record: {metric: (ours, peer) arrays}."""
    records, net, folding = fixture_network(fixture)
    device = devices.get_device("u250")
    cost = dataflow.evaluate(net, folding, dataflow.Density.dense(net), device, resources=resources, xp=np)
    ours = {"cycles": cost.layer_cycles, "DSP": cost.layer_dsp, "BRAM": cost.layer_bram18, "LUT": cost.layer_lut,
            "FF": cost.layer_ff}
    return {m: (np.asarray(ours[m], np.float64), np.array([float(rec["peer"][m]) for rec in records]))
            for m in ours}


def relative_errors(ours: np.ndarray, peer: np.ndarray) -> np.ndarray:
    return np.abs(ours - peer) / np.maximum(np.abs(peer), 1.0)


def evaluate_network_fixture(fixture: dict) -> dataflow.Cost:
    """Our cost of the dense ResNet-18 design in a network fixture (made by
    experiments/resnet18_vs_fpgaconvnet.py: every node with its folding), at 16-bit, on the
    fixture's device; the fixture's nodes must be `networks.resnet18()`'s, in order."""
    graph = networks.resnet18()
    if [n.name for n in graph.nodes] != [n["name"] for n in fixture["nodes"]]:
        raise ValueError("the fixture's nodes are not cost_models.networks.resnet18()'s: regenerate it")
    net = dataflow.Network.build(graph, None, dataflow.Precision(data_bits=16, weight_bits=16))
    folding = dataflow.Folding(*(np.array([n["folding"][k] for n in fixture["nodes"]])
                                 for k in dataflow.Folding._fields))
    return dataflow.evaluate(net, folding, dataflow.Density.dense(net), devices.get_device(fixture["meta"]["device"]))
