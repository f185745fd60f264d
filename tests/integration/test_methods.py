"""Every sparsity method trains the digits CNN and keeps its pattern's invariant on the trained weights."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from cooptim import config, nn, train
from cooptim.run import load_run
from cooptim.nn import sparse_layers
from cooptim.sparsity import CSP, BalancedGroup
from cooptim.sparsity.csp import cascade_lengths
from cooptim.sparsity.nm import count_per_group

REPO = Path(__file__).resolve().parents[2]


def trained(tmp_path, method_config, steps=150):
    raw = yaml.safe_load((REPO / f"configs/digits_{method_config}.yaml").read_text())
    raw["output_dir"] = str(tmp_path)
    raw["train"] = {"steps": steps, "eval_every": 1000, "checkpoint_every": steps}
    cfg = config.from_dict(raw)
    report = train.run(cfg)
    _, model, _ = load_run(cfg.run_dir)
    pruned = [layer for _, layer in sparse_layers(model) if layer.sparsity.method != "dense"]
    assert [l.layer_name for l in pruned] == ["conv2", "conv3"]
    assert report["test_accuracy"] > 0.85, report["test_accuracy"]  # chance is 0.10
    assert report["pattern_ok"]
    return report, pruned


def test_bdwp(tmp_path):
    """Trains with SAT's 2:8 (the passes themselves: tests/unit/test_methods_unit.py)."""
    report, layers = trained(tmp_path, "bdwp")
    for layer in layers:
        w = np.asarray(layer.effective_kernel())
        assert (count_per_group(w != 0, 8, layer.layout.in_axis) <= 2).all()  # forward: 2:8 along input
    # 2:8 quarters the convs' work (they hold ~98% of the MACs); the design gains less, because the
    # ReLU and pool engines, which sparsity does not speed up, need streams, each 2:8 multiplier its
    # 8:1 choice of activation (2 LUTs per bit), and the ZCU102's LUTs bound both designs (1.44x)
    hw = report["hardware"]
    assert 1.3 < hw["speedup"] <= 4.0 + 1e-6 and hw["sparse"]["dsp"] < hw["dense"]["dsp"]


def test_balanced_group_keeps_the_same_count_in_every_group(tmp_path):
    report, layers = trained(tmp_path, "balanced_group")
    for layer in layers:
        assert isinstance(layer.sparsity, BalancedGroup) and layer.sparsity.group == 16  # hardware.pe_in
        counts = count_per_group(np.asarray(layer.mask()), 16, layer.layout.in_axis)
        assert (counts == 4).all()
    by_name = {r["name"]: r for r in report["layers"]}
    assert by_name["conv2"]["density"] == 0.25


def test_balanced_group_prunes_gradually():
    method = BalancedGroup(keep=4, group=16, ramp_start=0.0, ramp_end=0.5)
    kept = [float(method.kept(p)) for p in (0.0, 0.1, 0.25, 0.5, 0.9)]
    assert kept[0] == 16 and kept[-2] == kept[-1] == 4 and kept == sorted(kept, reverse=True)


def test_csp_rows_keep_a_prefix_of_whole_chunks(tmp_path):
    report, layers = trained(tmp_path, "csp")
    for layer in layers:
        mask = np.asarray(layer.mask())
        rows = np.moveaxis(mask, layer.layout.out_axis, -1).reshape(-1, mask.shape[layer.layout.out_axis])
        chunks = rows.reshape(rows.shape[0], -1, 4)
        assert ((chunks.sum(-1) == 0) | (chunks.sum(-1) == 4)).all()  # whole chunks
        kept = chunks.any(-1)
        assert (np.diff(kept.astype(int), axis=1) <= 0).all()  # a prefix: no kept chunk after a pruned one
        lengths = cascade_lengths(mask, layer.layout, 4)
        assert (kept.sum(-1) == lengths).all() and lengths.min() >= 0
        assert abs(mask.mean() - 0.25) < 0.05


def test_csp_check_catches_a_broken_cascade():
    method = CSP(weight_density=0.5, chunk=2)
    from cooptim.sparsity import WeightLayout

    layout = WeightLayout((2, 4), in_axis=0, out_axis=1)
    assert method.check(np.array([[1, 1, 0, 0], [1, 1, 1, 1]]), layout).ok
    assert not method.check(np.array([[0, 0, 1, 1], [1, 1, 1, 1]]), layout).ok  # not a prefix
    assert not method.check(np.array([[1, 0, 0, 0], [1, 1, 1, 1]]), layout).ok  # half a chunk


def test_unstructured_reaches_its_weight_density(tmp_path):
    """Trains HASS's unstructured pattern to density 0.25 (thresholds: tests/unit/test_methods_unit.py)."""
    report, layers = trained(tmp_path, "unstructured")
    for layer in layers:
        assert abs(np.asarray(layer.mask()).mean() - 0.25) < 0.01
    by_name = {r["name"]: r for r in report["layers"]}
    assert by_name["conv2"]["pattern"].startswith("unstructured")


