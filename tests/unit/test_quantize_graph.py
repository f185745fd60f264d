"""Quantization over the model's graph on untrained models (random weights, no training run): the
sequential CNN, grouped convs against the golden model, and the integer ops against NumPy by hand
(whole residual networks: tests/integration/test_quantize_networks.py)."""

import numpy as np
import pytest

from cooptim import config, nn
from cooptim import quantize as q
from cooptim.quantize.graph import GLOBAL_POOL_SHIFT, QuantNode, calibrate_graph, node_forward
from kernels import fixed_point as fp
from kernels import nm

RNG = np.random.default_rng(0)  # for the by-hand tests; the network tests seed their own


def model_of(name, shape, classes, width, sparsity=None):
    cfg = config.from_dict({"name": "q", "model": {"name": name, "width": width},
                            "sparsity": sparsity or {"default": {"method": "dense"}},
                            "hardware": {"data_bits": 8, "weight_bits": 8}})
    model = nn.build_model(cfg, shape, classes)
    return cfg, model


def test_the_sequential_cnn_fuses_its_relus_and_follows_its_float_model():
    """The digits CNN: every ReLU fused into its conv (the accumulator is clipped, the ReLU node
    passes its input on), 2:4 weights kept 2 of 4, and integer logits close to the float ones."""
    sparsity = {"default": {"method": "dense"}, "layers": {"conv2": {"method": "nm", "n": 2, "m": 4}}}
    cfg, model = model_of("digits_cnn", (8, 8, 1), 10, 8, sparsity)
    model.eval()
    images = np.random.default_rng(1).normal(size=(32, 8, 8, 1)).astype(np.float32)
    net = calibrate_graph(model, images, cfg.hardware)
    assert [n.op for n in net.nodes] == ["conv", "fused_relu", "conv", "fused_relu", "avg_pool", "conv",
                                         "fused_relu", "avg_pool", "dense"]
    assert [layer.relu for layer in net.layers] == [True, True, True, False]
    conv2 = net.node("conv2").layer
    assert (np.count_nonzero(conv2.weight.reshape(-1, 4, conv2.weight.shape[1]), axis=1) <= 2).all()
    logits, trace = net.forward(net.quantize_input(images))
    assert (trace["conv1"]["output"] >= 0).all()
    scaled = logits * 2.0 ** -net.output.out_format.frac
    expected = np.asarray(model(images))
    # 8-bit data and weights through 4 layers of random weights (measured: 5.8% of the logits' range)
    assert np.abs(scaled - expected).max() < 0.1 * np.abs(expected).max()


