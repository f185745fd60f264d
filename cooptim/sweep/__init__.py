"""Sweeps: a grid of pruning ratios x methods x devices x seeds, each point one training run.

    python -m cooptim.sweep --config configs/sweep_digits.yaml [--workers N] [--backend ray [--address A]]

`grid` reads the sweep file and makes the points; every point's full config is written to
`SWEEP/configs/POINT.yaml` and trained into `SWEEP/runs/POINT/` by its own `python -m
cooptim.train` process (`points`). A point whose run folder has a report.json is finished and
skipped; an unfinished one resumes from its last checkpoint. So a killed sweep is restarted with the
same command, and only unfinished points run again. At the end (and with `--collect`) the reports
are gathered into `SWEEP/sweep.csv` and `SWEEP/pareto.png` (`results`).

Backends: `local` (default) trains `workers` points at a time on this machine; `ray` makes every
point a Ray task, on a local Ray instance or on a running cluster (`on_ray`). To fan the points out
with another engine (a Slurm array), `--list` prints the point names, `--point NAME` runs one, and
`--collect` writes the CSV and the plot once they are done.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cooptim.sweep import local, on_ray
from cooptim.sweep.grid import Point, RayConfig, SweepConfig, load
from cooptim.sweep.points import PointFailed, is_finished, run_point, stop
from cooptim.sweep.results import collect

__all__ = ["Point", "PointFailed", "RayConfig", "SweepConfig", "collect", "is_finished", "load", "run",
           "run_point", "stop"]


def run(path: str | Path, workers: int | None = None, on_done=None, *, backend: str | None = None,
        address: str | None = None) -> tuple[list[dict], list[str]]:
    """Runs every unfinished point of the sweep file `path`, then collects. Returns (rows, failures).

    `workers`, `backend` and `address` override the file's; `on_done(point, error or None)` is
    called as each point ends."""
    sweep, points, folder = load(path)
    todo = [p for p in points if not is_finished(folder, p)]
    workers = workers or sweep.workers
    backend = "ray" if address else (backend or sweep.backend)
    if backend == "ray":
        settings = dataclasses.replace(sweep.ray, address=address or sweep.ray.address)
        failures = on_ray.run(folder, todo, settings=settings, workers=workers, retries=sweep.retries,
                              on_done=on_done)
    else:
        failures = local.run(folder, todo, workers=workers, retries=sweep.retries, on_done=on_done)
    return collect(folder, points), failures
