"""HASS's window histograms measured on a network's inputs (`cooptim.nn.histograms`)."""

import numpy as np

from cooptim import config, hardware, nn
from cooptim.nn.histograms import window_counts

RNG = np.random.default_rng(0)


def test_window_counts_are_the_brute_force_count_per_channel():
    x = RNG.normal(size=(2, 5, 6, 3)).astype(np.float32)
    nonzero = RNG.random((3, 3, 3, 4)) < 0.6
    counts = np.asarray(window_counts(x, nonzero, (3, 3), (2, 1), ((1, 1), (0, 1)), threshold=0.3))
    padded = np.pad(np.abs(x) > 0.3, ((0, 0), (1, 1), (0, 1), (0, 0)))
    expected = np.zeros((3, 10), np.int64)
    for b in range(2):
        for i in range(0, padded.shape[1] - 2, 2):
            for j in range(padded.shape[2] - 2):
                window = padded[b, i:i + 3, j:j + 3, :]  # (3, 3, C)
                for c in range(3):
                    for f in range(4):
                        expected[c, int((window[..., c] & nonzero[..., c, f]).sum())] += 1
    np.testing.assert_array_equal(counts, expected)


def test_measured_histograms_reach_the_hardware_report():
    cfg = config.from_dict({"name": "x", "sparsity": {
        "default": {"method": "unstructured", "weight_density": 0.5, "activation_threshold": 0.1},
        "layers": {"conv1": {"method": "dense"}, "head": {"method": "dense"}}}})
    model = nn.build_model(cfg, (8, 8, 1), 10)
    images = RNG.normal(size=(16, 8, 8, 1)).astype(np.float32)
    histograms = nn.measure_window_histograms(model, [images])
    assert sorted(histograms) == ["conv2", "conv3"]
    assert histograms["conv2"].shape == (16, 10)
    np.testing.assert_allclose(histograms["conv2"].sum(axis=1), 1.0)
    net = hardware.network_of(model, nn.graph_of(model, (8, 8, 1)), cfg.hardware, histograms=histograms)
    pattern = net.patterns[net.names.index("conv2")]
    np.testing.assert_array_equal(np.array(pattern.histograms), histograms["conv2"])
