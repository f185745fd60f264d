"""Loading torchvision weights: the fixtures in tests/fixtures/torchvision were made by torchvision
itself (make_fixtures.py there); here they load with safetensors alone, no torch."""

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from cooptim import config, nn, pretrained

FIXTURES = Path(__file__).parents[1] / "fixtures" / "torchvision"
sys.path.insert(0, str(FIXTURES))
from inputs import FIXTURES as SPECS, NUM_CLASSES, images  # noqa: E402

pytest.importorskip("safetensors")


def build(name, **model):
    spec = SPECS[name]
    keys = {"name": spec["model"], "width": spec["width"], **model}
    if "hidden" in spec:
        keys["classifier_width"] = spec["hidden"]
    cfg = config.from_dict({"name": "p", "model": keys, "sparsity": {"default": {"method": "dense"}}})
    return nn.build_model(cfg, spec["image"], NUM_CLASSES)


def logits(model, name):
    model.eval()
    return np.asarray(model(jnp.asarray(images(SPECS[name]["image"]))))


@pytest.mark.parametrize("name", list(SPECS))
def test_torchvision_weights_give_torchvisions_logits(name):
    model = build(name)
    path = FIXTURES / f"{name}.safetensors"
    summary = pretrained.load_torchvision(model, pretrained.read_state_dict(path), source=str(path), model_name=name)
    assert summary.kept == () and summary.tensors > 0
    expected = np.load(FIXTURES / f"{name}.logits.npy")
    np.testing.assert_allclose(logits(model, name), expected, atol=1e-4, rtol=0)


def state_of(name):
    return pretrained.read_state_dict(FIXTURES / f"{name}.safetensors")


def load(model, state, **options):
    return pretrained.load_torchvision(model, state, source="w.safetensors", model_name="resnet18", **options)


def test_another_architectures_file_names_its_first_foreign_key_and_changes_nothing():
    model = build("resnet18")
    before = np.asarray(model.stem.conv.kernel[...]).copy()
    with pytest.raises(pretrained.PretrainedError, match=r"w.safetensors: key '[^']+' \(262 unexpected in all\) .* another architecture"):
        load(model, state_of("mobilenet_v2"))
    np.testing.assert_array_equal(np.asarray(model.stem.conv.kernel[...]), before)


def test_a_wrong_shape_names_the_key_the_layer_and_both_shapes_and_loads_nothing():
    state = state_of("resnet18")
    state["fc.weight"], state["fc.bias"] = np.zeros((1000, 64), np.float32), np.zeros(1000, np.float32)
    model = build("resnet18")
    before = np.asarray(model.stem.conv.kernel[...]).copy()
    with pytest.raises(pretrained.PretrainedError,
                       match=r"key 'fc.weight' has shape 1000x64 but cooptim's layer 'head' needs 10x64 .*keep_initial"):
        load(model, state)
    np.testing.assert_array_equal(np.asarray(model.stem.conv.kernel[...]), before)


def test_keep_initial_leaves_the_head_for_a_new_number_of_classes():
    state = state_of("resnet18")
    state["fc.weight"], state["fc.bias"] = np.zeros((1000, 64), np.float32), np.zeros(1000, np.float32)
    model = build("resnet18")
    head = np.asarray(model.head.kernel[...]).copy()
    summary = load(model, state, keep_initial=["head"])
    assert summary.kept == ("head",) and "stem" in summary.loaded
    np.testing.assert_array_equal(np.asarray(model.head.kernel[...]), head)
    np.testing.assert_array_equal(np.asarray(model.stem.conv.kernel[...]),
                                  state["conv1.weight"].transpose(2, 3, 1, 0))
    with pytest.raises(pretrained.PretrainedError, match=r"keep_initial pattern 'fc' matches no layer"):
        load(build("resnet18"), state, keep_initial=["fc"])