def test_reports_measure_the_activation_density_that_hass_engines_skip(tmp_path):
    """HASS's engines skip zero activations: the report measures each unstructured layer's input
    density after its threshold on the test set, recomputed here from the layers' inputs, and its
    work (density, effective MACs, the cost model's designs) is weight x activation density."""
    report, layers = trained(tmp_path, "unstructured", steps=60)
    cfg = config.load(str(REPO / "configs/digits_unstructured.yaml"), [f"output_dir={tmp_path}"])
    _, model, dataset = load_run(cfg.run_dir)
    images, _ = dataset.test.get(np.arange(len(dataset.test)))
    _, taps = nn.capture(model, jnp.asarray(images), nn.LayerInput)
    by_name = {r["name"]: r for r in report["layers"]}
    for layer in layers:
        x = np.asarray(taps[nn.LayerInput][layer.layer_name][0])
        measured = float((np.abs(x) > layer.current_method().activation_threshold).mean())
        row = by_name[layer.layer_name]
        assert 0.05 < row["activation_density"] < 0.95  # ReLU zeros and the threshold's
        assert row["activation_density"] == pytest.approx(measured, abs=1e-6)
        assert row["density"] == pytest.approx(row["weight_density"] * row["activation_density"])
    assert "activation_density" not in by_name["conv1"]  # a dense layer skips nothing
    # HASS's engines pay through fewer multipliers (a smaller `fine`) at no lower throughput; here
    # the input streams of conv3 bound both designs within the ZCU102's LUTs
    sparse, dense = report["hardware"]["sparse"], report["hardware"]["dense"]
    assert sparse["throughput"] >= dense["throughput"] and sparse["dsp"] < dense["dsp"]
    assert report["hardware"]["measured_histograms"] == ["conv2", "conv3"]


def test_method_errors_name_the_layer():
    with pytest.raises(config.ConfigError, match="give exactly one of weight_density and weight_threshold"):
        config.from_dict({"name": "x", "sparsity": {"default": {"method": "unstructured"}}})
    cfg = config.from_dict({"name": "x", "hardware": {"pe_in": 12}, "sparsity": {
        "default": {"method": "balanced_group", "keep": 4}, "layers": {"conv1": {"method": "dense"}}}})
    from cooptim.nn import build_model

    with pytest.raises(config.ConfigError, match="layer 'conv2': group=12 .* does not divide its 16 input channels"):
        build_model(cfg, (8, 8, 1), 10, source="f.yaml")


def test_dynamic_masks_follow_the_input_and_meet_the_target(tmp_path):
    from cooptim import nn

    report, layers = trained(tmp_path, "dynamic", steps=300)  # the channel gates need longer to diverge
    _, model, dataset = load_run(tmp_path / "digits_dynamic")
    images, _ = dataset.test.get(np.arange(64))
    _, taps = nn.capture(model, jnp.asarray(images), nn.GateTap)
    gates = taps[nn.GateTap]
    assert sorted(gates) == ["conv2", "conv3"]
    for gate in gates.values():
        spatial, channel = np.asarray(gate.spatial), np.asarray(gate.channel)
        assert set(np.unique(spatial)) <= {0.0, 1.0} and set(np.unique(channel)) <= {0.0, 1.0}
        # per-input: different images switch different positions and channel groups on
        assert len({m.tobytes() for m in spatial}) > 10
        assert len({m.tobytes() for m in channel}) > 1
        assert 0.0 < spatial.mean() < 1.0
    for row in report["layers"]:
        if row["method"] == "dynamic":
            assert abs(row["density"] - 0.5) < 0.1, row  # the sparsity-target loss reached its target
            assert row["weight_density"] == 1.0
    assert report["hardware"]["speedup"] > 1.2  # half the convs' work; the ReLU and pool engines bound the rest


def test_dynamic_rejects_layers_it_cannot_gate():
    from cooptim.nn import build_model

    cfg = config.from_dict({"name": "x", "sparsity": {"default": {"method": "dynamic"}}})
    with pytest.raises(config.ConfigError, match="layer 'head': dynamic gating needs a conv layer"):
        build_model(cfg, (8, 8, 1), 10, source="f.yaml")
    cfg = config.from_dict({"name": "x", "sparsity": {"default": {"method": "dynamic", "channel_group": 3},
                                                      "layers": {"head": {"method": "dense"}}}})
    with pytest.raises(config.ConfigError, match="channel_group=3 does not divide its 16 output channels"):
        build_model(cfg, (8, 8, 1), 10, source="f.yaml")
    with pytest.raises(config.ConfigError, match="at least one of spatial and channel"):
        config.from_dict({"name": "x", "sparsity": {"default": {"method": "dynamic", "spatial": False,
                                                                "channel": False}}})
