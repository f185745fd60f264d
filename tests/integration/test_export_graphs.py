"""Residual and branching networks through quantization, export and the C++ reference (untrained,
random weights and batch-norm statistics, reduced width, CIFAR-shaped input): every sparsity
pattern that has an exported layout on some node, and an input that saturates residual adds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cooptim import config as config_lib
from cooptim import export as ex
from cooptim import nn
from cooptim import quantize as q
from cooptim.data import ArraySource, Dataset
from cooptim.testing import EXPORTED_PATTERNS as PATTERNS, randomize_batch_norms

from test_export import _check_with_gpp, _int8_inputs, narrowed, needs_peer, parse_with_peer

needs_gpp = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

# network -> (width, the node that takes each pattern: a layer whose rows and channels it divides)
NETWORKS = {
    "resnet20": (4, {"nm": "stage1.block1.conv1", "balanced_group": "stage2.block1.conv2",
                     "csp": "stage2.block2.conv1", "unstructured": "stage3.block1.conv2",
                     "dynamic": "stage3.block2.conv1"}),
    "resnet56": (4, {"nm": "stage1.block4.conv1", "balanced_group": "stage2.block5.conv2",
                     "csp": "stage2.block9.conv1", "unstructured": "stage3.block1.conv2",
                     "dynamic": "stage3.block8.conv1"}),
    "resnet18": (4, {"nm": "layer1.0.conv1", "balanced_group": "layer2.0.conv2", "csp": "layer2.0.downsample",
                     "unstructured": "layer3.0.conv2", "dynamic": "layer4.0.conv1"}),
    "mobilenet_v2": (8, {"nm": "block2.0.expand", "balanced_group": "block2.0.project", "csp": "block3.0.expand",
                         "unstructured": "block3.1.expand", "dynamic": "block4.0.project"}),
}
SHAPE = (32, 32, 3)


def random_dataset(rng, train=48, test=4) -> Dataset:
    images = rng.normal(size=(train + test, *SHAPE)).astype(np.float32)
    labels = rng.integers(0, 10, train + test)
    source = lambda s: ArraySource(images[s], labels[s], np.zeros(3, np.float32), np.ones(3, np.float32))
    return Dataset("random", source(slice(0, train)), source(slice(train, None)), 10, SHAPE)


def _export(name, tmp_path):
    """The network `name` at reduced width, random weights, one pattern per chosen node, exported."""
    width, where = NETWORKS[name]
    cfg = config_lib.from_dict({
        "name": f"export_{name}", "model": {"name": name, "width": width},
        "sparsity": {"default": {"method": "dense"}, "layers": {node: PATTERNS[p] for p, node in where.items()}},
        "hardware": {"data_bits": 8, "weight_bits": 8}})
    rng = np.random.default_rng(0)
    model = nn.build_model(cfg, SHAPE, 10)
    randomize_batch_norms(model, rng)
    model.eval()
    dataset = random_dataset(rng)
    images, _ = dataset.train.get(np.arange(len(dataset.train)))
    net = narrowed(q.calibrate_graph(model, images, cfg.hardware), images)
    return net, ex.export_model(cfg, model, dataset, net, tmp_path / "export", vectors=2)


@needs_gpp
@pytest.mark.parametrize("name", list(NETWORKS))
def test_a_residual_network_exports_bit_exact_with_every_pattern(name, tmp_path):
    where = NETWORKS[name][1]
    net, out = _export(name, tmp_path)

    config = json.loads((out / "accelerator.json").read_text())
    patterns = {n["name"]: n["layer"]["sparsity"]["pattern"] for n in config["nodes"] if "layer" in n}
    assert {node: patterns[node] for node in where.values()} == {node: p for p, node in where.items()}
    ops = {n["op"] for n in config["nodes"]}
    assert {"add", "split", "global_pool"} <= ops
    # every residual merge's shortcut edge has its skip buffer, and the BRAM of the merge counts it
    merges = [n for n in config["nodes"] if n["op"] == "add"]
    buffered = {e["to"] for e in config["edges"] if e["buffer_words"] > 0}
    assert buffered == {n["name"] for n in merges}
    # vector 0 saturates residual adds (and accumulators), and the C++ reference follows it
    _, trace = net.forward(_int8_inputs(out, net.input_shape)[:1])
    assert sum(trace[n["name"]]["saturated"] for n in merges) > 0
    assert sum(trace[layer.name]["saturated"] for layer in net.layers) > 0
    _check_with_gpp(net, out)


@needs_peer
def test_fpgaconvnet_json_parses_with_the_peers_own_protobuf(tmp_path):
    net, out = _export("resnet20", tmp_path)
    parsed = parse_with_peer(out / "fpgaconvnet.json")
    config = json.loads((out / "accelerator.json").read_text())
    assert parsed["partitions"] == 1
    assert [layer["name"] for layer in parsed["layers"]] == [n["name"] for n in config["nodes"]]
    types = {layer["name"]: layer["type"] for layer in parsed["layers"]}
    # the proto names fpgaConvNet's GlobalPooling layer AVERAGE_POOLING (tools/layer_enum.py)
    expected = {"conv": "CONVOLUTION", "dense": "INNER_PRODUCT", "add": "ELTWISE", "split": "SPLIT",
                "relu": "RELU", "global_pool": "AVERAGE_POOLING"}
    for node in config["nodes"]:
        if node["op"] in expected:
            assert types[node["name"]] == expected[node["op"]], node["name"]
    # every stream joins the same two nodes as an edge of accelerator.json (fpgaConvNet names the
    # layer itself as the far end of the partition's input and output streams)
    edges = {(e["from"], e["to"]) for e in config["edges"] if e["from"] != "input"}
    streams = {(layer["name"], to) for layer in parsed["layers"] for to in layer["outputs"] if to != layer["name"]}
    assert streams == edges
