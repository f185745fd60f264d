"""Training: one `TrainState` (state.py) in one checkpoint (checkpoint.py), one step (step.py),
one loop (loop.py). ``python -m cooptim.train --config X.yaml`` is the CLI (`cooptim.cli.train`)."""

from cooptim.train.checkpoint import Checkpoints, RunError
from cooptim.train.loop import Reporter, SilentReporter, run, setup, total_steps
from cooptim.train.state import TrainState, model_transformation, transformation
from cooptim.train.step import evaluate, make_step, task_loss

__all__ = [
    "Checkpoints",
    "Reporter",
    "RunError",
    "SilentReporter",
    "TrainState",
    "evaluate",
    "make_step",
    "model_transformation",
    "run",
    "setup",
    "task_loss",
    "total_steps",
    "transformation",
]
