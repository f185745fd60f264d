"""The report of a run whose accelerator is the overlay (one PE array for every node)."""

from cooptim import config, hardware, nn


def test_the_overlay_accelerator_reports_its_one_engine():
    """`hardware.accelerator: overlay` costs the network on one PE array: the report has its
    throughput and DSP, and no per-node resources (every node runs on the same engine)."""
    cfg = config.from_dict({"name": "x", "hardware": {"accelerator": "overlay", "pe_in": 8, "pe_out": 8},
                            "sparsity": {"default": {"method": "nm", "n": 2, "m": 4},
                                         "layers": {"conv1": {"method": "dense"}, "head": {"method": "dense"}}}})
    model = nn.build_model(cfg, (8, 8, 1), 10)
    report = hardware.hardware_report(model, nn.graph_of(model, (8, 8, 1)), cfg)
    assert report["accelerator"] == "overlay"
    assert report["sparse"]["dsp"] == report["dense"]["dsp"] == 64 * 1  # 8 x 8 multipliers, 16-bit: one DSP each
    assert report["speedup"] > 1.0
    assert all(node["dsp"] is None and node["bram18"] is None for node in report["nodes"])
    assert report["bottleneck_layer"] in report["layer_names"]
