"""The QONNX hand-over: qonnx's execution, and hls4ml's C simulation where hls4ml is installed,
equal cooptim's integer emulation bit for bit (random weights and batch-norm statistics; every
sparsity pattern; residual and branching networks; every rounding mode)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cooptim import config as config_lib
from cooptim import export as ex
from cooptim import nn
from cooptim import quantize as q
from cooptim.export import handover, hls4ml_bridge
from cooptim.export import qonnx as qx
from cooptim.testing import EXPORTED_PATTERNS as PATTERNS, randomize_batch_norms

from test_export_graphs import NETWORKS

pytest.importorskip("qonnx")
onnx = pytest.importorskip("onnx")
needs_hls4ml = pytest.mark.skipif(not hls4ml_bridge.available() or shutil.which("g++") is None,
                                  reason="hls4ml or g++ is not installed")
REPO = Path(__file__).resolve().parents[2]

DIGITS = {  # digits CNN: a pattern on each of conv2, conv3 and the head where hls4ml has them all
    "static": {"conv2": PATTERNS["nm"], "conv3": PATTERNS["csp"], "head": PATTERNS["balanced_group"]},
    "hass": {"conv2": PATTERNS["unstructured"], "conv3": PATTERNS["unstructured"]},
    "dpacs": {"conv2": PATTERNS["dynamic"], "conv3": PATTERNS["dynamic"]},
}


def quantized(name, width, layers, shape, rounding="half_up", n_images=4):
    cfg = config_lib.from_dict({
        "name": f"qonnx_{name}", "model": {"name": name, "width": width},
        "sparsity": {"default": {"method": "dense"}, "layers": layers},
        "hardware": {"data_bits": 8, "weight_bits": 8, "rounding": rounding}})
    rng = np.random.default_rng(0)
    model = nn.build_model(cfg, shape, 10)
    randomize_batch_norms(model, rng)
    model.eval()
    images = rng.normal(size=(48, *shape)).astype(np.float32)
    net = q.calibrate_graph(model, images, cfg.hardware)
    inputs, trace = ex.test_vectors(net, images[:n_images])  # the saturation vector, then images
    return cfg, net, inputs, trace


def handover_folder(tmp_path, cfg, net, inputs, trace) -> Path:
    folder = tmp_path / "handover"
    folder.mkdir()
    handover.write_qonnx_folder(folder, cfg, net, inputs, trace, labels=[0] * (len(inputs) - 1))
    return folder


def assert_bit_exact(result):
    assert result["bit_exact"], result


CASES = {
    **{f"digits_{k}": ("digits_cnn", 8, layers, (8, 8, 1), "half_up") for k, layers in DIGITS.items()},
    **{name: (name, width, {node: PATTERNS[p] for p, node in where.items()}, (32, 32, 3), "half_up", 1)
       for name, (width, where) in NETWORKS.items() if name in ("resnet18", "mobilenet_v2")},
    # a 3x3 global pool (not a power of two) and the two other roundings through residual adds
    "resnet8_half_even": ("resnet8", 8, {}, (12, 12, 1), "half_even"),
    "resnet8_floor": ("resnet8", 8, {}, (12, 12, 1), "floor"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_qonnx_execution_is_cooptims_integer_emulation(case, tmp_path):
    cfg, net, inputs, trace = quantized(*CASES[case])
    assert qx.exactness_problems(net, trace) == []
    assert_bit_exact(handover.check_qonnx(handover_folder(tmp_path, cfg, net, inputs, trace)))


def test_the_quant_nodes_carry_cooptims_formats_and_pruned_weights_are_zeros():
    cfg, net, _, _ = quantized(*CASES["digits_static"])
    model = qx.qonnx_model(net, weight_bits=8)
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in net.nodes:
        if node.layer is None:
            continue
        fmt = node.out_format
        assert constants[f"{node.name}_quant_scale"] == 2.0 ** -fmt.frac
        assert constants[f"{node.name}_quant_bitwidth"] == fmt.bits
    conv2 = constants["conv2_weight"]  # (C_out, C_in, 3, 3): 2 of every 4 input channels kept
    kept = (conv2.reshape(conv2.shape[0], -1, 4, 9) != 0).sum(axis=2)
    assert kept.max() <= 2 and (conv2 == 0).mean() >= 0.5


@needs_hls4ml
@pytest.mark.parametrize("case", ["digits_static", "digits_hass", "digits_dpacs", "resnet8_half_even"])
def test_hls4ml_c_simulation_is_cooptims_integer_emulation(case, tmp_path):
    cfg, net, inputs, trace = quantized(*CASES[case])
    assert hls4ml_bridge.unsupported(net) == []
    assert_bit_exact(handover.check_hls4ml(handover_folder(tmp_path, cfg, net, inputs, trace)))


def test_the_dpacs_vectors_switch_every_gate_both_ways():
    """So that the bit-exact checks of the DPACS case test the gates' thresholds, not a constant."""
    _, net, _, trace = quantized(*CASES["digits_dpacs"])
    for name in DIGITS["dpacs"]:
        layer, x = net.node(name).layer, trace[net.node(name).inputs[0]]["output"]
        spatial, channel = q.gates_of(layer, x, q.im2col(layer, x))
        assert 0 < spatial.mean() < 1 and 0 < channel.mean() < 1, name


def test_what_hls4ml_cannot_take_is_named_before_anything_is_built(tmp_path):
    # HASS's threshold on the image, which can be negative: hls4ml's ThresholdedReLU is x > t only
    cfg, net, inputs, trace = quantized("digits_cnn", 8, {"conv1": PATTERNS["unstructured"]}, (8, 8, 1))
    assert net.node("conv1").layer.activation_threshold > 0
    problems = hls4ml_bridge.unsupported(net)
    assert [p.split(":")[0] for p in problems] == ["node 'conv1'"]
    folder = handover_folder(tmp_path, cfg, net, inputs, trace)
    if hls4ml_bridge.available():
        with pytest.raises(ex.ExportError, match="hls4ml cannot take this network: node 'conv1': a HASS threshold"):
            handover.check_hls4ml(folder)
    assert not (folder / "hls4ml").exists()


def test_the_cli_exports_a_trained_run_as_qonnx_and_checks_it(tmp_path):
    raw = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    raw.update(name="q", output_dir=str(tmp_path), train={"steps": 20, "eval_every": 20, "checkpoint_every": 20})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    run = lambda *args: subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO)
    assert run("cooptim.train", "--config", str(tmp_path / "c.yaml"), "--quiet").returncode == 0
    done = run("cooptim.export", str(tmp_path / "q"), "--format", "qonnx", "--out", str(tmp_path / "out"),
               "--vectors", "3", "--check")
    assert done.returncode == 0, done.stderr
    assert "PASS: qonnx execution = cooptim's integer emulation on 4 vectors, bit for bit" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["README.md", "model.onnx", "testbench"]
    again = run("cooptim.export", str(tmp_path / "q"), "--format", "qonnx", "--out", str(tmp_path / "out"))
    assert again.returncode == 2 and again.stderr.strip() == f"error: {tmp_path / 'out'} exists; pass --force to replace it"
