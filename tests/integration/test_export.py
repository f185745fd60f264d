"""Fixed-point emulation and export: bit-exact C++ reference, saturation, schema, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from cooptim import config as config_lib
from cooptim import folders
from cooptim import export as ex
from cooptim import nn
from cooptim import quantize as q
from cooptim.data import eval_batches, load as load_data
from cooptim.hardware import hardware_report

needs_gpp = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

# sparsity of conv2 and conv3 (conv1 and head dense) -> what the export must show
NETWORKS = {
    "dense": "{method: dense}",
    "nm": "{method: nm, n: 2, m: 4}",
    "balanced_group": "{method: balanced_group, keep: 4, group: 8}",
    "csp": "{method: csp, weight_density: 0.5, chunk: 4}",
    "unstructured": "{method: unstructured, weight_density: 0.5, activation_threshold: 0.2}",
    "dynamic": "{method: dynamic, target: 0.5, channel_group: 4, gate_bias: 0.0}",
}


@pytest.fixture(scope="module")
def digits():
    return load_data(config_lib.DataConfig(name="digits"))


def _config(method: str, width: int = 8, **hardware):
    spec = NETWORKS[method]
    return config_lib.from_dict({
        "name": f"export_{method}", "model": {"name": "digits_cnn", "width": width},
        "sparsity": {"default": {"method": "dense"}, "layers": {
            "conv2": yaml.safe_load(spec), "conv3": yaml.safe_load(spec)}},
        "hardware": {"data_bits": 8, "weight_bits": 8, "pe_in": 8, **hardware}})


def narrowed(net: q.QuantizedGraph, images: np.ndarray) -> q.QuantizedGraph:
    """`net` with, in every conv / dense node, the narrowest accumulator that `images` fit, so that
    a chosen input can overflow it (the last node's output keeps the accumulator's width)."""
    bits = dict(zip([layer.name for layer in net.layers], q.accumulator_bits_needed(net, images)))
    nodes = []
    for node in net.nodes:
        if node.layer is not None:
            layer = dataclasses.replace(node.layer, acc_bits=bits[node.name])
            if node is net.output:
                layer = dataclasses.replace(layer, out_format=dataclasses.replace(layer.out_format, bits=bits[node.name]))
            node = dataclasses.replace(node, layer=layer, out_format=layer.out_format)
        nodes.append(node)
    net = dataclasses.replace(net, nodes=tuple(nodes))
    q.check_accumulators(net, images)  # the calibration data still fits
    return net


def _narrow_network(method, digits, width=8, **hardware):
    """An untrained model (fixed seed) quantized with the narrowest accumulators (`narrowed`)."""
    cfg = _config(method, width, **hardware)
    model = nn.build_model(cfg, digits.image_shape, digits.num_classes)
    model.eval()
    images, _ = digits.train.get(np.arange(128))
    return cfg, model, narrowed(q.calibrate_graph(model, images, cfg.hardware), images)


def _int8_inputs(out, shape) -> np.ndarray:
    inputs = np.array([int(v, 16) for v in (out / "testbench/input.mem").read_text().split()], np.int64)
    return np.where(inputs > 127, inputs - 256, inputs).astype(np.int8).reshape(-1, *shape)


def _check_with_gpp(net, out):
    """The C++ reference compiled with g++ reproduces every node of every vector, value for value."""
    ex.build_reference(out)
    done = ex.run_reference(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS: " in done.stdout and f"{len(net.nodes)} nodes" in done.stdout
    for node in net.nodes:
        name = ex.c_name(node.name)
        assert (out / f"testbench/reference_{name}.mem").read_text() == (out / f"testbench/{name}.mem").read_text()


@needs_gpp
@pytest.mark.parametrize("method", list(NETWORKS))
def test_cpp_reference_is_bit_exact_with_the_emulation(method, digits, tmp_path):
    cfg, model, net = _narrow_network(method, digits)
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=6)

    # the saturation vector really overflows an accumulator (and the calibration data did not)
    inputs = _int8_inputs(out, net.input_shape)
    _, trace = net.forward(inputs[:1])
    assert sum(trace[layer.name]["saturated"] for layer in net.layers) > 0
    # every weighted node keeps its documented pattern
    config = json.loads((out / "accelerator.json").read_text())
    assert [n["layer"]["sparsity"]["pattern"] for n in config["nodes"] if "layer" in n] == \
        ["dense", method, method, "dense"]
    if method == "dynamic":  # the gates skip some outputs and keep others
        node = net.node("conv2")
        x = net.forward(inputs[1:])[1][node.inputs[0]]["output"]  # conv2's input for the test images
        spatial, channel = q.gates_of(node.layer, x, q.im2col(node.layer, x))
        assert 0 < spatial.mean() < 1 and 0 < channel.mean() < 1
    _check_with_gpp(net, out)


@needs_gpp
def test_reference_detects_a_changed_weight(digits, tmp_path):
    cfg, model, net = _narrow_network("nm", digits)
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=2)
    header = out / "weights" / "conv2.h"
    text = header.read_text()
    start = text.index("k_values")
    first = text.index("{", start) + 1
    value_end = text.index(",", first)
    old = int(text[first:value_end])
    header.write_text(text[:first] + f" {old + 1 if old < 127 else old - 1}" + text[value_end:])
    ex.build_reference(out)
    done = ex.run_reference(out)
    assert done.returncode == 1
    assert "conv2: MISMATCH" in done.stdout


def test_integer_emulation_matches_the_golden_model_on_one_layer(digits):
    """A dense conv layer through the kernels equals the NumPy golden model's loops."""
    from kernels import reference as golden

    cfg, model, net = _narrow_network("dense", digits)
    node = net.node("conv2")
    layer = node.layer
    x = net.forward(net.quantize_input(digits.test.get(np.arange(2))[0]))[1][node.inputs[0]]["output"]
    out, _ = q.layer_forward(layer, x)
    w = layer.weight.reshape(*layer.kernel, layer.in_shape[2], -1)
    acc = golden.conv2d(x, w, layer.stride, layer.padding, integer=True, acc_bits=layer.acc_bits)
    expected = np.zeros_like(acc)
    for c in range(acc.shape[-1]):
        v = np.clip(acc[..., c] + layer.bias[c], -(2 ** (layer.acc_bits - 1)), 2 ** (layer.acc_bits - 1) - 1)
        v = np.maximum(v, 0)
        expected[..., c] = golden.requantize(v, int(layer.acc_frac[c] - layer.out_format.frac), layer.out_format.bits)
    np.testing.assert_array_equal(out, expected)


