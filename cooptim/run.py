"""A finished (or interrupted) run folder, loaded for the tools that read it: emulate, export,
search. Only the model is restored; nothing of the trainer is built."""

from __future__ import annotations

import warnings
from pathlib import Path

from cooptim import config as config_lib
from cooptim import data as data_lib
from cooptim import nn
from cooptim.train.checkpoint import Checkpoints, RunError

__all__ = ["RunError", "load_run"]


def load_run(run_dir: str | Path, step: int | None = None, *, input_thresholds: bool = False):
    """The config and trained model of a run folder, from its latest (or a given) checkpoint.

    Returns (config, model, dataset); the model is in inference mode. input_thresholds=True
    builds the model with searchable input thresholds (`nn.build_model`), all at 0.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise RunError(f"{run_dir} is not a run folder: it has no config.yaml")
    source = str(run_dir / "config.yaml")
    cfg = config_lib.load(source)
    if not (run_dir / "checkpoints").is_dir():
        raise RunError(f"{run_dir} has no checkpoint")
    dataset = data_lib.load(cfg.data)
    model = nn.build_model(cfg, dataset.image_shape, dataset.num_classes, source=source,
                           input_thresholds=input_thresholds)
    checkpoints = Checkpoints(run_dir / "checkpoints", create=False)
    try:
        if step is not None:
            if step not in checkpoints.all_steps():
                raise RunError(f"{run_dir} has no checkpoint at step {step}")
            checkpoints.restore_model(step, model)
        else:
            restored, skipped = checkpoints.restore_newest(lambda s: checkpoints.restore_model(s, model))
            for bad, reason in skipped:
                warnings.warn(f"checkpoint {bad} of {run_dir} cannot be read ({reason}); using an older one",
                              stacklevel=2)
            if restored is None:
                raise RunError(f"{run_dir} has no " + ("readable " if skipped else "") + "checkpoint")
    finally:
        checkpoints.close()
    model.eval()
    return cfg, model, dataset
