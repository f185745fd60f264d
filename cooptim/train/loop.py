"""The training loop: `run(cfg)` trains a config into its run folder and returns its report.

A run folder (`output_dir/name`) receives:
  config.yaml     the config as it was resolved (every default filled in)
  metrics.jsonl   one JSON object per logged step and per evaluation
  checkpoints/    orbax checkpoints of the whole training state; `--resume` continues from the last
  folding.json    co-optimization: the DSE's integer folding at each re-solve (a history to read;
                  the folding in force is in the checkpoint)
  masks.npz       the final keep-mask of every sparse layer, by layer name
  report.json     accuracy, per-layer density, MACs, the pattern check and the hardware cost

The loop is deterministic in (config, step): the batch of a step does not depend on where the run
was interrupted, and everything else a step reads is in the checkpoint, so a resumed run ends with
the same weights and folding as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from cooptim import data as data_lib
from cooptim import folders, nn, pretrained
from cooptim.config import Config, ConfigError
from cooptim.hardware import check_dense_design, device_of
from cooptim.objective import HardwareObjective, lambda_at, temperature_at
from cooptim.report import build_report, masks_of
from cooptim.train.checkpoint import (Checkpoints, RunError, append_history, check_run_dir, prepare_run_dir,
                                      truncate_metrics)
from cooptim.train.parallel import DataParallel, to_host
from cooptim.train.state import TrainState, transformation
from cooptim.train.step import evaluate, make_step


class Reporter(Protocol):
    """Receives progress; the CLI shows it, library callers may ignore it."""

    def start(self, total_steps: int, first_step: int) -> None: ...

    def step(self, step: int, metrics: dict) -> None: ...

    def evaluated(self, step: int, metrics: dict) -> None: ...

    def close(self) -> None: ...


class SilentReporter:
    def start(self, total_steps, first_step): pass

    def step(self, step, metrics): pass

    def evaluated(self, step, metrics): pass

    def close(self): pass


def total_steps(cfg: Config, steps_per_epoch: int) -> int:
    return cfg.train.steps if cfg.train.steps is not None else cfg.train.epochs * steps_per_epoch


def co_optimizing(cfg: Config) -> bool:
    o = cfg.objective
    return o.weight > 0 or o.density_target is not None or o.learn_density


def setup(cfg: Config, source: str = "<config>"):
    """Everything a run needs, validated, before any file is touched: (dataset, batch stream,
    total steps, objective or None, a fresh TrainState). Config problems are ConfigErrors."""
    device_of(cfg.hardware, source)  # an unknown device fails before training, not after
    dataset = data_lib.load(cfg.data)
    model = nn.build_model(cfg, dataset.image_shape, dataset.num_classes, source=source)
    if cfg.model.pretrained is not None:  # before the objective: its first DSE reads the loaded weights
        pretrained.load_configured(model, cfg, source)
    check_dense_design(model, dataset.image_shape, cfg, source)  # not after hours of training
    stream = data_lib.TrainStream(dataset.train, cfg.data.batch_size, cfg.seed, cfg.data.augment)
    steps = total_steps(cfg, stream.steps_per_epoch)
    objective, folding = None, None
    if co_optimizing(cfg):
        try:
            objective = HardwareObjective.of(cfg, model, dataset.image_shape, source)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        folding = objective.solve_folding(model)  # step 0's folding (no gate activity measured yet)
    state = TrainState(model, transformation(cfg, steps), folding=folding,
                       learn_folding=objective is not None and cfg.objective.folding == "learned",
                       gated=tuple(layer.layer_name for layer in nn.gated_layers(model)))
    return dataset, stream, steps, objective, state


def _record_folding(run_dir: Path, folding, step: int) -> None:
    append_history(run_dir / "folding.json", step,
                   {"folding": {f: np.asarray(v).tolist() for f, v in folding._asdict().items()}})


def run(cfg: Config, *, source: str = "<config>", resume: bool = False, force: bool = False,
        reporter: Reporter | None = None, devices=None) -> dict:
    """Trains `cfg` into its run folder and returns the report (also written as report.json).

    The run is data-parallel over `devices` (default: every device JAX sees, on every process;
    see `parallel`); the device count changes neither the config nor the results."""
    reporter = reporter or SilentReporter()
    parallel = DataParallel.over(devices)
    problem = parallel.check_batch(cfg.data.batch_size)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    if parallel.is_writer:  # the others could see the folder that process 0 is making
        check_run_dir(cfg, resume=resume, force=force)
    dataset, stream, steps, objective, state = setup(cfg, source)
    parallel.replicate(state)
    if not parallel.is_writer:  # one process owns the run folder; the others wait until it is ready
        multihost_utils.sync_global_devices("cooptim: run folder ready")
        return _train(cfg, source, resume, force, reporter, dataset, stream, steps, objective, state, parallel)
    with folders.Lock(cfg.run_dir, "run folder"):
        prepare_run_dir(cfg, resume=resume, force=force)  # checked again, under the lock
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("cooptim: run folder ready")
        return _train(cfg, source, resume, force, reporter, dataset, stream, steps, objective, state, parallel)


def _train(cfg, source, resume, force, reporter, dataset, stream, steps, objective, state, parallel) -> dict:
    run_dir = cfg.run_dir
    writer = parallel.is_writer
    checkpoints = Checkpoints(run_dir / "checkpoints", cfg.train.keep_checkpoints)
    metrics_path = run_dir / "metrics.jsonl"
    restored = None
    if resume:
        restored, skipped = checkpoints.restore_newest(lambda step: checkpoints.restore(step, state))
        if skipped and restored is None:  # nothing deleted: they may be another version's
            checkpoints.close()
            raise RunError(f"cannot resume {run_dir}: none of its checkpoints can be read (damaged, or "
                           f"written by another version of cooptim); the first says: {skipped[0][1]}")
        for step, reason in skipped:  # newer than one that can be read: the run writes them again
            checkpoints.delete(step)
            warnings.warn(f"checkpoint {step} of {run_dir} cannot be read ({reason}); it was deleted and the "
                          f"run resumes from step {restored}", stacklevel=2)
    if restored is None and objective is not None and writer:
        _record_folding(run_dir, state.folding.get(), 0)
    start = state.step
    if writer:
        truncate_metrics(metrics_path, start, steps)
    rows = parallel.local_rows(cfg.data.batch_size)  # the rows of every batch this process feeds
    train_step = make_step(objective)
    model = state.model
    model.train()
    reporter.start(steps, start)
    t_last, steps_since = time.perf_counter(), 0
    try:
        with (metrics_path.open("a") if writer else open(os.devnull, "w")) as log:
            if restored is None and cfg.model.pretrained is not None:
                # where the fine-tune starts: the loaded network as step 0 sees it (gradual methods dense)
                nn.set_progress(model, 0.0)
                ev = evaluate(model, dataset.test, cfg.data.eval_batch_size, parallel)
                record = {"step": 0, "test_accuracy": ev["accuracy"], "test_loss": ev["loss"]}
                log.write(json.dumps(record) + "\n")
                reporter.evaluated(0, record)
            for step in range(start, steps):
                progress = step / steps
                extra = {}
                lam, temperature = 0.0, 1.0
                if objective is not None:
                    if objective.due(step):
                        state.folding.set(objective.solve_folding(model, state.gates.as_dict()))
                        if writer:
                            _record_folding(run_dir, state.folding.get(), step)
                    lam = lambda_at(cfg.objective, progress)
                    temperature = temperature_at(cfg.objective, progress)
                    extra = {"lambda": lam}
                images, labels = stream.batch(step, rows)
                batch = cfg.data.batch_size
                metrics = train_step(state, parallel.shard(images, batch), parallel.shard(labels, batch), jnp.int32(step),
                                     jnp.float32(progress), jnp.float32((step + 1) / steps), jnp.float32(lam),
                                     jnp.float32(temperature))
                done = step + 1
                steps_since += 1
                if done % cfg.train.log_every == 0 or done == steps:
                    metrics = to_host(metrics)
                    now = time.perf_counter()
                    record = {"step": done, "epoch": step // stream.steps_per_epoch,
                              "loss": float(metrics["loss"]), "accuracy": float(metrics["accuracy"]),
                              "steps_per_s": steps_since / max(now - t_last, 1e-9), **extra,
                              **{k: float(v) for k, v in metrics.items() if k not in ("loss", "accuracy")}}
                    t_last, steps_since = now, 0
                    log.write(json.dumps(record) + "\n")
                    reporter.step(done, record)
                if done % cfg.train.eval_every == 0 and done != steps:
                    ev = evaluate(model, dataset.test, cfg.data.eval_batch_size, parallel)
                    record = {"step": done, "test_accuracy": ev["accuracy"], "test_loss": ev["loss"]}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    reporter.evaluated(done, record)
                if done % cfg.train.checkpoint_every == 0:
                    log.flush()
                    checkpoints.save(done, state)
            checkpoints.save(steps, state)
            test = evaluate(model, dataset.test, cfg.data.eval_batch_size, parallel)
            record = {"step": steps, "test_accuracy": test["accuracy"], "test_loss": test["loss"]}
            log.write(json.dumps(record) + "\n")
            reporter.evaluated(steps, record)
    finally:
        checkpoints.close()
        reporter.close()

    parallel.localize(state)  # what follows (report, masks) runs on one device of each process
    report = build_report(cfg, model, dataset, steps, test, source)
    if state.net.folding is not None:  # the continuous folding the run ended with (the DSE's is in "sparse")
        learned = objective.learned_folding(state.net.folding.theta())
        report["hardware"]["learned_folding"] = {
            f: np.round(np.asarray(v, np.float64), 3).tolist() for f, v in learned._asdict().items()}
    if writer:
        np.savez_compressed(run_dir / "masks.npz", **masks_of(model))
        (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