@pytest.mark.parametrize("groups", [2, 8])  # grouped, and depthwise (one input channel per group)
def test_a_grouped_conv_in_integers_is_each_groups_own_convolution(groups):
    """Every output channel sums only its own group's input channels: the golden model's
    convolution of each group apart, saturated to acc_bits."""
    from kernels import reference as golden

    c_in, c_out, acc_bits = 8, 16, 14
    w = RNG.integers(-128, 128, (3, 3, c_in // groups, c_out)).astype(np.int8)
    x = RNG.integers(-128, 128, (2, 5, 5, c_in)).astype(np.int8)
    layer = q.QuantLayer(
        name="dw", kind="conv", in_shape=(5, 5, c_in), out_shape=(3, 3, c_out), kernel=(3, 3), stride=(2, 2),
        padding=((1, 1), (1, 1)), pattern="dense", params={}, weight=w.reshape(-1, c_out),
        weight_frac=np.zeros(c_out, np.int64), bias=np.zeros(c_out, np.int64), in_format=fp.Format(8, 0),
        out_format=fp.Format(32, 0), acc_bits=acc_bits, rounding="half_up", relu=False,
        groups=groups)
    out, info = q.layer_forward(layer, x)
    per_in, per_out = c_in // groups, c_out // groups
    expected = np.concatenate([
        golden.conv2d(x[..., g * per_in:(g + 1) * per_in], w[..., g * per_out:(g + 1) * per_out], (2, 2),
                      ((1, 1), (1, 1)), integer=True, acc_bits=acc_bits) for g in range(groups)], axis=-1)
    np.testing.assert_array_equal(out, expected)
    assert info["saturated"] > 0  # 14 bits: the test reaches the saturating path


def test_dynamic_gating_of_a_depthwise_conv_is_refused_before_any_work():
    cfg, model = model_of("mobilenet_v2", (16, 16, 3), 10, 4, {
        "default": {"method": "dense"},
        "layers": {"block1.0.depthwise": {"method": "dynamic", "target": 0.5, "channel_group": 4}}})
    with pytest.raises(q.QuantizationError, match="'block1.0.depthwise': dynamic gating of a grouped"):
        calibrate_graph(model, np.zeros((2, 16, 16, 3), np.float32), cfg.hardware)


def test_a_residual_add_aligns_formats_and_saturates():
    fmt = fp.Format(8, 4)
    node = QuantNode("add", "add", ("a", "b"), (1, 1, 3), fmt, input_fracs=(5, 3))
    a = np.array([[[[64, -128, 127]]]], np.int8)  # 2.0, -4.0, 3.97 at 2^-5
    b = np.array([[[[8, -128, 127]]]], np.int8)  # 1.0, -16.0, 15.9 at 2^-3
    out, info = node_forward(node, [a, b], "half_up")
    # a >> 1 (half up), b << 1, added, saturated to [-128, 127] at 2^-4
    assert out.tolist() == [[[[32 + 16, -128, 127]]]]
    assert info["saturated"] == 2


def test_global_pooling_is_the_mean_through_a_fixed_point_reciprocal():
    node = QuantNode("gp", "global_pool", ("x",), (1, 1, 2), fp.Format(8, 4))
    x = RNG.integers(-128, 128, (3, 7, 7, 2)).astype(np.int8)
    out, _ = node_forward(node, [x], "half_up")
    reciprocal = round(2 ** GLOBAL_POOL_SHIFT / 49)
    expected = np.floor(x.astype(np.int64).sum(axis=(1, 2), keepdims=True) * reciprocal / 2 ** GLOBAL_POOL_SHIFT + 0.5)
    np.testing.assert_array_equal(out, expected)
    assert np.abs(out - x.mean(axis=(1, 2), keepdims=True)).max() <= 1


def test_max_pool_with_padding_and_subsample_by_hand():
    fmt = fp.Format(8, 0)
    x = np.arange(16, dtype=np.int8).reshape(1, 4, 4, 1) - 8
    pooled, _ = node_forward(QuantNode("p", "max_pool", ("x",), (2, 2, 1), fmt, window=3, stride=2, padding=1),
                             [x], "half_up")
    assert pooled[0, :, :, 0].tolist() == [[-3, -1], [5, 7]]
    shortcut, _ = node_forward(QuantNode("s", "subsample", ("x",), (2, 2, 3), fmt, stride=2, pad_channels=2),
                               [x], "half_up")
    assert shortcut.shape == (1, 2, 2, 3)
    assert shortcut[0, :, :, 0].tolist() == [[-8, -6], [0, 2]] and not shortcut[..., 1:].any()


@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), (1, 1), ((1, 1), (1, 1))),
                                                   ((3, 3), (2, 2), ((0, 1), (0, 1))),
                                                   ((1, 1), (2, 2), ((0, 0), (0, 0))),
                                                   ((7, 7), (2, 2), ((3, 3), (3, 3)))])
def test_the_emulations_im2col_rows_are_the_kernels(kernel, stride, padding):
    """The integer layers cut their input into rows in NumPy; the rows must be kernels.nm.im2col's
    (the order the weights are laid out in), for strides and asymmetric padding too."""
    x = RNG.integers(-128, 128, size=(2, 9, 11, 5), dtype=np.int8)
    layer = type("Layer", (), {"kind": "conv", "kernel": kernel, "stride": stride, "padding": padding})()
    expected, (b, ho, wo) = nm.im2col(x, kernel, stride, padding)
    np.testing.assert_array_equal(q.im2col(layer, x), np.asarray(expected).reshape(b, ho * wo, -1))
