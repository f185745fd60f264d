"""Exact resume in every mode: a run interrupted between checkpoints and resumed ends with the same
weights, the same integer folding and the same learned folding as an uninterrupted run."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from flax import nnx

from cooptim import config, train
from cooptim.train.checkpoint import Checkpoints

from interrupt import StopAt

REPO = Path(__file__).resolve().parents[2]


def mode_config(mode, tmp_path, name):
    base = {"bdwp": "digits_bdwp", "dynamic_cost_aware": "digits_dynamic",
            "learned_folding": "digits_cost_aware"}[mode]
    raw = yaml.safe_load((REPO / f"configs/{base}.yaml").read_text())
    raw.update(name=name, output_dir=str(tmp_path))
    raw["data"] = {**raw.get("data", {}), "batch_size": 32}
    # checkpoints at 20 and 40; the cut run stops at 30 and resumes from 20
    raw["train"] = {"steps": 40, "eval_every": 1000, "checkpoint_every": 20, "log_every": 10}
    if mode == "dynamic_cost_aware":  # a DSE re-solve at the checkpoint step the run resumes from
        raw["objective"] = {"weight": 1.0, "dse_every": 20, "density_target": 0.5, "density_weight": 20.0}
    if mode == "learned_folding":
        raw["objective"].update(folding="learned", folding_lr=0.1)
    return config.from_dict(raw)


def restored_state(cfg):
    _, _, _, _, state = train.setup(cfg)
    checkpoints = Checkpoints(cfg.run_dir / "checkpoints")
    checkpoints.restore(checkpoints.latest_step(), state)
    checkpoints.close()
    return state


@pytest.mark.parametrize("mode", ["bdwp", "dynamic_cost_aware", "learned_folding"])
def test_interrupted_and_uninterrupted_runs_end_identically(tmp_path, mode):
    full, cut = mode_config(mode, tmp_path, "full"), mode_config(mode, tmp_path, "cut")
    report = train.run(full)
    with pytest.raises(KeyboardInterrupt):
        train.run(cut, reporter=StopAt(30))
    resumed = train.run(cut, resume=True)
    a, b = restored_state(full), restored_state(cut)
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # weights, optimizer, foldings
    assert resumed["test_accuracy"] == report["test_accuracy"]
    assert resumed["hardware"]["sparse"]["folding"] == report["hardware"]["sparse"]["folding"]
    if mode == "dynamic_cost_aware":
        history = json.loads((cut.run_dir / "folding.json").read_text())
        assert [h["step"] for h in history] == [0, 20]
        assert history == json.loads((full.run_dir / "folding.json").read_text())
    if mode == "learned_folding":
        initial = json.loads((full.run_dir / "folding.json").read_text())
        assert [h["step"] for h in initial] == [0]  # solved once, then learned
        learned = report["hardware"]["learned_folding"]
        moved = [abs(np.log(np.array(learned[f])) - np.log(np.array(initial[0]["folding"][f]))).max()
                 for f in ("coarse_in", "coarse_out", "fine")]
        assert max(moved) > 0.05, moved  # the gradient moved the folding
        assert resumed["hardware"]["learned_folding"] == learned


def quick(tmp_path, name):
    raw = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    raw.update(name=name, output_dir=str(tmp_path))
    raw["train"] = {"steps": 30, "eval_every": 1000, "checkpoint_every": 10, "log_every": 10}
    return config.from_dict(raw)


@pytest.mark.parametrize("damage", ["truncated", "emptied"])
def test_resume_falls_back_from_an_unreadable_newest_checkpoint(tmp_path, damage):
    full, cut = quick(tmp_path, "full"), quick(tmp_path, "cut")
    report = train.run(full)
    with pytest.raises(KeyboardInterrupt):
        train.run(cut, reporter=StopAt(25))  # checkpoints at 10 and 20
    newest = cut.run_dir / "checkpoints" / "20"
    files = [p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 0]
    for f in files:
        if damage == "truncated":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        else:
            f.unlink()
    with pytest.warns(UserWarning, match="checkpoint 20 of .* cannot be read"):
        resumed = train.run(cut, resume=True)
    # it resumed from step 10 and, the batches being a function of the step, ends where the
    # uninterrupted run ends
    assert resumed["steps"] == 30 and resumed["test_accuracy"] == report["test_accuracy"]
    a, b = restored_state(full), restored_state(cut)
    for x, y in zip(jax.tree.leaves(nnx.state(a.model)), jax.tree.leaves(nnx.state(b.model))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_two_runs_with_the_same_seed_write_the_same_report(tmp_path):
    a, b = quick(tmp_path / "a", "same"), quick(tmp_path / "b", "same")
    train.run(a)
    train.run(b)
    assert (a.run_dir / "report.json").read_bytes() == (b.run_dir / "report.json").read_bytes()