def test_a_missing_key_is_named():
    state = state_of("resnet18")
    del state["layer3.0.downsample.1.running_var"]
    with pytest.raises(pretrained.PretrainedError,
                       match=r"key 'layer3.0.downsample.1.running_var' \(cooptim layer 'layer3.0.downsample'\) is missing"):
        load(build("resnet18"), state)


def test_adapt_input_channels_sums_rgb_for_one_channel_images():
    state = state_of("resnet18")
    spec = dict(SPECS["resnet18"], image=(64, 64, 1))
    cfg = config.from_dict({"name": "p", "model": {"name": "resnet18", "width": 8},
                            "sparsity": {"default": {"method": "dense"}}})
    gray = nn.build_model(cfg, spec["image"], NUM_CLASSES)
    with pytest.raises(pretrained.PretrainedError, match=r"key 'conv1.weight' has shape 8x3x7x7 .* needs 8x1x7x7 .*adapt_input_channels"):
        load(gray, state)
    load(gray, state, adapt_input_channels=True)
    # a gray image is an RGB image with three equal channels: the adapted conv gives the same logits
    rgb = build("resnet18")
    load(rgb, state)
    x = images((64, 64, 1))
    gray.eval(), rgb.eval()
    np.testing.assert_allclose(np.asarray(gray(jnp.asarray(x))), np.asarray(rgb(jnp.asarray(np.repeat(x, 3, -1)))),
                               atol=1e-4)


def test_a_model_without_torchvision_counterpart_is_refused():
    cfg = config.from_dict({"name": "p", "sparsity": {"default": {"method": "dense"}}})
    with pytest.raises(pretrained.PretrainedError, match=r"digits_cnn has no torchvision counterpart"):
        pretrained.load_torchvision(nn.build_model(cfg, (8, 8, 1), 10), {}, source="w", model_name="digits_cnn")


@pytest.mark.parametrize("content, suffix, message", [
    (b"not a safetensors file", ".safetensors", "not a readable safetensors file"),
    (b"{}", ".npz", "unknown format '.npz'"),
])
def test_unreadable_files_are_one_clear_error(tmp_path, content, suffix, message):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(content)
    with pytest.raises(pretrained.PretrainedError, match=message):
        pretrained.read_state_dict(path)
    with pytest.raises(pretrained.PretrainedError, match="no such file"):
        pretrained.read_state_dict(tmp_path / "absent.safetensors")


def test_loading_recomputes_stored_masks_and_opens_dpacs_gates():
    spec = SPECS["resnet18"]
    cfg = config.from_dict({"name": "p", "model": {"name": "resnet18", "width": 8}, "sparsity": {
        "default": {"method": "dense"},
        "layers": {"layer1.0.conv1": {"method": "nm", "n": 2, "m": 4, "mask_interval": 5},
                   "layer2.0.conv1": {"method": "dynamic", "target": 0.5, "gate_bias": -1.0}}}})
    model = nn.build_model(cfg, spec["image"], NUM_CLASSES)
    load(model, state_of("resnet18"))
    nm_layer = model.blocks[0].units[0].conv
    np.testing.assert_array_equal(np.asarray(nm_layer.stored_mask[...]),
                                  np.asarray(nm_layer.sparsity.mask(nm_layer.kernel[...], nm_layer.layout)))
    model.eval()
    _, taps = nn.capture(model, jnp.asarray(images(spec["image"])), nn.GateTap)
    (record,) = taps[nn.GateTap].values()  # the gate_bias of -1 would have closed every gate
    assert float(record.density) == 1.0


def test_a_dense_design_that_cannot_fit_the_device_stops_the_run_before_training(tmp_path):
    from cooptim import train
    cfg = config.from_dict({"name": "big", "output_dir": str(tmp_path), "model": {"name": "resnet18", "width": 64},
                            "sparsity": {"default": {"method": "dense"}}, "train": {"steps": 2}})
    with pytest.raises(config.ConfigError, match=r"'hardware.device': layer '[^']+' alone needs \d+% of the "
                                                 r"zcu102's BRAM18 .* the report's dense design must fit"):
        train.run(cfg)
    assert not (tmp_path / "big").exists()
