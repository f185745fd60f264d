"""HASS-style hardware-aware sparsity search (Yu et al., FPL 2024) on a trained network.

    python -m cooptim.search --config configs/search_digits.yaml [--mode both|gradient|random]

Per layer, a weight density d_l (magnitude pruning at the (1 - d_l) quantile of |W_l|) and an
activation threshold a_l (inputs with |x| <= a_l are zeroed) are searched on the trained weights,
without retraining, for the highest modelled throughput whose validation accuracy stays within
`accuracy_drop` points of the unpruned network. Throughput is the greedy-DSE dataflow design with
the HASS unstructured pattern, fed the *measured* weight and activation densities.

Two modes, on the same budget of `budget` candidate evaluations (accuracy on the validation split
plus one DSE):
- random: HASS's black-box baseline, candidates drawn uniformly (d_l in [min_density, 1],
  a_l in [0, max_threshold x the layer's input RMS]);
- gradient: the candidate is a differentiable function of (logit d, log a): masks relaxed to
  sigmoids, loss = cross-entropy on training batches + lambda x (-log relaxed throughput); between
  two evaluations it takes `steps_per_eval` Adam steps, and lambda is raised after a candidate
  that meets the accuracy floor and lowered after one that does not.

The search config:
    name: search_digits
    train_config: dense_digits.yaml   # the network to prune; trained first if it has no report
    budget: 30
    accuracy_drop: 1.0
    seed: 0
Writes OUTPUT_DIR/NAME/search.json and search.png (best throughput vs evaluations, per mode).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from flax import nnx
from pydantic import Field, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

import cost_models as cm
from cooptim import config as config_lib
from cooptim import nn, train
from cooptim.run import load_run
from cooptim.config import ConfigError
from cooptim.hardware import design, device_of, resource_params
from cooptim.sparsity._config import STRICT


@dataclass(frozen=True, config=STRICT)
class SearchConfig:
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    train_config: StrictStr
    budget: Annotated[int, Field(ge=1, strict=True)] = 30
    accuracy_drop: Annotated[float, Field(ge=0.0, strict=True)] = 1.0
    min_density: Annotated[float, Field(gt=0.0, le=1.0, strict=True)] = 0.05
    max_threshold: Annotated[float, Field(ge=0.0, strict=True)] = 0.5
    steps_per_eval: Annotated[int, Field(ge=1, strict=True)] = 10
    learning_rate: Annotated[float, Field(gt=0.0, strict=True)] = 0.05
    cost_weight: Annotated[float, Field(gt=0.0, strict=True)] = 0.5
    validation_size: Annotated[int, Field(ge=10, strict=True)] = 300
    seed: Annotated[int, Field(ge=0, strict=True)] = 0
    output_dir: StrictStr = "runs"


@dataclasses.dataclass
class Problem:
    """A trained network, its layers, data splits and the cost model it is scored by."""

    model: nnx.Module
    names: tuple[str, ...]
    net: cm.Network
    device: cm.Device
    hardware: config_lib.HardwareConfig  # the run's: its DSE's memory placement, budget and RAM model
    rms: np.ndarray  # (L,) RMS of each layer's input on the validation split
    val: tuple[np.ndarray, np.ndarray]
    train_images: np.ndarray
    train_labels: np.ndarray
    base_accuracy: float

    def node_density(self, weight, activation, xp=np) -> cm.Density:
        """The cost model's (nodes,) densities from the searched layers' (L,) ones; the nodes
        without weights (pools, activations, adds) are dense."""
        slots = np.array([self.net.names.index(n) for n in self.names])
        if xp is jnp:
            full = lambda v: jnp.ones(len(self.net), jnp.float32).at[slots].set(v)
        else:
            def full(v):
                out = np.ones(len(self.net), np.float32)
                out[slots] = np.asarray(v, np.float32)
                return out
        return cm.Density(full(weight), full(activation))


def _forward(model, names, images, densities, thresholds, *, soft: bool, sharpness: float = 20.0):
    """Logits and the per-layer activation densities of the model pruned at (densities,
    thresholds), each (L,). soft=True: sigmoid masks (differentiable in both). The model has
    searchable input thresholds (`load_run(..., input_thresholds=True)`): they are set in its
    state, an explicit argument of this function."""
    graphdef, state = nnx.split(model)
    index = {n: i for i, n in enumerate(names)}
    flat = dict(nnx.to_flat_state(state))
    for path, layer in nn.sparse_layers(model):
        w = layer.kernel[...]
        i = index[layer.layer_name]
        d = densities[i]
        t = jnp.quantile(jnp.abs(w), 1.0 - d)
        if soft:
            scale = jnp.abs(w).std() + 1e-12
            keep = jax.nn.sigmoid(sharpness * (jnp.abs(w) - t) / scale)
        else:
            keep = (jnp.abs(w) > t) | (d >= 1.0)
        flat[(*path, "kernel")] = flat[(*path, "kernel")].replace(w * keep)
        flat[(*path, "input_threshold")] = flat[(*path, "input_threshold")].replace(thresholds[i])
        flat[(*path, "input_sharpness")] = flat[(*path, "input_sharpness")].replace(
            jnp.float32(sharpness if soft else 0.0))
    pruned = nnx.merge(graphdef, nnx.from_flat_state(flat))
    logits, taps = nn.capture(pruned, images, nn.ActivationKept)
    return logits, jnp.stack([taps[nn.ActivationKept][n] for n in names])


@functools.partial(jax.jit, static_argnames=("graphdef", "names", "soft"))
def _jitted_forward(graphdef, weights, names, images, densities, thresholds, soft):
    return _forward(nnx.merge(graphdef, weights), names, images, densities, thresholds, soft=soft)


def candidate_forward(model, names, images, densities, thresholds, *, soft: bool):
    """`_forward` compiled once per model structure (the weights are an argument, not constants)."""
    graphdef, weights = nnx.split(model)
    return _jitted_forward(graphdef, weights, tuple(names), images, densities, thresholds, soft)


def build_problem(cfg: SearchConfig, source: Path) -> Problem:
    train_path = (source.parent / cfg.train_config)
    tcfg = config_lib.load(train_path)
    if not (tcfg.run_dir / "report.json").exists():
        train.run(tcfg, source=str(train_path), force=True)
    tcfg, model, dataset = load_run(tcfg.run_dir, input_thresholds=True)
    graph = nn.graph_of(model, dataset.image_shape)
    names = tuple(layer.name for layer in graph.weighted)
    net = cm.Network.build(graph, {n: cm.UnstructuredPattern() for n in names},
                           cm.Precision(tcfg.hardware.data_bits, tcfg.hardware.weight_bits))
    # validation: the first examples of the training split (the test split stays unseen)
    images, labels = dataset.train.get(np.arange(len(dataset.train)))
    val = (images[: cfg.validation_size], labels[: cfg.validation_size])
    logits, taps = nn.capture(model, jnp.asarray(val[0]), nn.LayerInput)
    rms = {name: float(jnp.sqrt(jnp.mean(x ** 2))) for name, (x, _) in taps[nn.LayerInput].items()}
    base = float((np.asarray(logits).argmax(-1) == val[1]).mean())
    return Problem(model, names, net, device_of(tcfg.hardware), tcfg.hardware, np.array([rms[n] for n in names]),
                   val, images[cfg.validation_size:], labels[cfg.validation_size:], base)


def evaluate(problem: Problem, densities, thresholds) -> tuple[dict, cm.Folding]:
    """One candidate: (validation accuracy and the DSE'd throughput at its measured densities,
    that design's folding)."""
    d, a = jnp.asarray(densities, jnp.float32), jnp.asarray(thresholds, jnp.float32)
    logits, act = candidate_forward(problem.model, problem.names, jnp.asarray(problem.val[0]), d, a, soft=False)
    accuracy = float((np.asarray(logits).argmax(-1) == problem.val[1]).mean())
    result = design(problem.net, problem.node_density(np.asarray(d), np.asarray(act)), problem.hardware,
                    problem.device)
    return {"accuracy": accuracy, "throughput": float(result.cost.throughput),
            "weight_density": np.asarray(d).tolist(), "activation_density": np.asarray(act).tolist(),
            "thresholds": np.asarray(a).tolist()}, result.folding


def random_search(problem: Problem, cfg: SearchConfig) -> list[dict]:
    rng = np.random.default_rng(cfg.seed)
    history = []
    for _ in range(cfg.budget):
        # densities log-uniform in [min_density, 1], thresholds uniform in [0, max_threshold x RMS]
        d = np.exp(rng.uniform(np.log(cfg.min_density), 0.0, len(problem.names)))
        a = rng.uniform(0.0, cfg.max_threshold, len(problem.names)) * problem.rms
        history.append(evaluate(problem, d, a)[0])
    return history


def gradient_search(problem: Problem, cfg: SearchConfig) -> list[dict]:
    L = len(problem.names)
    params = {"density_logit": jnp.full((L,), 2.0), "log_threshold": jnp.log(jnp.asarray(problem.rms) * 0.05)}
    opt = optax.adam(cfg.learning_rate)
    state = opt.init(params)
    folding = design(problem.net, cm.Density.dense(problem.net), problem.hardware, problem.device).folding
    min_d = cfg.min_density

    def candidate(p):
        return min_d + (1 - min_d) * jax.nn.sigmoid(p["density_logit"]), jnp.exp(p["log_threshold"])

    graphdef, weights = nnx.split(problem.model)

    def loss_fn(p, images, labels, lam, folding, weights):
        d, a = candidate(p)
        # the weights are an argument, not jit constants (XLA would constant-fold their sorts)
        logits, act = _forward(nnx.merge(graphdef, weights), problem.names, images, d, a, soft=True)
        task = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        cost = cm.dataflow.evaluate(problem.net, folding, problem.node_density(d, act, jnp), problem.device,
                                    temperature=0.05, resources=resource_params(problem.hardware))
        return task - lam * jnp.log(cost.throughput)

    @jax.jit
    def step(p, s, images, labels, lam, folding, weights):
        g = jax.grad(loss_fn)(p, images, labels, lam, folding, weights)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s

    rng = np.random.default_rng(cfg.seed)
    floor = problem.base_accuracy - cfg.accuracy_drop / 100
    lam, history = cfg.cost_weight, []
    for _ in range(cfg.budget):
        for _ in range(cfg.steps_per_eval):
            pick = rng.choice(len(problem.train_labels), 64, replace=False)
            params, state = step(params, state, jnp.asarray(problem.train_images[pick]),
                                 jnp.asarray(problem.train_labels[pick]), jnp.float32(lam), folding, weights)
        d, a = candidate(params)
        # the accuracy floor steers lambda; the folding follows the candidate (DSE, as HASS does)
        result, folding = evaluate(problem, d, a)
        history.append(result)
        lam = lam * 1.5 if result["accuracy"] >= floor else lam / 2
    return history


def best_so_far(history: list[dict], floor: float, start: float = 0.0) -> list[float]:
    """The best throughput within the accuracy floor after each evaluation, from `start` (the
    unpruned network's, which meets the floor by definition)."""
    best, out = start, []
    for h in history:
        if h["accuracy"] >= floor:
            best = max(best, h["throughput"])
        out.append(best)
    return out


def run(path: str | Path, modes=("gradient", "random"), budget: int | None = None) -> dict:
    """Runs the search file's modes (`budget`, when given, replaces the file's evaluation budget)."""
    path = Path(path)
    try:
        cfg = TypeAdapter(SearchConfig).validate_python(yaml.safe_load(path.read_text()))
        if budget is not None:
            cfg = TypeAdapter(SearchConfig).validate_python({**dataclasses.asdict(cfg), "budget": budget})
    except OSError as e:
        raise ConfigError(f"{path}: cannot read search file ({e.strerror})") from None
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"{path}: '{'.'.join(map(str, first['loc']))}': {first['msg']}") from None
    problem = build_problem(cfg, path)
    floor = problem.base_accuracy - cfg.accuracy_drop / 100
    # the reference: the unpruned network on a dense dataflow design (no sparse engines)
    dense_net = cm.Network.build(problem.net.graph, None, problem.net.precision)
    dense = float(design(dense_net, cm.Density.dense(dense_net), problem.hardware, problem.device).cost.throughput)
    results = {"name": cfg.name, "layers": list(problem.names), "base_accuracy": problem.base_accuracy,
               "accuracy_floor": floor, "dense_throughput": dense, "budget": cfg.budget, "modes": {}}
    for mode in modes:
        start = time.perf_counter()
        history = (gradient_search if mode == "gradient" else random_search)(problem, cfg)
        wall = time.perf_counter() - start
        curve = best_so_far(history, floor, start=dense)
        feasible = [h for h in history if h["accuracy"] >= floor]
        best = max(feasible, key=lambda h: h["throughput"]) if feasible else None
        results["modes"][mode] = {"wall_s": wall, "best": best, "best_throughput": curve[-1],
                                  "curve": curve, "history": history}
    out = Path(cfg.output_dir) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(results, indent=1))
    _plot(results, out / "search.png")
    return results


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, r in results["modes"].items():
        ax.plot(range(1, len(r["curve"]) + 1), r["curve"], marker=".", label=f"{mode} ({r['wall_s']:.0f} s)")
    ax.axhline(results["dense_throughput"], color="grey", linestyle=":", label="dense design")
    ax.set_xlabel("candidate evaluations")
    ax.set_ylabel("best images/s within the accuracy floor")
    ax.set_title(results["name"])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