def test_accelerator_json_matches_the_schema_and_fpgaconvnet_layout(digits, tmp_path):
    cfg, model, net = _narrow_network("balanced_group", digits)
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=2)
    config = json.loads((out / "accelerator.json").read_text())
    ex.validate(config)
    assert config["schema_version"] == ex.SCHEMA_VERSION == "2.1"
    assert [n["op"] for n in config["nodes"]] == [n.op for n in net.nodes]
    assert config["nodes"][2]["layer"]["sparsity"] == {"pattern": "balanced_group", "n": 4, "m": 8}
    assert [(e["from"], e["to"]) for e in config["edges"]][:2] == [("input", "conv1"), ("conv1", "conv1.relu")]
    broken = json.loads(json.dumps(config))
    del broken["nodes"][2]["folding"]["fine"]
    with pytest.raises(ex.ExportError, match="nodes/2/folding"):
        ex.validate(broken)
    broken = json.loads(json.dumps(config))
    del broken["nodes"][2]["layer"]  # a conv without its weights
    with pytest.raises(ex.ExportError, match="nodes/2"):
        ex.validate(broken)
    fc = json.loads((out / "fpgaconvnet.json").read_text())
    layers = fc["partition"][0]["layers"]
    assert [layer["type"] for layer in layers] == ["CONVOLUTION", "RELU", "CONVOLUTION", "RELU", "POOLING",
                                                   "CONVOLUTION", "RELU", "POOLING", "INNER_PRODUCT"]
    conv2 = layers[2]
    assert conv2["parameters"]["coarse_in"] == config["nodes"][2]["folding"]["coarse_in"]
    assert conv2["streams_in"][0] == {"name": "conv1.relu_conv2", "coarse": conv2["parameters"]["coarse_in"],
                                      "node": "conv1.relu", "buffer_depth": 2}
    assert layers[4]["op_type"] == "avg" and layers[4]["parameters"]["kernel_size"] == [2, 2]


