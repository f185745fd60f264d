"""Train a sparse network: ``python -m cooptim.train --config configs/quickstart.yaml``.

A run folder (`output_dir/name`) receives:
  config.yaml     the config as it was resolved (every default filled in)
  metrics.jsonl   one JSON object per logged step and per evaluation
  checkpoints/    orbax checkpoints of model + optimizer state; `--resume` continues from the last
  masks.npz       the final keep-mask of every sparse layer, by layer name
  report.json     accuracy, per-layer density, MACs and the sparsity-pattern check

The loop is deterministic in (config, step): the batch of a step does not depend on where the run
was interrupted, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from cooptim import config as config_lib
from cooptim import data as data_lib
from cooptim import nn
from cooptim.config import Config, ConfigError, OptimizerConfig


class RunError(RuntimeError):
    """The run folder is in a state that the requested action cannot use."""


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


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation for a config; weight decay applies to weights with ndim > 1."""
    if cfg.schedule == "constant":
        lr = optax.constant_schedule(cfg.learning_rate)
    elif cfg.schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, total_steps)
    else:
        lr = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, cfg.warmup_steps, total_steps)
    if cfg.name == "adamw":
        return optax.adamw(lr, weight_decay=cfg.weight_decay, mask=_is_kernel)
    base = optax.sgd(lr, momentum=cfg.momentum, nesterov=cfg.nesterov) if cfg.name == "sgd" else optax.adam(lr)
    if cfg.weight_decay:
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=_is_kernel), base)
    return base


