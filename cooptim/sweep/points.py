"""One sweep point: whether it is finished, and training it in its own process (whatever runs it:
the local pool or a Ray worker)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from cooptim import folders
from cooptim.sweep.grid import Point


def is_finished(folder: Path, point: Point) -> bool:
    return (folder / "runs" / point.name / "report.json").exists()


class PointFailed(RuntimeError):
    """A point's trainer exited with an error; the message names its log and the error's last line."""


def run_point(folder: Path, point: Point, *, children: set | None = None) -> Path:
    """Trains one point in its own process (resuming it if it was started). Returns its run folder.

    The point is locked (`folders.Lock`) before its log is opened, and the trainer inherits the
    lock: a restarted sweep whose earlier self was killed while this trainer still runs gets an
    error naming it, instead of a second trainer on the same point. The trainer runs in its own
    process group, registered in `children` so that another thread can stop it (`stop`); interrupted
    while it waits, this call stops the trainer itself."""
    with folders.Lock(folder / "logs" / point.name, "sweep point") as lock:
        config_path = folder / "configs" / f"{point.name}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(point.config, sort_keys=False))
        run_dir = folder / "runs" / point.name
        cmd = [sys.executable, "-m", "cooptim.train", "--config", str(config_path), "--quiet"]
        if run_dir.exists():
            cmd.append("--resume")
        # one process per point: keep each to one thread, the sweep runs several of them
        env = {**os.environ, "XLA_FLAGS": os.environ.get(
            "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")}
        log = folder / "logs" / f"{point.name}.log"
        with log.open("w") as out:
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     pass_fds=(lock.fd,))
            lock.record(child.pid)
            if children is not None:
                children.add(child)
            try:
                returncode = child.wait()
            except BaseException:  # interrupted in this thread (a cancelled Ray task, Ctrl-C on --point)
                stop({child})
                raise
            finally:
                if children is not None:
                    children.discard(child)
    if returncode:
        raise PointFailed(f"point {point.name} failed (exit {returncode}): {_error_of(log)} (log: {log})")
    return run_dir


def gave_up(error: BaseException, attempts: int) -> str:
    """The failure line of a point that failed `attempts` times, the last with `error`."""
    return f"{error} after {attempts} attempt{'s' if attempts > 1 else ''}"


def _error_of(log: Path) -> str:
    """The trainer's error line ("error: ...", as the CLI prints it), else its last line."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[0 if errors else -1]


def stop(children: set, grace_s: float = 10.0) -> None:
    """Terminates the trainers' process groups (SIGTERM, then SIGKILL after `grace_s`)."""
    for child in list(children):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
    for child in list(children):
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
