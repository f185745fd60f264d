"""Data-parallel training (`cooptim.train.parallel`): the same step on 1 and 2 devices, and a
checkpoint written on 2 devices resumed on 1. Two CPU devices come from
`--xla_force_host_platform_device_count=2`, which must be set before JAX starts: those parts run
in a subprocess."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import yaml
from flax import nnx

from cooptim import config, train
from cooptim.train.checkpoint import Checkpoints

REPO = Path(__file__).resolve().parents[2]


def run_on_two_devices(code: str) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"}
    script = "import jax\nassert len(jax.devices()) == 2, jax.devices()\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO / "tests/integration", env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def tiny_config(tmp_path, name, **train_keys):
    raw = yaml.safe_load((REPO / "configs/digits_bdwp.yaml").read_text())
    raw.update(name=name, output_dir=str(tmp_path))
    raw["data"] = {**raw.get("data", {}), "batch_size": 32}
    raw["train"] = {"steps": 40, "eval_every": 1000, "checkpoint_every": 20, "log_every": 10, **train_keys}
    return raw


def assert_same_final_state(tmp_path, run_a, run_b):
    """The two runs' last checkpoints (step 40) hold the same state (weights, optimizer moments,
    masks) within 1e-5 (measured: 6e-8): 40 Adam steps on batches summed in another order."""
    leaves = []
    for name in (run_a, run_b):
        _, _, _, _, state = train.setup(config.from_dict(tiny_config(tmp_path, name)))
        checkpoints = Checkpoints(tmp_path / name / "checkpoints")
        checkpoints.restore(40, state)
        checkpoints.close()
        leaves.append(jax.tree.leaves(nnx.state(state)))
    for a, b in zip(*leaves):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=1e-5)


def test_one_step_on_two_devices_equals_one_step_on_one(tmp_path):
    """Same global batch, same state: the step split over 2 devices gives the loss and every
    updated variable (weights, optimizer moments, masks) of the step on 1 device; a batch that
    cannot be split is refused before anything is written."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, "step")))
    out = run_on_two_devices(f"""
        import jax.numpy as jnp, numpy as np
        from flax import nnx
        from cooptim import config, train
        from cooptim.train.parallel import DataParallel
        cfg = config.load({str(path)!r})
        results = []
        for devices in (jax.devices()[:1], jax.devices()):
            _, stream, steps, objective, state = train.setup(cfg)
            parallel = DataParallel.over(devices)
            parallel.replicate(state)
            step = train.make_step(objective)
            for s in range(3):
                x, y = stream.batch(s)
                metrics = step(state, parallel.shard(x, 32), parallel.shard(y, 32), jnp.int32(s),
                               jnp.float32(s / steps), jnp.float32((s + 1) / steps), jnp.float32(0), jnp.float32(1))
            leaves = jax.tree.leaves(nnx.state(state))
            assert all(len(leaf.sharding.device_set) == len(devices) for leaf in leaves)  # still replicated
            results.append((float(metrics["loss"]), [np.asarray(leaf) for leaf in leaves]))
        (loss1, state1), (loss2, state2) = results
        worst = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(state1, state2))
        print(loss1, loss2, worst)
        odd = config.from_dict({{**config.to_dict(cfg), "data": {{**config.to_dict(cfg)["data"], "batch_size": 33}}}})
        try:
            train.run(odd, source="c.yaml")
        except config.ConfigError as e:
            print(e)
    """)
    numbers, error = out.splitlines()[:2]
    loss1, loss2, worst = map(float, numbers.split())
    assert error == ("c.yaml: data.batch_size=33 cannot be split over 2 devices: use a multiple of 2 "
                     "(the global batch is the same whatever the device count)")
    assert not (tmp_path / "step").exists()
    assert abs(loss1 - loss2) < 1e-5 and worst < 1e-5, (loss1, loss2, worst)


def test_a_run_checkpointed_on_two_devices_resumes_on_one(tmp_path):
    """A run interrupted at step 30 on 2 devices (checkpoint at 20) and resumed on 1 device ends
    where the same run trained on 1 device throughout ends, within float tolerance (the first 20
    steps summed the batch in another order)."""
    cut = tiny_config(tmp_path, "cut")
    out = run_on_two_devices(f"""
        from cooptim import config, train
        from interrupt import StopAt
        cfg = config.from_dict({cut!r})
        try:
            train.run(cfg, reporter=StopAt(30))
        except KeyboardInterrupt:
            pass
        import orbax.checkpoint as ocp
        print(sorted(ocp.CheckpointManager(cfg.run_dir.absolute() / "checkpoints").all_steps()))
    """)
    assert out.split("\n")[-2] == "[20]"
    resumed = train.run(config.from_dict(cut), resume=True)
    full = train.run(config.from_dict(tiny_config(tmp_path, "full")))
    assert_same_final_state(tmp_path, "cut", "full")
    assert abs(resumed["test_accuracy"] - full["test_accuracy"]) <= 1 / 450
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40, 40]  # each step logged once (the final evaluation at 40 too)


def test_two_processes_train_one_run_like_one_device(tmp_path):
    """`python -m cooptim.train --coordinator ... --num-processes 2 --process-id I`, as two hosts
    would run it (here two processes on this machine, one CPU device each): one run folder, written
    by process 0, whose final weights equal a one-device run's within float tolerance."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, "two")))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    processes = [subprocess.Popen(
        [sys.executable, "-m", "cooptim.train", "--config", str(path), "--quiet", "--coordinator",
         f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "run folder:" in outputs[0] and "run folder:" not in outputs[1]  # process 0 reports
    one = train.run(config.from_dict(tiny_config(tmp_path, "one")))
    two = json.loads((tmp_path / "two/report.json").read_text())
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 1 / 450
    assert_same_final_state(tmp_path, "two", "one")