def _is_kernel(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _task_loss(model, images, labels):
    """(cross-entropy plus each dynamically gated layer's sparsity-target loss (DPACS), logits,
    gate records)."""
    with nn.collect_gates() as gates:
        logits = model(images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    for gate in gates:
        loss = loss + gate.layer.sparsity.target_loss(gate.density, gate.layer.learned_density())
    return loss, logits, gates


def _loss_and_logits(model, images, labels):
    loss, logits, _ = _task_loss(model, images, labels)
    return loss, logits


def make_cost_aware_step(objective):
    """The train step with the hardware terms of `objective` (`cooptim.objective`) in the loss.

    step(model, optimizer, images, labels, folding, lam, temperature) -> (loss, accuracy, terms,
    gate_stats): terms has the hardware cost, relaxed throughput and overall density; gate_stats
    maps each gated layer to its (density, channel fraction) on the batch."""
    loss_fn = _cost_aware_loss(objective)

    @nnx.jit
    def step(model, optimizer, images, labels, folding, lam, temperature):
        (loss, (logits, terms, stats)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
            model, images, labels, folding, lam, temperature)
        optimizer.update(model, grads)
        return loss, (logits.argmax(-1) == labels).mean(), terms, stats

    return step


def _cost_aware_loss(objective):
    from cooptim.objective import hardware_loss

    def loss_fn(model, images, labels, folding, lam, temperature):
        task, logits, gates = _task_loss(model, images, labels)
        hardware, terms = hardware_loss(objective, model, gates, folding, lam, temperature)
        stats = {g.layer.layer_name: (g.density, g.channel.mean()) for g in gates}
        return task + hardware, (logits, terms, stats)

    return loss_fn


def make_learned_folding_step(objective, folding_optimizer: optax.GradientTransformation):
    """The cost-aware step that also trains the relaxed folding (`objective.folding: learned`).

    step(model, optimizer, theta, folding_state, images, labels, lam, temperature) -> (loss,
    accuracy, terms, gate_stats, theta, folding_state); theta is the log folding (a `Folding` of
    float32 arrays), updated by `folding_optimizer` with the gradient of the same loss."""
    loss_fn = _cost_aware_loss(objective)

    def loss_of_theta(model, theta, images, labels, lam, temperature):
        return loss_fn(model, images, labels, objective.learned_folding(theta), lam, temperature)

    @nnx.jit
    def step(model, optimizer, theta, folding_state, images, labels, lam, temperature):
        (loss, (logits, terms, stats)), (grads, theta_grad) = nnx.value_and_grad(
            loss_of_theta, argnums=(0, 1), has_aux=True)(model, theta, images, labels, lam, temperature)
        optimizer.update(model, grads)
        updates, folding_state = folding_optimizer.update(theta_grad, folding_state, theta)
        return (loss, (logits.argmax(-1) == labels).mean(), terms, stats, optax.apply_updates(theta, updates),
                folding_state)

    return step


@nnx.jit
def train_step(model, optimizer, images, labels):
    """One optimizer step. Returns (loss, accuracy) of the batch before the update."""
    (loss, logits), grads = nnx.value_and_grad(_loss_and_logits, has_aux=True)(model, images, labels)
    optimizer.update(model, grads)
    return loss, (logits.argmax(-1) == labels).mean()


@nnx.jit
def eval_step(model, images, labels):
    """Returns (summed loss, number correct) of a batch."""
    logits = model(images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
    return loss, (logits.argmax(-1) == labels).sum()


def evaluate(model, source: data_lib.Source, batch_size: int) -> dict:
    """Accuracy and mean loss over a whole source, with BatchNorm in inference mode."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for images, labels in data_lib.eval_batches(source, batch_size):
        loss, right = eval_step(model, jnp.asarray(images), jnp.asarray(labels))
        loss_sum += float(loss)
        correct += int(right)
    model.train()
    n = len(source)
    return {"accuracy": correct / n, "loss": loss_sum / n}


def total_steps(cfg: Config, steps_per_epoch: int) -> int:
    return cfg.train.steps if cfg.train.steps is not None else cfg.train.epochs * steps_per_epoch


def _prepare_run_dir(cfg: Config, *, resume: bool, force: bool) -> Path:
    run_dir = cfg.run_dir
    saved = run_dir / "config.yaml"
    if resume:
        if not saved.exists():
            raise RunError(f"cannot resume: {run_dir} has no config.yaml (no run was started there)")
        import yaml

        previous = yaml.safe_load(saved.read_text())
        current = config_lib.to_dict(cfg)
        if previous != current:
            diff = sorted(_diff_keys(previous, current))
            raise RunError(
                f"cannot resume {run_dir}: the config differs from the one it was started with "
                f"at {', '.join(diff)}"
            )
        return run_dir
    if run_dir.exists():
        if not force:
            raise RunError(
                f"run folder {run_dir} already exists: pass --resume to continue it, or --force "
                f"to delete it and start over"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    config_lib.save(cfg, saved)
    return run_dir


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


class _Checkpoints:
    """Orbax checkpoints of (model, optimizer) state, numbered by completed steps."""

    def __init__(self, directory: Path, keep: int):
        self.manager = ocp.CheckpointManager(
            directory.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, model, optimizer) -> None:
        if self.manager.latest_step() == step:
            return
        state = nnx.to_pure_dict(nnx.state((model, optimizer)))
        self.manager.save(step, args=ocp.args.StandardSave(state))

    def restore(self, step: int, model, optimizer) -> None:
        state = nnx.state((model, optimizer))
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(nnx.to_pure_dict(state)))
        nnx.replace_by_pure_dict(state, restored)
        nnx.update((model, optimizer), state)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _truncate_metrics(path: Path, last_step: int, total_steps: int) -> None:
    """Keeps the metric lines up to `last_step`, so a resumed run does not log a step twice (the
    final evaluation, redone by every run that reaches the end, is dropped too)."""
    if not path.exists():
        return

    def keep(record: dict) -> bool:
        final_eval = record["step"] == total_steps and "test_accuracy" in record
        return record["step"] <= last_step and not final_eval

    lines = [ln for ln in path.read_text().splitlines() if ln and keep(json.loads(ln))]
    path.write_text("".join(ln + "\n" for ln in lines))


def layer_report(model, descriptions, gates: dict | None = None) -> list[dict]:
    """Per sparse layer (`descriptions` = `nn.describe(model, in_shape)`): shapes, method, pattern,
    density, MACs and the pattern check. `gates` (`nn.measure_gates`) gives the measured density of
    dynamically gated layers (their weights are dense; their work depends on the input)."""
    rows = []
    gates = gates or {}
    layers = {layer.layer_name: layer for _, layer in nn.sparse_layers(model)}
    for desc in descriptions:
        layer = layers[desc.name]
        mask = np.asarray(layer.mask())
        density = gates[desc.name]["density"] if desc.name in gates else float(mask.mean())
        method = layer.current_method()  # with its learned density, under co-optimization
        check = method.check(mask, layer.layout)
        rows.append({
            "name": desc.name,
            "type": type(desc).__name__,
            "weight_shape": list(desc.weight_shape),
            "method": layer.sparsity.method,
            "pattern": method.pattern().describe(),
            "density": density,
            "weight_density": float(mask.mean()),
            "params": desc.params,
            "nonzero_params": int(np.count_nonzero(np.asarray(layer.effective_kernel()))),
            "macs": desc.macs,
            "effective_macs": desc.macs * density,
            "pattern_ok": check.ok,
            "pattern_check": check.detail,
        })
    return rows


def masks_of(model) -> dict[str, np.ndarray]:
    return {layer.layer_name: np.asarray(layer.mask(), np.uint8) for _, layer in nn.sparse_layers(model)}


def _setup(cfg: Config, source: str):
    """Data, model, batch stream and optimizer of a config, freshly initialised."""
    dataset = data_lib.load(cfg.data)
    model = nn.build_model(cfg, dataset.image_shape, dataset.num_classes, source=source)
    stream = data_lib.TrainStream(dataset.train, cfg.data.batch_size, cfg.seed, cfg.data.augment)
    steps = total_steps(cfg, stream.steps_per_epoch)
    optimizer = nnx.Optimizer(model, make_optimizer(cfg.optimizer, steps), wrt=nnx.Param)
    return dataset, model, stream, steps, optimizer


def load_run(run_dir: str | Path, step: int | None = None):
    """The config and trained model of a run folder, from its latest (or a given) checkpoint.

    Returns (config, model, dataset); the model is in inference mode.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise RunError(f"{run_dir} is not a run folder: it has no config.yaml")
    cfg = config_lib.load(run_dir / "config.yaml")
    dataset, model, _, _, optimizer = _setup(cfg, str(run_dir / "config.yaml"))
    checkpoints = _Checkpoints(run_dir / "checkpoints", cfg.train.keep_checkpoints)
    try:
        step = checkpoints.latest_step() if step is None else step
        if step is None or step not in checkpoints.manager.all_steps():
            raise RunError(f"{run_dir} has no checkpoint" + ("" if step is None else f" at step {step}"))
        checkpoints.restore(step, model, optimizer)
    finally:
        checkpoints.close()
    model.eval()
    return cfg, model, dataset


def run(cfg: Config, *, source: str = "<config>", resume: bool = False, force: bool = False,
        reporter: Reporter | None = None) -> dict:
    """Trains `cfg` into its run folder and returns the report (also written as report.json)."""
    from cooptim.hardware import device_of

    reporter = reporter or SilentReporter()
    device_of(cfg.hardware, source)  # an unknown device fails before training, not after
    dataset, model, stream, steps, optimizer = _setup(cfg, source)

    run_dir = _prepare_run_dir(cfg, resume=resume, force=force)
    checkpoints = _Checkpoints(run_dir / "checkpoints", cfg.train.keep_checkpoints)
    metrics_path = run_dir / "metrics.jsonl"
    start = 0
    if resume and (latest := checkpoints.latest_step()) is not None:
        checkpoints.restore(latest, model, optimizer)
        start = int(optimizer.step[...])
    _truncate_metrics(metrics_path, start, steps)

    objective, cost_step, stats = None, None, {}
    learned = _co_optimizing(cfg) and cfg.objective.folding == "learned"
    theta_state = None  # learned folding: (theta, its optimizer state)
    if _co_optimizing(cfg):
        from cooptim.objective import HardwareObjective

        try:
            objective = HardwareObjective.of(cfg, model, dataset.image_shape, source)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _load_folding(run_dir, objective, start)
        if learned:
            folding_optimizer = optax.adam(cfg.objective.folding_lr)
            cost_step = make_learned_folding_step(objective, folding_optimizer)
            theta_state = _load_learned_folding(run_dir, objective, folding_optimizer, start)
        else:
            cost_step = make_cost_aware_step(objective)

    model.train()
    reporter.start(steps, start)
    t_last, steps_since = time.perf_counter(), 0
    try:
        with metrics_path.open("a") as log:
            for step in range(start, steps):
                nn.set_progress(model, step / steps)
                nn.refresh_masks(model, step)
                images, labels = stream.batch(step)
                extra = {}
                if objective is None:
                    loss, acc = train_step(model, optimizer, jnp.asarray(images), jnp.asarray(labels))
                else:
                    if objective.due(step):
                        # the gates' activity on the last batch (read from the device only here)
                        gate_stats = {n: {"density": float(d), "channel": float(c)} for n, (d, c) in stats.items()}
                        objective.solve_folding(model, gate_stats)
                        _save_folding(run_dir, objective, step)
                    from cooptim.objective import lambda_at, temperature_at

                    lam = lambda_at(cfg.objective, step / steps)
                    temperature = jnp.float32(temperature_at(cfg.objective, step / steps))
                    if learned:
                        if theta_state is None:  # starts at the DSE's integer folding
                            theta = objective.initial_theta()
                            theta_state = (theta, folding_optimizer.init(theta))
                        loss, acc, terms, stats, *theta_state = cost_step(
                            model, optimizer, *theta_state, jnp.asarray(images), jnp.asarray(labels),
                            jnp.float32(lam), temperature)
                    else:
                        loss, acc, terms, stats = cost_step(
                            model, optimizer, jnp.asarray(images), jnp.asarray(labels), objective.folding,
                            jnp.float32(lam), temperature)
                    extra = {"lambda": lam, "overall_density": terms["overall_density"],
                             "modelled_throughput": terms["throughput"]}
                done = step + 1
                steps_since += 1
                if done % cfg.train.log_every == 0 or done == steps:
                    now = time.perf_counter()
                    record = {"step": done, "epoch": step // stream.steps_per_epoch,
                              "loss": float(loss), "accuracy": float(acc),
                              "steps_per_s": steps_since / max(now - t_last, 1e-9),
                              **{k: float(v) for k, v in extra.items()}}
                    t_last, steps_since = now, 0
                    log.write(json.dumps(record) + "\n")
                    reporter.step(done, record)
                if done % cfg.train.eval_every == 0 and done != steps:
                    ev = evaluate(model, dataset.test, cfg.data.eval_batch_size)
                    record = {"step": done, "test_accuracy": ev["accuracy"], "test_loss": ev["loss"]}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    reporter.evaluated(done, record)
                if done % cfg.train.checkpoint_every == 0:
                    log.flush()
                    checkpoints.save(done, model, optimizer)
                    if theta_state is not None:
                        _save_learned_folding(run_dir, done, theta_state)
            nn.set_progress(model, 1.0)
            checkpoints.save(steps, model, optimizer)
            if theta_state is not None:
                _save_learned_folding(run_dir, steps, theta_state)
            test = evaluate(model, dataset.test, cfg.data.eval_batch_size)
            record = {"step": steps, "test_accuracy": test["accuracy"], "test_loss": test["loss"]}
            log.write(json.dumps(record) + "\n")
            reporter.evaluated(steps, record)
    finally:
        checkpoints.close()
        reporter.close()

    report = build_report(cfg, model, dataset, steps, test, source)
    if theta_state is not None:  # the continuous folding the run ended with (the DSE's is in "sparse")
        report["hardware"]["learned_folding"] = {
            f: np.round(np.asarray(v, np.float64), 3).tolist()
            for f, v in objective.learned_folding(theta_state[0])._asdict().items()}
    np.savez_compressed(run_dir / "masks.npz", **masks_of(model))
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _co_optimizing(cfg: Config) -> bool:
    o = cfg.objective
    return o.weight > 0 or o.density_target is not None or o.learn_density


def _save_folding(run_dir: Path, objective, step: int) -> None:
    """Appends the folding solved at `step` to folding.json (the history of DSE solves), so that a
    resumed run continues with the folding the uninterrupted run had at its step."""
    _append_history(run_dir / "folding.json", step,
                    {"folding": {f: np.asarray(v).tolist() for f, v in objective.folding._asdict().items()}})


def _history(path: Path) -> list[dict]:
    """The entries of a per-step history file (folding.json, learned_folding.json); [] if none."""
    return json.loads(path.read_text()) if path.exists() else []


def _append_history(path: Path, step: int, entry: dict) -> None:
    """Adds `entry` at `step` to a history file, dropping later entries (left by an interrupted
    run that is now redoing those steps); written atomically."""
    history = [h for h in _history(path) if h["step"] < step]
    history.append({"step": step, **entry})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(history))
    tmp.replace(path)


def _save_learned_folding(run_dir: Path, step: int, theta_state) -> None:
    """Keeps the learned folding and its optimizer state at each checkpoint step
    (learned_folding.json), so that a resumed run continues from the same values."""
    _append_history(run_dir / "learned_folding.json", step,
                    {"leaves": [np.asarray(x).tolist() for x in jax.tree.leaves(theta_state)]})


def _load_learned_folding(run_dir: Path, objective, folding_optimizer, start: int):
    """(theta, optimizer state) saved at checkpoint step `start`, or None (a fresh start)."""
    saved = [h for h in _history(run_dir / "learned_folding.json") if h["step"] == start]
    if not saved or objective.folding is None:
        return None
    theta = objective.initial_theta()
    template = (theta, folding_optimizer.init(theta))
    leaves = [jnp.asarray(x, jnp.asarray(t).dtype) for x, t in zip(saved[-1]["leaves"], jax.tree.leaves(template))]
    return tuple(jax.tree.unflatten(jax.tree.structure(template), leaves))


def _load_folding(run_dir: Path, objective, start: int) -> None:
    """The folding in force at step `start` of an interrupted run (the last solve before it)."""
    import cost_models as cm

    history = [h for h in _history(run_dir / "folding.json") if h["step"] < start]
    if history:
        objective.folding = cm.Folding(**{f: np.asarray(v, np.int32) for f, v in history[-1]["folding"].items()})
        objective.dse_solves = len(history)


def build_report(cfg: Config, model, dataset: data_lib.Dataset, steps: int, test: dict,
                 source: str = "<config>") -> dict:
    from cooptim.hardware import hardware_report

    descriptions = nn.describe(model, dataset.image_shape)  # traced once, used by both reports
    gates = nn.measure_gates(model, (images for images, _ in
                                     data_lib.eval_batches(dataset.test, cfg.data.eval_batch_size)))
    layers = layer_report(model, descriptions, gates)
    hardware = hardware_report(model, descriptions, cfg, source, gates)
    for row, cycles in zip(layers, hardware["sparse"]["layer_cycles"]):
        row["cycles"] = cycles
    macs = sum(r["macs"] for r in layers)
    effective = sum(r["effective_macs"] for r in layers)
    params = sum(r["params"] for r in layers)
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "data": cfg.data.name,
        "model": cfg.model.name,
        "steps": steps,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "params": params,
        "nonzero_params": sum(r["nonzero_params"] for r in layers),
        "weight_density": sum(r["weight_density"] * r["params"] for r in layers) / params,
        "macs": macs,
        "effective_macs": effective,
        "mac_speedup": macs / effective,
        "pattern_ok": all(r["pattern_ok"] for r in layers),
        "hardware": hardware,
        "layers": layers,
    }


# --------------------------------------------------------------------------------------- CLI


class ProgressBar:
    """A tqdm bar with loss, accuracy and steps/s; evaluations are printed above it."""

    def __init__(self):
        self.bar = None

    def start(self, total_steps, first_step):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=first_step, unit="step", dynamic_ncols=True,
                        file=sys.stderr)

    def step(self, step, metrics):
        self.bar.update(step - self.bar.n)
        extra = {}
        if "modelled_throughput" in metrics:  # co-optimization: the relaxed design and density
            extra = {"img_per_s": f"{metrics['modelled_throughput']:,.0f}",
                     "density": f"{metrics['overall_density']:.3f}"}
        self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.3f}",
                             steps_per_s=f"{metrics['steps_per_s']:.0f}", **extra)

    def evaluated(self, step, metrics):
        self.bar.write(f"step {step}: test accuracy {metrics['test_accuracy']:.4f}, "
                       f"loss {metrics['test_loss']:.4f}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def print_report(report: dict, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['name']}: {report['model']} on {report['data']}, {report['steps']} steps")
    hw = report["hardware"]
    for col in ("layer", "method", "pattern", "weight shape", "density", "MACs", "eff. MACs", "cycles", "check"):
        table.add_column(col, justify="right" if col in ("density", "MACs", "eff. MACs", "cycles") else "left")
    for r in report["layers"]:
        name = f"[bold]{r['name']}[/]" if r["name"] == hw["bottleneck_layer"] else r["name"]
        table.add_row(name, r["method"], r["pattern"], "x".join(map(str, r["weight_shape"])),
                      f"{r['density']:.3f}", f"{r['macs']:,}", f"{r['effective_macs']:,.0f}",
                      f"{r['cycles']:,.0f}",
                      "[green]ok[/]" if r["pattern_ok"] else f"[red]{r['pattern_check']}[/]")
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    console.print(
        f"test accuracy [bold]{report['test_accuracy']:.4f}[/]   weight density "
        f"{report['weight_density']:.3f}   MACs/image {report['macs']:,} -> "
        f"{report['effective_macs']:,.0f} ({report['mac_speedup']:.2f}x fewer)"
    )
    hw_table = Table(title=f"{hw['accelerator']} accelerator on {hw['device']} @ {hw['clock_mhz']:g} MHz "
                           f"(bottleneck: {hw['bottleneck_layer']})")
    for col in ("", "images/s", "latency (us)", "DSP", "BRAM18", "LUT", "energy/image (uJ)"):
        hw_table.add_column(col, justify="right")
    for label in ("dense", "sparse"):
        c = hw[label]
        hw_table.add_row(label, f"{c['throughput']:,.0f}", f"{c['latency_s'] * 1e6:,.1f}", f"{c['dsp']:,.0f}",
                         f"{c.get('bram18', 0):,.0f}", f"{c.get('lut', 0):,.0f}", f"{c['energy_j'] * 1e6:,.2f}")
    console.print(hw_table)
    console.print(f"modelled speedup of the sparse design over the dense one: [bold]{hw['speedup']:.2f}x[/]")
    console.print(f"run folder: {run_dir}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cooptim.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optimizer.learning_rate=0.01")
    parser.add_argument("--resume", action="store_true", help="continue the run in the run folder")
    parser.add_argument("--force", action="store_true", help="delete an existing run folder first")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.resume and args.force:
        parser.error("--resume and --force exclude each other")
    try:
        cfg = config_lib.load(args.config, args.set)
        report = run(cfg, source=args.config, resume=args.resume, force=args.force,
                     reporter=SilentReporter() if args.quiet else ProgressBar())
    except (ConfigError, RunError, data_lib.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_report(report, cfg.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
