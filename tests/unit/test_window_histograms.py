"""HASS's window histograms measured on a network's inputs (`cooptim.nn.histograms`)."""

import numpy as np
import pytest

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


def test_csp_cascade_lengths_reach_the_report_but_not_the_training_objective():
    """A trained CSP layer's mask gives the cost model each weight row's cascade length (so it
    pays the rows run together's longest); the training objective's network, whose masks still
    move, keeps the pattern's nominal fraction."""
    cfg = config.from_dict({"name": "x", "sparsity": {
        "default": {"method": "csp", "weight_density": 0.5, "chunk": 4, "ramp_end": 0.0},
        "layers": {"conv1": {"method": "dense"}, "head": {"method": "dense"}}}})
    model = nn.build_model(cfg, (8, 8, 1), 10)
    nn.set_progress(model, 1.0)
    nn.refresh_masks(model, 0)
    graph = nn.graph_of(model, (8, 8, 1))
    net = hardware.network_of(model, graph, cfg.hardware, cascades=True)
    layers = {layer.layer_name: layer for _, layer in nn.sparse_layers(model)}
    for name in ("conv2", "conv3"):
        pattern = net.patterns[net.names.index(name)]
        mask = np.asarray(layers[name].mask())  # (3, 3, C_in, C_out): rows tap-major, then channel
        rows = mask.reshape(-1, mask.shape[-1]).reshape(-1, mask.shape[-1] // 4, 4).any(-1).sum(-1)
        assert pattern.lengths == tuple(rows.tolist())
        assert pattern.kept == pytest.approx(mask.mean()) and 0.3 < pattern.kept < 0.7  # pruned to about half
    assert hardware.measured_cascades(model) == ["conv2", "conv3"]
    nominal = hardware.network_of(model, graph, cfg.hardware)
    assert all(getattr(p, "lengths", None) is None for p in nominal.patterns)
