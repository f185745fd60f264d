"""The co-optimization objective: schedules, the hardware gradient on the densities, a short run."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import cost_models as cm
from cooptim import config, nn, train
from cooptim.objective import HardwareObjective, lambda_at, temperature_at

REPO = Path(__file__).resolve().parents[2]


def test_schedules():
    cfg = config.ObjectiveConfig(weight=2.0, warmup_start=0.2, warmup_end=0.6, temperature_start=0.4,
                                 temperature_end=0.01)
    assert [lambda_at(cfg, p) for p in (0.0, 0.2, 0.4, 0.6, 1.0)] == pytest.approx([0, 0, 1.0, 2.0, 2.0])
    assert temperature_at(cfg, 0.0) == pytest.approx(0.4) and temperature_at(cfg, 1.0) == pytest.approx(0.01)
    assert temperature_at(cfg, 0.5) == pytest.approx(np.sqrt(0.4 * 0.01))


def test_the_cost_gradient_prunes_the_bottleneck_layer_most():
    raw = yaml.safe_load((REPO / "configs/digits_cost_aware.yaml").read_text())
    cfg = config.from_dict(raw)
    model = nn.build_model(cfg, (8, 8, 1), 10)
    objective = HardwareObjective.of(cfg, model, (8, 8, 1))
    folding = objective.solve_folding(model)
    cycles = np.asarray(cm.dataflow.evaluate(objective.net, folding, objective.concrete_densities(model),
                                             objective.device).layer_cycles)

    # the graph's nodes: the four weighted layers, their activations and pools
    slots = np.array([objective.names.index(n) for n in ("conv1", "conv2", "conv3", "head")])
    assert len(objective.names) > 4

    def cost(logits):
        density = jnp.ones(len(objective.names)).at[slots].set(jax.nn.sigmoid(logits))
        return objective.terms(cm.Density(density, jnp.ones_like(density)), folding, 1.0, 0.05)["cost"]

    grad = np.asarray(jax.grad(cost)(jnp.zeros(4)))
    # -log throughput falls fastest by pruning the slowest of the pruned layers
    assert int(np.argmax(grad)) == int(np.argmax(cycles[slots])), (grad, cycles)
    assert (grad >= 0).all()


def test_a_cost_aware_run_holds_the_density_target(tmp_path):
    raw = yaml.safe_load((REPO / "configs/digits_cost_aware.yaml").read_text())
    raw["output_dir"] = str(tmp_path)
    raw["train"] = {"steps": 150, "eval_every": 1000, "checkpoint_every": 150}
    raw["objective"]["dse_every"] = 50
    cfg = config.from_dict(raw)
    report = train.run(cfg)
    rows = report["layers"]
    overall = sum(r["effective_macs"] for r in rows) / sum(r["macs"] for r in rows)
    assert abs(overall - 0.5) < 0.03, overall
    assert len({round(r["density"], 2) for r in rows}) > 1  # sparsity moved between layers
    assert report["test_accuracy"] > 0.85 and report["pattern_ok"]
    saved = json.loads((cfg.run_dir / "folding.json").read_text())
    assert [h["step"] for h in saved] == [0, 50, 100]


def test_objective_needs_a_pruned_layer(tmp_path):
    raw = yaml.safe_load((REPO / "configs/digits_cost_aware.yaml").read_text())
    raw.update(output_dir=str(tmp_path), sparsity={"default": {"method": "dense"}})
    raw["objective"]["learn_density"] = False
    with pytest.raises(config.ConfigError, match="no layer is pruned"):
        train.run(config.from_dict(raw))
