"""The Ray backend: every point one Ray task, on a local Ray instance or on a running cluster.

A task trains its point as the local pool does (`points.run_point`: the trainer in its own
process, the point locked, resumed from its checkpoint), on whichever node Ray places it with
`ray.cpus_per_point` CPUs and `ray.gpus_per_point` GPUs (Ray sets CUDA_VISIBLE_DEVICES for the
trainer). On a cluster every node must see the sweep folder at the same path (a shared
filesystem) and have cooptim installed; a task whose node does not see it fails with that reason.

The driver retries a failed point at most `retries` times (Ray's own retries are off, so a crashed
worker and a failed trainer count alike) and, interrupted, cancels the tasks: Ray raises
KeyboardInterrupt in each running task, which stops its trainer, so every point stays resumable.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from cooptim.config import ConfigError
from cooptim.sweep.grid import Point, RayConfig
from cooptim.sweep.points import gave_up, run_point

try:
    import ray
except ImportError:  # an optional extra: `pip install 'cooptim[ray]'`
    ray = None

# how long the driver waits, once interrupted, for the cancelled tasks to stop their trainers
CANCEL_GRACE_S = 30.0


def train_point(folder: str, point: Point) -> str:
    """The task: trains one point on a Ray worker; returns its run folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RuntimeError(f"point {point.name}: the sweep folder {folder} is not visible on node "
                           f"{socket.gethostname()}; on a cluster put output_dir on a filesystem every node mounts")
    return str(run_point(folder, point))  # cancelled, it stops the trainer (resumable from its checkpoint)


def run(folder: Path, todo: list[Point], *, settings: RayConfig, workers: int, retries: int,
        on_done=None) -> list[str]:
    """Trains every point of `todo` as Ray tasks, each at most `1 + retries` times. Returns the
    failures' messages. Without `settings.address`, starts a local Ray instance sized for
    `workers` points at once, and stops it at the end."""
    if ray is None:
        raise ConfigError("backend 'ray' needs Ray: pip install 'cooptim[ray]'")
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)  # the tasks check that they see it
    started = not ray.is_initialized()
    if started:
        options = dict(logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
        if settings.address:
            ray.init(address=settings.address, **options)
        else:
            ray.init(num_cpus=int(workers * settings.cpus_per_point), **options)
    task = ray.remote(train_point).options(num_cpus=settings.cpus_per_point, num_gpus=settings.gpus_per_point,
                                           max_retries=0)
    pending = {task.remote(str(folder), p): (p, 1) for p in todo}
    failures = []
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            point, attempt = pending.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as e:
                if attempt <= retries:
                    pending[task.remote(str(folder), point)] = (point, attempt + 1)
                    continue
                cause = getattr(e, "cause", None) or e
                failures.append(gave_up(cause, attempt))
                if on_done:
                    on_done(point, cause)
                continue
            if on_done:
                on_done(point, None)
    except BaseException:  # Ctrl-C or SIGTERM: cancel the tasks, which stop their trainers
        for ref in pending:
            ray.cancel(ref)
        ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_GRACE_S)
        raise
    finally:
        if started:
            ray.shutdown()
    return failures
