"""Training end to end on digits: report, masks on the trained checkpoint, resume, CLI errors."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cooptim import config, train
from cooptim.run import load_run
from cooptim.nn import sparse_layers
from cooptim.sparsity.nm import count_per_group

from interrupt import StopAt

REPO = Path(__file__).resolve().parents[2]


def quick_cfg(tmp_path, name="t", **sections):
    raw = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    raw["name"] = name
    raw["output_dir"] = str(tmp_path)
    raw["train"] = {"steps": 300, "eval_every": 100, "checkpoint_every": 100, "log_every": 10}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return config.from_dict(raw)


def restore_model(cfg, step):
    """The model of checkpoint `step` of a run, loaded as a user would."""
    _, model, _ = load_run(cfg.run_dir, step)
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = quick_cfg(tmp_path_factory.mktemp("runs"))
    return cfg, train.run(cfg)


def test_run_folder_and_report(trained):
    cfg, report = trained
    files = {p.name for p in cfg.run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "checkpoints", "masks.npz", "report.json"} <= files
    assert config.load(cfg.run_dir / "config.yaml") == cfg
    assert json.loads((cfg.run_dir / "report.json").read_text()) == report
    assert report["steps"] == 300 and report["test_accuracy"] > 0.9  # chance is 0.1
    assert report["pattern_ok"]
    by_name = {row["name"]: row for row in report["layers"]}
    assert by_name["conv2"]["density"] == 0.5 and by_name["conv1"]["density"] == 1.0
    assert by_name["conv2"]["effective_macs"] == by_name["conv2"]["macs"] / 2
    steps = [json.loads(l)["step"] for l in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 300 and steps == sorted(steps)


def test_report_has_the_hardware_cost_of_sparse_and_dense(trained):
    _, report = trained
    hw = report["hardware"]
    assert hw["device"] == "zcu102" and hw["accelerator"] == "dataflow"
    # conv2 and conv3 are 2:4 and hold ~98% of the MACs: at most 2x faster; less, because the
    # ReLU and pool engines, which sparsity does not speed up, take LUTs for their streams
    assert 1.3 < hw["speedup"] <= 2.0 + 1e-6
    for design in ("sparse", "dense"):
        assert all(0 < u <= 1 for k, u in hw[design]["utilisation"].items() if k != "bandwidth")
    assert hw["bottleneck_layer"] in {row["name"] for row in report["layers"]}
    assert all(row["cycles"] > 0 for row in report["layers"])


def test_unknown_device_fails_before_training(tmp_path):
    cfg = quick_cfg(tmp_path, hardware={"device": "zcu1O2"})
    with pytest.raises(config.ConfigError, match="'hardware.device': unknown device 'zcu1O2'; known devices"):
        train.run(cfg, source="q.yaml")
    assert not cfg.run_dir.exists()


def test_trained_checkpoint_masks_are_exactly_n_of_m(trained):
    cfg, _ = trained
    model = restore_model(cfg, 300)
    exported = np.load(cfg.run_dir / "masks.npz")
    checked = 0
    for _, layer in sparse_layers(model):
        mask = np.asarray(layer.mask())
        np.testing.assert_array_equal(mask, exported[layer.layer_name])
        if layer.sparsity.method == "nm":
            counts = count_per_group(exported[layer.layer_name], 4, layer.layout.in_axis)
            assert (counts == 2).all(), layer.layer_name
            # the effective (forward) weights have at most N non-zeros per group
            eff = np.asarray(layer.effective_kernel())
            assert (count_per_group(eff, 4, layer.layout.in_axis) <= 2).all()
            checked += 1
    assert checked == 2


def test_resume_after_interrupt_gives_the_same_weights(tmp_path):
    short = {"steps": 120, "checkpoint_every": 40}
    full, cut = quick_cfg(tmp_path / "a", train=short), quick_cfg(tmp_path / "b", train=short)
    train.run(full)
    with pytest.raises(KeyboardInterrupt):
        train.run(cut, reporter=StopAt(70))
    assert not (cut.run_dir / "report.json").exists()
    report = train.run(cut, resume=True)
    assert report["steps"] == 120
    logged = [json.loads(l) for l in (cut.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == list(range(10, 130, 10))
    a, b = restore_model(full, 120), restore_model(cut, 120)
    for (_, la), (_, lb) in zip(sparse_layers(a), sparse_layers(b)):
        np.testing.assert_array_equal(la.kernel[...], lb.kernel[...])


def test_resume_after_kill_ends_at_the_same_step_count(tmp_path):
    cfg_path = tmp_path / "kill.yaml"
    raw = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    raw.update(name="kill", output_dir=str(tmp_path))
    raw["train"] = {"steps": 200, "checkpoint_every": 50, "eval_every": 1000}
    cfg_path.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "cooptim.train", "--config", str(cfg_path), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = tmp_path / "kill" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "kill" / "report.json").exists(), "the run finished before it was killed"
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "kill" / "report.json").read_text())
    assert report["steps"] == 200
    logged = [json.loads(l) for l in (tmp_path / "kill" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in logged if "loss" in r]
    assert train_steps == list(range(10, 210, 10))  # every step logged once, none lost


def test_existing_run_folder_is_not_overwritten_without_force(trained, tmp_path):
    cfg, _ = trained
    with pytest.raises(train.RunError, match="already exists: pass --resume .* or --force"):
        train.run(cfg)


def test_resume_with_a_different_config_names_the_keys(trained):
    cfg, _ = trained
    changed = config.from_dict({**config.to_dict(cfg), "seed": 5})
    with pytest.raises(train.RunError, match="differs .* at seed"):
        train.run(changed, resume=True)


def test_cli_reports_bad_config_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "output_dir": str(tmp_path / "runs"),
                                   "sparsity": {"default": {"method": "nm", "n": 2, "m": 3}}}))
    done = subprocess.run([sys.executable, "-m", "cooptim.train", "--config", str(bad)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert f"error: {bad}: 'sparsity.default': layer 'conv1'" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_load_run_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(train.RunError, match="is not a run folder"):
        load_run(tmp_path)


def test_nm_with_a_mask_interval_trains_and_resumes_exactly(tmp_path):
    interval = {"steps": 120, "checkpoint_every": 40}
    nm = {"method": "nm", "n": 2, "m": 4, "mask_interval": 25}
    full = quick_cfg(tmp_path / "a", train=interval, sparsity={"default": nm})
    cut = quick_cfg(tmp_path / "b", train=interval, sparsity={"default": nm})
    report = train.run(full)
    assert report["pattern_ok"] and report["test_accuracy"] > 0.85
    with pytest.raises(KeyboardInterrupt):
        train.run(cut, reporter=StopAt(70))
    train.run(cut, resume=True)
    a, b = restore_model(full, 120), restore_model(cut, 120)
    for (_, la), (_, lb) in zip(sparse_layers(a), sparse_layers(b)):
        np.testing.assert_array_equal(la.kernel[...], lb.kernel[...])
        np.testing.assert_array_equal(la.mask(), lb.mask())


def test_emulate_then_export_then_cpp_check_from_a_trained_run(trained, tmp_path, capsys):
    """The README's flow: integer accuracy within 1 point of float, then an export that the C++
    reference reproduces bit for bit."""
    import shutil

    from cooptim import emulate
    from cooptim.export.__main__ import main as export_main

    cfg, report = trained
    assert emulate.main([str(cfg.run_dir)]) == 0
    result = json.loads((cfg.run_dir / "emulation.json").read_text())
    assert result["float_accuracy"] == pytest.approx(report["test_accuracy"])
    assert abs(result["float_accuracy"] - result["integer_accuracy"]) <= 0.01
    assert [row["layer"] for row in result["layers"]] == ["conv1", "conv2", "conv3", "head"]
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    out = tmp_path / "hw"
    assert export_main([str(cfg.run_dir), "--out", str(out), "--check"]) == 0
    assert "PASS" in capsys.readouterr().out
    accel = json.loads((out / "accelerator.json").read_text())
    patterns = {node["name"]: node["layer"]["sparsity"]["pattern"] for node in accel["nodes"] if "layer" in node}
    assert patterns == {"conv1": "dense", "conv2": "nm", "conv3": "nm", "head": "dense"}
    assert accel["pipeline"]["throughput"] == pytest.approx(report["hardware"]["sparse"]["throughput"], rel=1e-6)
    # a second export to the same folder is refused, and the folder is left as it was
    before = sorted(p.name for p in out.rglob("*"))
    assert export_main([str(cfg.run_dir), "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before


def test_emulate_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    from cooptim import emulate

    cfg = quick_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    assert emulate.main([str(cfg.run_dir)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert not (cfg.run_dir / "emulation.json").exists()
    assert not (cfg.run_dir / "checkpoints").exists()  # nothing created in the user's folder