@pytest.mark.parametrize("method", ["nm", "csp", "unstructured"])
def test_the_report_and_accelerator_json_give_the_same_figures(digits, tmp_path, method):
    """Every node's expected cycles, DSP and BRAM in accelerator.json are the trainer's report's,
    measured statistics included (HASS's window histograms, CSP's cascade lengths)."""
    cfg, model, net = _narrow_network(method, digits)
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=1)
    config = json.loads((out / "accelerator.json").read_text())
    batches = lambda: (x for x, _ in eval_batches(digits.test, cfg.data.eval_batch_size))
    gates, activations = nn.measure_activity(model, batches())
    report = hardware_report(model, nn.graph_of(model, digits.image_shape), cfg, gates=gates,
                             activations=activations, histograms=nn.measure_window_histograms(model, batches()))
    assert report["measured_cascades" if method == "csp" else "measured_histograms"] == (
        [] if method == "nm" else ["conv2", "conv3"])
    assert [n["name"] for n in report["nodes"]] == [n["name"] for n in config["nodes"]]
    for mine, theirs in zip(config["nodes"], report["nodes"]):
        assert mine["expected"] == {k: theirs[k] for k in ("cycles", "dsp", "bram18")}
        assert mine["folding"] == theirs["folding"]
    assert config["pipeline"]["throughput"] == report["sparse"]["throughput"]


def test_a_memory_plan_reaches_the_report_and_accelerator_json(digits, tmp_path):
    """`hardware.memory: on_chip` on a board whose BRAM is scarce beside its URAM (a board of the
    test's own, through `hardware.devices_file`): the DSE moves weight memories to URAM; the
    report and accelerator.json (schema-validated) name the same place per node."""
    board = tmp_path / "boards.yaml"
    board.write_text(yaml.safe_dump({"scarce_bram": {"dsp": 2000, "bram18": 16, "uram": 32, "lut": 500_000,
                                                     "ff": 1_000_000, "clock_mhz": 200, "bandwidth_gbps": 10}}))
    cfg, model, net = _narrow_network("nm", digits, 64, device="scarce_bram", devices_file=str(board),
                                      memory="on_chip")
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=1)
    config = json.loads((out / "accelerator.json").read_text())
    ex.validate(config)
    report = hardware_report(model, nn.graph_of(model, digits.image_shape), cfg)
    plan = report["sparse"]["memory_plan"]
    assert config["pipeline"]["memory"] == "on_chip" and config["pipeline"]["uram"] > 0
    assert {n["name"]: n["weights_memory"] for n in config["nodes"] if "weights_memory" in n} == plan
    assert any(p["ram"] == "uram" for p in plan.values()) and not any(p["streamed"] for p in plan.values())


PEER_PYTHON = os.environ.get("COOPTIM_PEER_PYTHON")
needs_peer = pytest.mark.skipif(not PEER_PYTHON, reason="COOPTIM_PEER_PYTHON does not name a python with "
                                "fpgaconvnet-model's git source (its own environment: benchmarks/peer_fpgaconvnet.py)")


