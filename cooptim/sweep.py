"""Sweeps: a grid of pruning ratios x methods x devices x seeds, each point one training run.

    python -m cooptim.sweep --config configs/sweep_digits.yaml [--workers N] [--list] [--point NAME]

The sweep file names a base training config and the grid:

    name: sweep_digits
    base: quickstart.yaml          # relative to the sweep file
    output_dir: runs               # the sweep folder is output_dir/name
    ratios: [0.25, 0.5, 0.625, 0.75]   # fraction of each pruned layer's weights removed
    methods:                       # sparsity.default per method; "{density}" = 1 - ratio,
      csp: {method: csp, weight_density: "{density}", chunk: 4}   # "{kept:M}" = round(density x M)
      nm: {method: nm, n: "{kept:8}", m: 8}
    devices: [zcu102]
    seeds: [0]
    set: ["train.epochs=20"]       # --set overrides applied to every point

Every point's full config is written to `SWEEP/configs/POINT.yaml` and trained into
`SWEEP/runs/POINT/` by its own `python -m cooptim.train` process. A point whose run folder has a
report.json is finished and skipped; an unfinished one resumes from its last checkpoint. So a
killed sweep is restarted with the same command, and only unfinished points run again. At the end
(and with `--collect`) the reports are gathered into `SWEEP/sweep.csv` and `SWEEP/pareto.png`.

On a cluster, fan the points out with any engine that runs one process per point: `--list` prints
the point names, `--point NAME` runs one (e.g. a Slurm array task, or a Ray task calling
`run_point`), and `--collect` writes the CSV and the plot once they are done.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from cooptim import config as config_lib
from cooptim import folders
from cooptim.sweep_results import collect
from cooptim.cli.errors import run_cli
from cooptim.config import ConfigError
from cooptim.sparsity._config import STRICT

_PLACEHOLDER = re.compile(r"^\{(density|kept:(\d+))\}$")


@dataclass(frozen=True, config=STRICT)
class SweepConfig:
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    base: StrictStr
    methods: dict[StrictStr, dict[StrictStr, Any]]
    ratios: list[Annotated[float, Field(ge=0.0, lt=1.0, strict=True)]]
    devices: list[StrictStr] = dataclasses.field(default_factory=lambda: ["zcu102"])
    seeds: list[Annotated[int, Field(ge=0, strict=True)]] = dataclasses.field(default_factory=lambda: [0])
    set: list[StrictStr] = dataclasses.field(default_factory=list)
    output_dir: StrictStr = "runs"
    workers: Annotated[int, Field(ge=1, strict=True)] = 2


@dataclasses.dataclass(frozen=True)
class Point:
    name: str
    method: str
    ratio: float
    device: str
    seed: int
    config: dict  # the full training config


def _fill(template: Any, density: float, where: str) -> Any:
    """Replaces "{density}" and "{kept:M}" placeholders in a method template."""
    if isinstance(template, dict) and len(template) == 1 and list(template.values()) == [None]:
        template = "{" + next(iter(template)) + "}"  # YAML read an unquoted {density} as a mapping
    if isinstance(template, dict):
        return {k: _fill(v, density, f"{where}.{k}") for k, v in template.items()}
    if isinstance(template, str) and template.startswith("{"):
        match = _PLACEHOLDER.match(template)
        if not match:
            raise ConfigError(f"{where} = {template!r}: unknown placeholder (use {{density}} or {{kept:M}})")
        if match.group(2) is None:
            return round(density, 6)
        m = int(match.group(2))
        return max(1, min(m, round(density * m)))
    return template


def load(path: str | Path) -> tuple[SweepConfig, list[Point], Path]:
    """The sweep file, its points (each a validated training config) and the sweep folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read sweep file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        sweep = TypeAdapter(SweepConfig).validate_python(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<top>"
        raise ConfigError(f"{path}: '{key}': {first['msg']}") from None
    base_path = (path.parent / sweep.base) if not Path(sweep.base).is_absolute() else Path(sweep.base)
    try:
        base_raw = yaml.safe_load(base_path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: 'base' = {sweep.base!r}: cannot read {base_path} ({e.strerror})") from None
    base_raw, _ = config_lib.apply_overrides(base_raw, sweep.set)
    folder = Path(sweep.output_dir) / sweep.name
    points = []
    for method, template in sweep.methods.items():
        for ratio in sweep.ratios:
            for device in sweep.devices:
                for seed in sweep.seeds:
                    name = f"{method}-r{ratio:g}-{device}-s{seed}"
                    raw = copy.deepcopy(base_raw)
                    raw["name"], raw["seed"] = name, seed
                    raw["output_dir"] = str(folder / "runs")
                    raw.setdefault("sparsity", {})["default"] = _fill(template, 1.0 - ratio, f"methods.{method}")
                    raw.setdefault("hardware", {})["device"] = device
                    # validated now, so a bad point fails before any training starts
                    config_lib.from_dict(raw, source=f"{path} (point {name})")
                    points.append(Point(name, method, ratio, device, seed, raw))
    return sweep, points, folder


def is_finished(folder: Path, point: Point) -> bool:
    return (folder / "runs" / point.name / "report.json").exists()


def run_point(folder: Path, point: Point, *, children: set | None = None) -> Path:
    """Trains one point in its own process (resuming it if it was started). Returns its run folder.

    The point is locked (`folders.Lock`) before its log is opened, and the trainer inherits the
    lock: a restarted sweep whose earlier self was killed while this trainer still runs gets an
    error naming it, instead of a second trainer on the same point. The trainer runs in its own
    process group, registered in `children` so that the sweep can stop it (`stop`)."""
    with folders.Lock(folder / "logs" / point.name, "sweep point") as lock:
        config_path = folder / "configs" / f"{point.name}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(point.config, sort_keys=False))
        run_dir = folder / "runs" / point.name
        cmd = [sys.executable, "-m", "cooptim.train", "--config", str(config_path), "--quiet"]
        if run_dir.exists():
            cmd.append("--resume")
        # one process per point: keep each to one thread, the sweep runs `workers` of them
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
            finally:
                if children is not None:
                    children.discard(child)
    if returncode:
        raise RuntimeError(f"point {point.name} failed (exit {returncode}); see {log}")
    return run_dir


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


def run(path: str | Path, workers: int | None = None, on_done=None) -> tuple[list[dict], list[str]]:
    """Runs every unfinished point (`workers` at a time), then collects. Returns (rows, failures)."""
    sweep, points, folder = load(path)
    todo = [p for p in points if not is_finished(folder, p)]
    failures, children = [], set()

    def one(point):
        try:
            run_point(folder, point, children=children)
            if on_done:
                on_done(point, None)
        except RuntimeError as e:
            failures.append(str(e))
            if on_done:
                on_done(point, e)

    pool = ThreadPoolExecutor(workers or sweep.workers)
    try:
        list(pool.map(one, todo))
    except BaseException:  # Ctrl-C or SIGTERM: stop the trainers (each resumable from its checkpoint)
        pool.shutdown(wait=False, cancel_futures=True)
        stop(children)
        raise
    pool.shutdown()
    return collect(folder, points), failures


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the sweep as Ctrl-C does: trainers stopped, points resumable


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cooptim.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="sweep YAML file")
    parser.add_argument("--workers", type=int, default=None, help="points trained at once (default: the file's)")
    parser.add_argument("--list", action="store_true", help="print the points (and whether each is done)")
    parser.add_argument("--point", help="run only this point (cluster fan-out)")
    parser.add_argument("--collect", action="store_true", help="only write sweep.csv and pareto.png")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    return run_cli(lambda: _main(args), debug=args.debug)


def _main(args) -> int:
    sweep, points, folder = load(args.config)
    if args.list:
        for p in points:
            print(f"{p.name}\t{'done' if is_finished(folder, p) else 'todo'}")
        return 0
    if args.point:
        chosen = [p for p in points if p.name == args.point]
        if not chosen:
            print(f"error: no point {args.point!r} in {args.config} (see --list)", file=sys.stderr)
            return 2
        if not is_finished(folder, chosen[0]):
            children = set()
            try:
                run_point(folder, chosen[0], children=children)
            except BaseException:
                stop(children)
                raise
        return 0
    if not args.collect:
        from tqdm.auto import tqdm

        todo = sum(not is_finished(folder, p) for p in points)
        print(f"{len(points)} points, {len(points) - todo} already finished, {todo} to run -> {folder}")
        bar = tqdm(total=todo, unit="point")
        try:
            rows, failures = run(args.config, args.workers,
                                 on_done=lambda p, e: (bar.update(1), bar.set_postfix_str(p.name + (" FAILED" if e else ""))))
        except KeyboardInterrupt:
            bar.close()
            done = sum(is_finished(folder, p) for p in points)
            print(f"\ninterrupted: {done} of {len(points)} points finished; run the same command again "
                  f"to finish the others (their checkpoints are kept)", file=sys.stderr)
            return 130
        bar.close()
    else:
        rows, failures = collect(folder, points), []
    print(f"{len(rows)} of {len(points)} points finished: {folder / 'sweep.csv'}, {folder / 'pareto.png'}")
    for f in failures:
        print(f"error: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
