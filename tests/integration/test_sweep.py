"""Sweeps: the grid, placeholders, resume (only unfinished points rerun), retries, CSV and plot, on
the local pool and on a real local Ray instance."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cooptim import sweep
from cooptim.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write_sweep(tmp_path, **changes):
    raw = {
        "name": "tiny",
        "base": str(REPO / "configs/quickstart.yaml"),
        "output_dir": str(tmp_path),
        "ratios": [0.5, 0.75],
        "methods": {"csp": {"method": "csp", "weight_density": "{density}", "chunk": 4},
                    "nm": {"method": "nm", "n": "{kept:8}", "m": 8}},
        "set": ["train.steps=20", "train.eval_every=1000", "train.checkpoint_every=10", "data.batch_size=32"],
        "workers": 2,
    }
    raw.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_points_fill_the_placeholders(tmp_path):
    _, points, folder = sweep.load(write_sweep(tmp_path))
    assert [p.name for p in points] == ["csp-r0.5-zcu102-s0", "csp-r0.75-zcu102-s0",
                                        "nm-r0.5-zcu102-s0", "nm-r0.75-zcu102-s0"]
    assert points[1].config["sparsity"]["default"]["weight_density"] == 0.25
    assert points[3].config["sparsity"]["default"]["n"] == 2  # round(0.25 x 8)
    assert points[0].config["train"]["steps"] == 20 and folder == tmp_path / "tiny"


def test_sweep_resumes_only_unfinished_points(tmp_path):
    path = write_sweep(tmp_path, ratios=[0.75])
    ran = []
    rows, failures = sweep.run(path, on_done=lambda p, e: ran.append(p.name))
    assert not failures and len(ran) == 2 and len(rows) == 2
    folder = tmp_path / "tiny"
    assert (folder / "pareto.png").stat().st_size > 0
    header = (folder / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["point", "method", "ratio"]
    # a point killed mid-run: its folder and checkpoints exist, its report does not
    (folder / "runs" / "nm-r0.75-zcu102-s0" / "report.json").unlink()
    ran.clear()
    rows, failures = sweep.run(path, on_done=lambda p, e: ran.append(p.name))
    assert ran == ["nm-r0.75-zcu102-s0"] and not failures and len(rows) == 2
    # the unfinished point resumed in its folder: every step and evaluation is logged once
    metrics = [json.loads(line) for line in
               (folder / "runs" / "nm-r0.75-zcu102-s0" / "metrics.jsonl").read_text().splitlines()]
    keys = [(m["step"], "test_accuracy" in m) for m in metrics]
    assert sorted(keys) == [(10, False), (20, False), (20, True)]
    # a finished sweep runs nothing
    ran.clear()
    sweep.run(path, on_done=lambda p, e: ran.append(p.name))
    assert ran == []


def test_bad_sweeps_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'ratios.0'"):
        sweep.load(write_sweep(tmp_path, ratios=[1.5]))
    with pytest.raises(ConfigError, match=r"methods.csp.weight_density = '\{dens\}': unknown placeholder"):
        sweep.load(write_sweep(tmp_path, methods={"csp": {"method": "csp", "weight_density": "{dens}"}}))
    with pytest.raises(ConfigError, match=r"point nm-r0.5-zcu102-s0\): unknown key 'sparsity.default.q'"):
        sweep.load(write_sweep(tmp_path, methods={"nm": {"method": "nm", "n": "{kept:8}", "m": 8, "q": 1}}))
    with pytest.raises(ConfigError, match="'base'"):
        sweep.load(write_sweep(tmp_path, base="nowhere.yaml"))
    with pytest.raises(ConfigError, match="'backend'"):
        sweep.load(write_sweep(tmp_path, backend="slurm"))
    with pytest.raises(ConfigError, match="'ray.gpus_per_point'"):
        sweep.load(write_sweep(tmp_path, ray={"gpus_per_point": -1}))


def test_a_failing_point_is_retried_a_bounded_number_of_times_and_reported(tmp_path):
    """A point whose trainer fails (here: its data set is not in its data_dir) runs 1 + retries
    times; the failure names the point, the trainer's error and its log."""
    empty = tmp_path / "no_data"
    empty.mkdir()
    path = write_sweep(tmp_path, ratios=[0.5], methods={"nm": {"method": "nm", "n": 2, "m": 4}},
                       seeds=[0, 1], retries=1, set=["train.steps=20", "train.eval_every=1000", "data.batch_size=32"])
    bad = yaml.safe_load(path.read_text())
    bad["set"] = bad["set"] + ["data.name=cifar10", f"data.data_dir={empty}"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**bad, "name": "bad", "seeds": [0]}))
    ends = []
    rows, failures = sweep.run(tmp_path / "bad.yaml", on_done=lambda p, e: ends.append((p.name, e)))
    assert rows == [] and len(ends) == 1 and len(failures) == 1
    assert failures[0].startswith("point nm-r0.5-zcu102-s0 failed (exit 2): error: data set 'cifar10'")
    assert failures[0].endswith("after 2 attempts") and "nm-r0.5-zcu102-s0.log" in failures[0]