def parse_with_peer(path: Path) -> dict:
    """An exported fpgaconvnet.json read by fpgaconvnet-model's own protobuf, in its environment."""
    script = Path(__file__).parents[2] / "benchmarks" / "peer_fpgaconvnet.py"
    run = subprocess.run([PEER_PYTHON, str(script), "--parse", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@needs_peer
def test_fpgaconvnet_json_parses_as_its_protobuf(digits, tmp_path):
    """fpgaconvnet.json is a valid `partitions` message of fpgaconvnet-model's own schema, HASS's
    sparse layer with its window histograms."""
    cfg, model, net = _narrow_network("unstructured", digits)
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=1)
    layers = parse_with_peer(out / "fpgaconvnet.json")["layers"]
    assert len(layers) == len(net.nodes)
    sparse = layers[2]
    assert sparse["op_type"] == "sparse" and sparse["skip_all_zero_window"]
    assert sparse["sparsity"] == net.node("conv2").layer.in_shape[2] * 10


def test_a_hass_conv_with_too_few_zeros_is_written_dense_as_fpgaconvnet_would_build_it(digits, tmp_path,
                                                                                      monkeypatch):
    """fpgaconvnet.json gives a HASS conv its sparse engine only where its windows hold at least
    `SPARSE_ENGINE_MIN_ZEROS` zeros on average (fpgaConvNet's parser builds the others dense)."""
    cfg, model, net = _narrow_network("unstructured", digits)

    def convs(threshold, folder):
        monkeypatch.setattr(ex, "SPARSE_ENGINE_MIN_ZEROS", threshold)
        out = ex.export_model(cfg, model, digits, net, tmp_path / folder, vectors=3)
        layers = json.loads((out / "fpgaconvnet.json").read_text())["partition"][0]["layers"]
        return {layer["name"]: layer for layer in layers if layer["type"] == "CONVOLUTION"}

    sparse = convs(0.1, "at_a_tenth")
    hass = [name for name in sparse if net.node(name).layer.pattern == "unstructured"]
    assert sparse[hass[0]]["op_type"] == "sparse"
    for name in hass:
        if sparse[name]["op_type"] == "sparse":
            k2 = sparse[name]["parameters"]["kernel_rows"] * sparse[name]["parameters"]["kernel_cols"]
            histogram = np.reshape(sparse[name]["parameters"]["sparsity"], (-1, k2 + 1))
            assert (histogram @ np.arange(k2 + 1)).mean() / k2 >= 0.1, name
    dense = convs(1.01, "above_every_layer")
    assert all(dense[name]["op_type"] == "dense" and "sparsity" not in dense[name]["parameters"] for name in hass)


def test_export_errors_leave_nothing_half_written(digits, tmp_path, monkeypatch):
    # a run folder without a checkpoint
    run = tmp_path / "run"
    run.mkdir()
    config_lib.save(_config("dense"), run / "config.yaml")
    with pytest.raises(ex.ExportError, match="has no checkpoint"):
        ex.export(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # an output folder that exists, without force
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    cfg, model, net = _narrow_network("dense", digits)
    with pytest.raises(ex.ExportError, match="exists; pass --force"):
        ex.export_model(cfg, model, digits, net, existing)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    # a failure half way through writing removes the temporary folder
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(ex, "fpgaconvnet_config", fail)
    with pytest.raises(OSError, match="disk full"):
        ex.export_model(cfg, model, digits, net, tmp_path / "fails")
    monkeypatch.undo()
    assert not (tmp_path / "fails").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fails") and p.is_dir()]
    # --force never replaces a folder cooptim did not make...
    with pytest.raises(folders.FolderError, match="has no cooptim marker"):
        ex.export_model(cfg, model, digits, net, existing, force=True, vectors=1)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    # ...but replaces an earlier export, which is an ordinary (not private) folder; the temporary
    # folder of an export killed half way is removed by the next export to the same place
    killed = tmp_path / ".hw.k1ll3d"
    killed.mkdir()
    folders.mark(killed, "export")
    done = ex.export_model(cfg, model, digits, net, tmp_path / "hw", vectors=1)
    assert not killed.exists()
    assert done.stat().st_mode & 0o055 == 0o055 & ~_umask()
    (done / "accelerator.json").unlink()
    ex.export_model(cfg, model, digits, net, done, force=True, vectors=1)
    assert (done / "accelerator.json").exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_format_too_narrow_for_the_calibrated_range_is_an_error(digits):
    cfg, model, net = _narrow_network("nm", digits)
    narrow = dataclasses.replace(cfg.hardware, acc_bits=min(layer.acc_bits for layer in net.layers) - 1)
    images, _ = digits.train.get(np.arange(128))
    with pytest.raises(q.QuantizationError, match=r"node '\w+': the accumulator needs \d+ bits .* "
                                                  r"'hardware.acc_bits' is \d+: the format is too narrow"):
        q.calibrate_graph(model, images, narrow)
    with pytest.raises(q.QuantizationError, match="'hardware.data_bits' is 16"):
        q.calibrate_graph(model, images, dataclasses.replace(cfg.hardware, data_bits=16))
