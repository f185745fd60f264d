"""A fine-tune from torchvision weights, from a config: it starts where the loaded network is."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from cooptim import config, data, nn, pretrained, train
from cooptim.train.step import evaluate

REPO = Path(__file__).resolve().parents[2]


def finetune_cfg(tmp_path, **model):
    raw = yaml.safe_load((REPO / "configs/pretrained_digits.yaml").read_text())
    raw["output_dir"] = str(tmp_path)
    raw["model"]["pretrained"]["path"] = str(REPO / raw["model"]["pretrained"]["path"])
    raw["model"].update(model)
    raw["train"] = {"steps": 4, "eval_every": 2, "checkpoint_every": 4, "log_every": 2}
    return raw


def test_the_first_evaluation_of_a_dpacs_fine_tune_is_the_loaded_networks_accuracy(tmp_path):
    cfg = config.from_dict(finetune_cfg(tmp_path))
    train.run(cfg)
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if "test_accuracy" in r)
    assert first["step"] == 0
    # the same weights in a dense network, loaded apart from the run: DPACS's gates start open
    dense = config.from_dict({**finetune_cfg(tmp_path), "sparsity": {"default": {"method": "dense"}}})
    dataset = data.load(dense.data)
    model = nn.build_model(dense, dataset.image_shape, dataset.num_classes)
    pretrained.load_configured(model, dense)
    loaded = evaluate(model, dataset.test, dense.data.eval_batch_size)
    assert first["test_accuracy"] == loaded["accuracy"]
    assert abs(first["test_loss"] - loaded["loss"]) < 1e-5


def test_a_file_that_does_not_fit_is_one_error_line_naming_key_and_file(tmp_path):
    raw = finetune_cfg(tmp_path, width=16)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "cooptim.train", "--config", str(path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {path}: model.pretrained.path ")
    assert "key 'conv1.weight' has shape 8x3x7x7 but cooptim's layer 'stem' needs 16x3x7x7 (torch layout OIHW) (another width" in lines[0]
    assert not (tmp_path / raw["name"]).exists()
