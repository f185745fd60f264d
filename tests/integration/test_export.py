"""Fixed-point emulation and export: bit-exact C++ reference, saturation, schema, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import yaml

from cooptim import config as config_lib
from cooptim import folders
from cooptim import export as ex
from cooptim import nn
from cooptim import quantize as q
from cooptim.quantize import network as quantized_network
from cooptim.data import load as load_data

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


def _config(method: str, **hardware):
    spec = NETWORKS[method]
    return config_lib.from_dict({
        "name": f"export_{method}", "model": {"name": "digits_cnn", "width": 8},
        "sparsity": {"default": {"method": "dense"}, "layers": {
            "conv2": yaml.safe_load(spec), "conv3": yaml.safe_load(spec)}},
        "hardware": {"data_bits": 8, "weight_bits": 8, "pe_in": 8, **hardware}})


def _narrow_network(method, digits):
    """An untrained model (fixed seed) quantized with, in every layer, the narrowest accumulator
    that its calibration data fits, so that a chosen input can overflow it."""
    cfg = _config(method)
    model = nn.build_model(cfg, digits.image_shape, digits.num_classes)
    model.eval()
    images, _ = digits.train.get(np.arange(128))
    wide = q.calibrate(model, images, cfg.hardware)
    bits = q.accumulator_bits_needed(wide, images)
    net = dataclasses.replace(wide, layers=tuple(
        dataclasses.replace(layer, acc_bits=b) for layer, b in zip(wide.layers, bits)))
    net = dataclasses.replace(net, layers=net.layers[:-1] + (dataclasses.replace(
        net.layers[-1], out_format=dataclasses.replace(net.layers[-1].out_format, bits=bits[-1])),))
    q.check_accumulators(net, images)  # the calibration data still fits
    return cfg, model, net


@needs_gpp
@pytest.mark.parametrize("method", list(NETWORKS))
def test_cpp_reference_is_bit_exact_with_the_emulation(method, digits, tmp_path):
    cfg, model, net = _narrow_network(method, digits)
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=6)

    # the saturation vector really overflows an accumulator (and the calibration data did not)
    inputs = np.array([int(v, 16) for v in (out / "testbench/input.mem").read_text().split()], np.int64)
    inputs = np.where(inputs > 127, inputs - 256, inputs).astype(np.int8).reshape(-1, *net.input_shape)
    _, trace = net.forward(inputs[:1])
    assert sum(info["saturated"] for info in trace) > 0
    # every layer keeps its documented pattern
    config = json.loads((out / "accelerator.json").read_text())
    assert [layer["sparsity"]["pattern"] for layer in config["layers"]] == ["dense", method, method, "dense"]
    if method == "dynamic":  # the gates skip some outputs and keep others
        layer = net.layers[1]
        x = net.forward(inputs[1:])[1][0]["output"]  # conv2's input for the test images
        spatial, channel = q.gates_of(layer, x, quantized_network._im2col(layer, x))
        assert 0 < spatial.mean() < 1 and 0 < channel.mean() < 1

    ex.build_reference(out)
    done = ex.run_reference(out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout
    # the reference's own outputs equal the emulation's, value for value
    for layer in net.layers:
        name = ex.c_name(layer.name)
        assert (out / f"testbench/reference_{name}.mem").read_text() == (out / f"testbench/{name}.mem").read_text()


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
    layer = net.layers[1]
    x = net.forward(net.quantize_input(digits.test.get(np.arange(2))[0]))[1][0]["output"]
    out, _ = q.layer_forward(layer, x)
    w = layer.weight.reshape(*layer.kernel, layer.in_shape[2], -1)
    acc = golden.conv2d(x, w, layer.stride, layer.padding, integer=True, acc_bits=layer.acc_bits)
    expected = np.zeros_like(acc)
    for c in range(acc.shape[-1]):
        v = np.clip(acc[..., c] + layer.bias[c], -(2 ** (layer.acc_bits - 1)), 2 ** (layer.acc_bits - 1) - 1)
        v = np.maximum(v, 0)
        expected[..., c] = golden.requantize(v, int(layer.acc_frac[c] - layer.out_format.frac), layer.out_format.bits)
    b, h, w_, ch = expected.shape
    pooled = expected.reshape(b, h // 2, 2, w_ // 2, 2, ch).sum(axis=(2, 4))
    pooled = np.vectorize(lambda v: golden.shift_round(int(v), 2))(pooled)
    np.testing.assert_array_equal(out, pooled)


def test_accelerator_json_matches_the_schema_and_fpgaconvnet_layout(digits, tmp_path):
    cfg, model, net = _narrow_network("balanced_group", digits)
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=2)
    config = json.loads((out / "accelerator.json").read_text())
    ex.validate(config)
    assert config["schema_version"] == ex.SCHEMA_VERSION
    assert config["layers"][1]["sparsity"] == {"pattern": "balanced_group", "n": 4, "m": 8}
    broken = json.loads(json.dumps(config))
    del broken["layers"][2]["folding"]["fine"]
    with pytest.raises(ex.ExportError, match="layers/2/folding"):
        ex.validate(broken)
    fc = json.loads((out / "fpgaconvnet.json").read_text())
    kinds = [layer["type"] for layer in fc["partition"][0]["layers"]]
    assert kinds == ["CONVOLUTION", "RELU", "CONVOLUTION", "RELU", "AVERAGE_POOLING", "CONVOLUTION", "RELU",
                     "AVERAGE_POOLING", "INNER_PRODUCT"]
    conv2 = fc["partition"][0]["layers"][2]
    assert conv2["parameters"]["coarse_in"] == config["layers"][1]["folding"]["coarse_in"]
    assert conv2["streams_in"][0]["name"] == "conv1_relu_conv2"


def test_fpgaconvnet_json_parses_as_its_protobuf(digits, tmp_path):
    """fpgaconvnet.json is a valid `partitions` message of fpgaconvnet-model's own schema."""
    pb = pytest.importorskip("fpgaconvnet.proto.fpgaconvnet_pb2",
                             reason="fpgaconvnet-model is not installed (optional peer)")
    from google.protobuf import json_format

    cfg, model, net = _narrow_network("nm", digits)
    out = ex.export_model(cfg, model, digits, net, tmp_path / "export", vectors=1)
    message = json_format.Parse((out / "fpgaconvnet.json").read_text(), pb.partitions())
    assert len(message.partition[0].layers) == 9


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
    with pytest.raises(q.QuantizationError, match=r"layer '\w+': the accumulator needs \d+ bits .* "
                                                  r"'hardware.acc_bits' is \d+: the format is too narrow"):
        q.calibrate(model, images, narrow)
    with pytest.raises(q.QuantizationError, match="'hardware.data_bits' is 16"):
        q.calibrate(model, images, dataclasses.replace(cfg.hardware, data_bits=16))


def test_residual_models_are_refused_by_name(digits):
    cfg = config_lib.from_dict({"name": "r", "model": {"name": "resnet20", "width": 4},
                                "sparsity": {"default": {"method": "dense"}}, "hardware": {"data_bits": 8, "weight_bits": 8}})
    model = nn.build_model(cfg, (8, 8, 3), 10)
    with pytest.raises(q.QuantizationError, match="CifarResNet.*not sequential"):
        q.calibrate(model, np.zeros((2, 8, 8, 3), np.float32), cfg.hardware)


def test_stages_compute_the_same_as_the_model(digits):
    cfg = _config("dynamic")
    model = nn.build_model(cfg, digits.image_shape, digits.num_classes)
    model.eval()
    x, _ = digits.test.get(np.arange(16))
    np.testing.assert_allclose(q.float_stages(model.stages(), x)[-1], np.asarray(model(x)), rtol=1e-5, atol=1e-5)
