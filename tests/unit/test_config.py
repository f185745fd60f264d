"""Config loading: types, ranges, unknown keys, overrides, and errors that name key and file."""

import pytest
import yaml

import cost_models as cm
from cooptim import config, hardware, nn
from cooptim.config import ConfigError
from cooptim.nn import build_model
from cooptim.sparsity import NM, Dense


def write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_quickstart_config_loads_with_overrides_for_first_and_last_layer():
    cfg = config.load("configs/quickstart.yaml")
    assert cfg.name == "quickstart"
    assert cfg.sparsity.default == NM(n=2, m=4, axis="input", decay=2e-4)
    assert cfg.sparsity.layers == {"conv1": Dense(), "head": Dense()}


@pytest.mark.parametrize("path", ["configs/quickstart.yaml", "configs/dense_digits.yaml",
                                  "configs/cifar10_resnet20_nm.yaml"])
def test_shipped_configs_are_valid(path):
    config.load(path)


def test_defaults_are_filled_and_round_trip(tmp_path):
    cfg = config.from_dict({"name": "x"})
    assert cfg.optimizer.learning_rate == 1e-3 and cfg.train.epochs == 30
    config.save(cfg, tmp_path / "c.yaml")
    assert config.load(tmp_path / "c.yaml") == cfg


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, {"name": "x", "optimizer": {"learnig_rate": 0.1}})
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert str(path) in str(e.value) and "unknown key 'optimizer.learnig_rate'" in str(e.value)


def test_negative_learning_rate_names_key_value_and_file(tmp_path):
    path = write(tmp_path, {"name": "x", "optimizer": {"learning_rate": -0.1}})
    with pytest.raises(ConfigError) as e:
        config.load(path)
    msg = str(e.value)
    assert str(path) in msg and "'optimizer.learning_rate' = -0.1" in msg and "greater than 0" in msg


def test_n_greater_than_m_is_rejected(tmp_path):
    path = write(tmp_path, {"name": "x", "sparsity": {"default": {"method": "nm", "n": 5, "m": 4}}})
    with pytest.raises(ConfigError) as e:
        config.load(path)
    msg = str(e.value)
    assert str(path) in msg and "sparsity.default" in msg and "N=5 is greater than M=4" in msg


def test_m_not_dividing_the_axis_names_key_layer_and_file(tmp_path):
    path = write(tmp_path, {"name": "x", "sparsity": {"default": {"method": "nm", "n": 1, "m": 3},
                                                      "layers": {"conv1": {"method": "dense"}}}})
    cfg = config.load(path)
    with pytest.raises(ConfigError) as e:
        build_model(cfg, (8, 8, 1), 10, source=str(path))
    msg = str(e.value)
    assert str(path) in msg and "'sparsity.default'" in msg
    assert "layer 'conv2'" in msg and "M=3 does not divide the input axis" in msg and "size 16" in msg


def test_layer_override_that_breaks_a_layer_names_the_override_key(tmp_path):
    cfg = config.from_dict({"name": "x", "sparsity": {"default": {"method": "dense"},
                                                      "layers": {"conv*": {"method": "nm", "n": 2, "m": 4}}}})
    with pytest.raises(ConfigError, match=r"'sparsity.layers.conv\*': layer 'conv1'"):
        build_model(cfg, (8, 8, 1), 10, source="f.yaml")


def test_override_pattern_that_matches_no_layer_is_an_error():
    cfg = config.from_dict({"name": "x", "sparsity": {"default": {"method": "dense"},
                                                      "layers": {"conv9": {"method": "dense"}}}})
    with pytest.raises(ConfigError, match="'sparsity.layers.conv9' matches no layer of digits_cnn"):
        build_model(cfg, (8, 8, 1), 10, source="f.yaml")


@pytest.mark.parametrize("section, value, expected", [
    ({"train": {"epochs": 2.5}}, 2.5, "'train.epochs' = 2.5: Input should be a valid integer"),
    ({"train": {"epochs": "3"}}, "3", "'train.epochs' = '3'"),
    ({"data": {"augment": "yes"}}, "yes", "'data.augment' = 'yes'"),
    ({"model": {"name": "resnet1000"}}, None, "'model.name' = 'resnet1000'"),
    ({"sparsity": {"default": {"method": "magic"}}}, None, "'sparsity.default.method' = 'magic' is not a known"),
    ({"sparsity": {"default": {"n": 2}}}, None, "'sparsity.default' needs a 'method'"),
    ({"data": {"test_fraction": 1.5}}, None, "'data.test_fraction' = 1.5"),
    ({"hardware": {"memory": "offchip"}}, None, "'hardware.memory' = 'offchip'"),
    ({"hardware": {"resource_budget": 1.5}}, None, "'hardware.resource_budget' = 1.5"),
    ({"hardware": {"ram": "bram"}}, None, "'hardware.ram' = 'bram'"),
])
def test_wrong_types_and_ranges(section, value, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        config.from_dict({"name": "x", **section}, source="f.yaml")


def test_missing_name_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="required key 'name' is missing"):
        config.from_dict({})
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(tmp_path / "nope.yaml")


def test_set_overrides_are_typed_and_named_in_errors(tmp_path):
    path = write(tmp_path, {"name": "x", "seed": 0})
    cfg = config.load(path, ["optimizer.learning_rate=0.05", "sparsity.default={method: nm, n: 1, m: 4}",
                             "train.steps=7"])
    assert cfg.optimizer.learning_rate == 0.05 and cfg.sparsity.default.n == 1 and cfg.train.steps == 7
    with pytest.raises(ConfigError, match=r"--set optimizer\.learning_rate\): 'optimizer\.learning_rate' = -1"):
        config.load(path, ["optimizer.learning_rate=-1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config.load(path, ["optimizer.learning_rate"])
    with pytest.raises(ConfigError, match="'seed' is a value, not a section"):
        config.load(path, ["seed.x=1"])


def test_configs_are_frozen():
    cfg = config.from_dict({"name": "x"})
    with pytest.raises(Exception):
        cfg.seed = 3


def test_the_hardware_ram_model_reaches_the_dse():
    """`hardware.ram: hls` counts every memory in BRAM (fpgaConvNet's hls backend): the digits CNN's
    small weight memories, in LUTRAM by default, then take blocks, and the DSE sees them."""
    bram = {}
    for ram in ("lutram", "hls"):
        cfg = config.from_dict({"name": "x", "sparsity": {"default": {"method": "dense"}}, "hardware": {"ram": ram}})
        model = build_model(cfg, (8, 8, 1), 10)
        net = hardware.network_of(model, nn.graph_of(model, (8, 8, 1)), cfg.hardware)
        cost = hardware.evaluate(net, cm.Density.dense(net), cfg, hardware.device_of(cfg.hardware))
        bram[ram] = cost["bram18"]
    assert bram["hls"] > bram["lutram"]