def test_a_killed_sweeps_trainer_is_never_doubled_by_the_restart(tmp_path):
    """SIGKILL the sweep while a point trains: its trainer may live on (its own process group), but
    it keeps the point's lock, so the restarted sweep refuses that point instead of training it twice
    and truncating its log."""
    path = write_sweep(tmp_path, ratios=[0.5], methods={"nm": {"method": "nm", "n": 2, "m": 4}},
                      set=["train.steps=3000", "train.eval_every=100000", "train.checkpoint_every=1000"],
                      workers=1)
    sweep_proc = subprocess.Popen([sys.executable, "-m", "cooptim.sweep", "--config", str(path)], cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / "tiny" / "logs" / ".nm-r0.5-zcu102-s0.lock"

    def holder():
        text = lock.read_text().strip() if lock.exists() else ""
        return int(text) if text.isdigit() else None

    # The sweep names itself as the holder first, then the trainer it started.
    deadline = time.time() + 120
    while time.time() < deadline and holder() in (None, sweep_proc.pid):
        time.sleep(0.1)
    trainer = holder()
    assert trainer not in (None, sweep_proc.pid), "the sweep never named a trainer as the point's lock holder"
    sweep_proc.send_signal(signal.SIGKILL)
    sweep_proc.wait()
    log = tmp_path / "tiny" / "logs" / "nm-r0.5-zcu102-s0.log"
    try:
        os.kill(trainer, 0)  # the trainer outlived the sweep
        before = log.stat().st_size
        rows, failures = sweep.run(path)
        assert len(failures) == 1 and f"in use by process {trainer}" in failures[0]
        assert log.stat().st_size >= before  # not truncated by a second trainer
    finally:
        os.killpg(trainer, signal.SIGKILL)


def trainers_of(folder: Path) -> list[int]:
    """The pids of the trainers of the sweep in `folder` that are still running."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder / "configs").encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # ended while we looked
            pass
    return pids


# Ray starts its processes with fork + exec from this JAX-initialised test process; JAX warns about
# any fork, but nothing runs between the two.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
def test_a_sweep_on_ray_killed_midway_reruns_only_its_unfinished_points(tmp_path):
    """The tiny sweep through a real local Ray instance (2 CPUs, every point a task), interrupted
    as Ctrl-C would once a point has finished: the tasks are cancelled and stop their trainers (no
    trainer outlives the sweep), and the same sweep run again trains only the unfinished points."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'cooptim[ray]'")
    path = write_sweep(tmp_path, backend="ray")
    _, points, folder = sweep.load(path)
    sweep_proc = subprocess.Popen([sys.executable, "-m", "cooptim.sweep", "--config", str(path)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300  # interrupted once a point has finished while another trains
    while time.time() < deadline and not (any(sweep.is_finished(folder, p) for p in points) and trainers_of(folder)):
        assert sweep_proc.poll() is None, sweep_proc.communicate()[0][-3000:]
        time.sleep(0.1)
    assert trainers_of(folder), "no point was training while another had finished"
    sweep_proc.send_signal(signal.SIGINT)
    output = sweep_proc.communicate(timeout=120)[0]
    assert sweep_proc.returncode == 130, output[-3000:]
    assert "run the same command again" in output
    finished = {p.name: (folder / "runs" / p.name / "report.json").stat().st_mtime_ns
                for p in points if sweep.is_finished(folder, p)}
    assert 1 <= len(finished) < len(points), finished
    assert trainers_of(folder) == []  # every trainer was stopped with its task
    ran = []
    rows, failures = sweep.run(path, on_done=lambda p, e: ran.append(p.name))
    assert not failures and sorted(ran) == sorted(set(p.name for p in points) - set(finished))
    assert len(rows) == len(points) and (folder / "pareto.png").stat().st_size > 0
    assert {name: (folder / "runs" / name / "report.json").stat().st_mtime_ns for name in finished} == finished
