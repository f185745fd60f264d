"""The default backend: the points trained `workers` at a time by a pool on this machine."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cooptim.sweep.grid import Point
from cooptim.sweep.points import gave_up, run_point, stop


def run(folder: Path, todo: list[Point], *, workers: int, retries: int, on_done=None) -> list[str]:
    """Trains every point of `todo`, each at most `1 + retries` times (a retry resumes from the
    point's last checkpoint). Returns the failures' messages. Interrupted (Ctrl-C, SIGTERM), it
    stops the running trainers, whose points resume when the sweep is run again."""
    failures, children = [], set()

    def one(point: Point) -> None:
        for attempt in range(1 + retries):
            try:
                run_point(folder, point, children=children)
                break
            except RuntimeError as e:
                error = e
        else:
            failures.append(gave_up(error, 1 + retries))
            if on_done:
                on_done(point, error)
            return
        if on_done:
            on_done(point, None)

    pool = ThreadPoolExecutor(workers)
    try:
        list(pool.map(one, todo))
    except BaseException:  # Ctrl-C or SIGTERM: stop the trainers (each resumable from its checkpoint)
        pool.shutdown(wait=False, cancel_futures=True)
        stop(children)
        raise
    pool.shutdown()
    return failures
