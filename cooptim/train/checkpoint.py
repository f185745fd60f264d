"""Run-folder rules and checkpoints.

A checkpoint is one orbax checkpoint of the whole `TrainState`, in two items: `model` (the
model's variables: what `cooptim.run.load_run` restores for emulate, export and search) and
`train` (the optimizer with its step, the learned and the integer folding, the gates' activity).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import orbax.checkpoint as ocp
import yaml
from flax import nnx

from cooptim import config as config_lib
from cooptim import folders
from cooptim.config import Config
from cooptim.nn import InputThreshold
from cooptim.errors import UserError


class RunError(UserError, RuntimeError):
    """The run folder is in a state that the requested action cannot use."""


# Keys that say where a run lives, not how it trains: a moved or copied run folder resumes.
LOCATION_KEYS = ("output_dir",)


def check_run_dir(cfg: Config, *, resume: bool, force: bool) -> Path:
    """Refuses, before any setup, what cannot work: a new run into an existing folder without
    --force, a resume of a folder that holds no run or was started with another config."""
    run_dir = cfg.run_dir
    saved = run_dir / "config.yaml"
    if resume:
        if not saved.exists():
            raise RunError(f"cannot resume: {run_dir} has no config.yaml (no run was started there)")
        try:
            previous = yaml.safe_load(saved.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise RunError(f"cannot resume {run_dir}: its config.yaml cannot be read ({e})") from None
        current = config_lib.to_dict(cfg)
        if not isinstance(previous, dict):
            raise RunError(f"cannot resume {run_dir}: its config.yaml is not a config")
        for key in LOCATION_KEYS:
            previous.pop(key, None)
            current.pop(key, None)
        if previous != current:
            diff = sorted(_diff_keys(previous, current))
            raise RunError(f"cannot resume {run_dir}: the config differs from the one it was started with "
                           f"at {', '.join(diff)}")
    elif run_dir.exists() and not force:
        raise RunError(f"run folder {run_dir} already exists: pass --resume to continue it, or --force "
                       f"to delete it and start over")
    elif force:
        folders.check_replaceable(run_dir, "run", protect=(Path.cwd(),))
    if not run_dir.exists():
        parent = next(p for p in run_dir.absolute().parents if p.exists())
        if not (parent.is_dir() and os.access(parent, os.W_OK)):
            raise RunError(f"cannot create the run folder {run_dir}: {parent} is not a writable folder")
    return run_dir


def prepare_run_dir(cfg: Config, *, resume: bool, force: bool) -> Path:
    """The run folder, made (or emptied, with force) for a new run; as it is for a resume."""
    run_dir = check_run_dir(cfg, resume=resume, force=force)
    if resume:
        return run_dir
    folders.replace(run_dir, "run", protect=(Path.cwd(),))
    try:
        run_dir.mkdir(parents=True)
        folders.mark(run_dir, "run")
        config_lib.save(cfg, run_dir / "config.yaml")
    except OSError as e:
        raise RunError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None
    return run_dir


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


def _rest(state) -> tuple:
    """The parts of a training state besides the model (the `train` item)."""
    return state.optimizer, state.folding, state.gates, state.net.folding


def _split(state) -> tuple:
    """(the model's state, the rest of the training state) as nnx States."""
    return nnx.state(state.model), nnx.state(_rest(state))


class Checkpoints:
    """Orbax checkpoints of a `TrainState`, numbered by completed steps."""

    def __init__(self, directory: Path, keep: int | None = None, *, create: bool = True):
        self.manager = ocp.CheckpointManager(
            directory.absolute(), item_names=("model", "train"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def restore_newest(self, restore) -> tuple[int | None, list[tuple[int, str]]]:
        """Calls restore(step) on the newest checkpoint that can be read. Returns (the step
        restored or None, the (step, reason) of each newer checkpoint that could not be)."""
        skipped = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restore(step)
                return step, skipped
            except Exception as e:  # orbax and TensorStore raise many kinds for a damaged checkpoint
                skipped.append((step, (str(e).strip().splitlines() or [type(e).__name__])[0][:200]))
        return None, skipped

    def delete(self, step: int) -> None:
        self.manager.delete(step)

    def save(self, step: int, state) -> None:
        if self.manager.latest_step() == step:
            return
        model, train = (nnx.to_pure_dict(s) for s in _split(state))
        self.manager.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model),
                                                        train=ocp.args.StandardSave(train)))

    def restore(self, step: int, state) -> None:
        """Restores the whole training state of checkpoint `step` into `state`."""
        model, train = _split(state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(nnx.to_pure_dict(model)),
            train=ocp.args.StandardRestore(nnx.to_pure_dict(train))))
        nnx.replace_by_pure_dict(model, restored["model"])
        nnx.replace_by_pure_dict(train, restored["train"])
        nnx.update(state.model, model)
        nnx.update(_rest(state), train)

    def restore_model(self, step: int, model: nnx.Module) -> None:
        """Restores only the model of checkpoint `step` into `model` (a search's input thresholds,
        which training never has, are left as they are)."""
        state = nnx.state(model, nnx.Not(InputThreshold))
        restored = self.manager.restore(step, args=ocp.args.Composite(
            model=ocp.args.StandardRestore(nnx.to_pure_dict(state))))
        nnx.replace_by_pure_dict(state, restored["model"])
        nnx.update(model, state)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def truncate_metrics(path: Path, last_step: int, total_steps: int) -> None:
    """Keeps the metric lines up to `last_step`, so a resumed run does not log a step twice (the
    final evaluation, redone by every run that reaches the end, is dropped too)."""
    if not path.exists():
        return

    def keep(record: dict) -> bool:
        final_eval = record["step"] == total_steps and "test_accuracy" in record
        return record["step"] <= last_step and not final_eval

    lines = [ln for ln in path.read_text().splitlines() if ln and keep(json.loads(ln))]
    path.write_text("".join(ln + "\n" for ln in lines))


def append_history(path: Path, step: int, entry: dict) -> None:
    """Adds `entry` at `step` to a human-readable per-step history (folding.json), dropping later
    entries left by an interrupted run that is now redoing those steps; written atomically. The
    history is never read back as state."""
    history = [h for h in json.loads(path.read_text()) if h["step"] < step] if path.exists() else []
    history.append({"step": step, **entry})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(history))
    tmp.replace(path)
