"""The training state, its one step and its one checkpoint, on a tiny model (no training run)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from cooptim import config, train
from cooptim.train.checkpoint import Checkpoints

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def tiny_cfg(tmp_path, **sections):
    raw = {"name": "tiny", "output_dir": str(tmp_path), "data": {"batch_size": 8},
           "model": {"width": 4}, "train": {"steps": 10},
           "sparsity": {"default": {"method": "nm", "n": 2, "m": 4}, "layers": {"conv1": {"method": "dense"}}}}
    for key, value in sections.items():
        if key == "sparsity":
            raw[key] = value
        else:
            raw.setdefault(key, {}).update(value)
    return config.from_dict(raw)


def leaves(module):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module))]


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, 8, 8, 1)), jnp.float32), jnp.asarray(rng.integers(0, 10, n))


def run_steps(step_fn, state, steps, total=10, first=0):
    for s in range(first, first + steps):
        images, labels = batch(seed=s)
        step_fn(state, images, labels, jnp.int32(s), jnp.float32(s / total), jnp.float32((s + 1) / total),
                jnp.float32(1.0), jnp.float32(0.1))


def test_the_step_updates_the_weights_counts_and_leaves_the_progress_it_is_given(tmp_path):
    cfg = tiny_cfg(tmp_path)
    _, _, _, _, state = train.setup(cfg)
    before = np.asarray(state.model.conv2.kernel[...])
    run_steps(train.make_step(), state, 2)
    assert state.step == 2
    assert not np.array_equal(before, np.asarray(state.model.conv2.kernel[...]))
    assert float(state.model.conv2.progress[...]) == pytest.approx(0.2)


def test_dynamic_step_keeps_the_gate_activity_for_the_next_dse(tmp_path):
    raw = yaml.safe_load((REPO / "configs/digits_dynamic.yaml").read_text())
    cfg = tiny_cfg(tmp_path, sparsity=raw["sparsity"], objective={"weight": 1.0, "dse_every": 2})
    _, _, _, objective, state = train.setup(cfg)
    assert state.gates.as_dict() is None  # nothing measured before the first step
    run_steps(train.make_step(objective), state, 1)
    stats = state.gates.as_dict()
    assert sorted(stats) == ["conv2", "conv3"]
    assert all(0 < s["density"] <= 1 and 0 < s["channel"] <= 1 for s in stats.values())


@pytest.mark.parametrize("mode", ["nm_interval", "learned_folding", "dynamic_dse"])
def test_a_checkpoint_round_trip_restores_the_whole_state(tmp_path, mode):
    sections = {
        "nm_interval": {"sparsity": {"default": {"method": "nm", "n": 2, "m": 4, "mask_interval": 3},
                                     "layers": {"conv1": {"method": "dense"}}}},
        "learned_folding": {"sparsity": {"default": {"method": "csp", "weight_density": 0.5, "chunk": 2}},
                            "objective": {"weight": 1.0, "folding": "learned", "folding_lr": 0.1,
                                          "learn_density": True}},
        "dynamic_dse": {"sparsity": yaml.safe_load((REPO / "configs/digits_dynamic.yaml").read_text())["sparsity"],
                        "objective": {"weight": 1.0, "dse_every": 2}},
    }[mode]
    cfg = tiny_cfg(tmp_path, **sections)
    _, _, _, objective, state = train.setup(cfg)
    step = train.make_step(objective)
    start = [np.asarray(v) for v in state.net.folding.theta()] if state.net.folding is not None else None
    run_steps(step, state, 4)
    if start is not None:  # the one optimizer trains the learned folding (Adam at folding_lr 0.1)
        moved = [np.abs(np.asarray(v) - s).max() for v, s in zip(state.net.folding.theta(), start)]
        assert max(moved) > 0.05
    checkpoints = Checkpoints(tmp_path / "ckpt")
    checkpoints.save(4, state)
    checkpoints.close()
    _, _, _, _, fresh = train.setup(cfg)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(state), leaves(fresh)))
    checkpoints = Checkpoints(tmp_path / "ckpt")
    checkpoints.restore(4, fresh)
    checkpoints.close()
    for a, b in zip(leaves(state), leaves(fresh)):
        np.testing.assert_array_equal(a, b)
    # and both continue identically
    run_steps(step, state, 2, first=4)
    run_steps(step, fresh, 2, first=4)
    for a, b in zip(leaves(state), leaves(fresh)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [
    {"objective": {"weight": 1.0}, "hardware": {"accelerator": "overlay"}},
    {"objective": {"weight": 1.0}, "sparsity": {"default": {"method": "dense"}}},
    {"hardware": {"device": "zcu1O2"}},
    {"sparsity": {"layers": {"nope*": {"method": "dense"}}}},
    {"sparsity": {"default": {"method": "nm", "n": 2, "m": 3}}},
])
def test_a_config_error_of_any_section_leaves_no_run_folder(tmp_path, bad):
    cfg = tiny_cfg(tmp_path, **bad)
    with pytest.raises(config.ConfigError):
        train.run(cfg, source="t.yaml")
    assert not cfg.run_dir.exists()


def test_an_existing_run_folder_is_refused_before_any_setup(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    monkeypatch.setattr(train.loop, "setup", lambda *a, **k: pytest.fail("set up before the folder check"))
    with pytest.raises(train.RunError, match="already exists"):
        train.run(cfg)


def test_resume_with_no_readable_checkpoint_is_an_error_that_deletes_nothing(tmp_path):
    cfg = tiny_cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    broken = cfg.run_dir / "checkpoints" / "5"
    (broken / "model").mkdir(parents=True)
    (broken / "model" / "garbage").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(train.RunError, match="none of its checkpoints can be read"):
        train.run(cfg, resume=True)
    assert (broken / "model" / "garbage").exists()  # perhaps another version's: kept
