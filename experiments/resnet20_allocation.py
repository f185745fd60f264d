"""Cost-aware vs uniform density allocation for ResNet-20 on CIFAR-10-shaped inputs (hardware side).

    python experiments/resnet20_allocation.py

No data and no training: the question is only where the cost model puts the sparsity. For each
method (unstructured, csp) and overall density D of the pruned layers (every conv but the stem;
the head stays dense), the per-layer densities are moved by the gradient of the same objective the
trainer uses (`cooptim.objective.HardwareObjective.terms`: -log throughput under the relaxed
dataflow model + the overall-density target), with the folding re-solved by the greedy DSE every
25 steps. The result is scored by the greedy DSE on the ZCU102 against uniform density D. Writes
experiments/resnet20_allocation.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import cost_models as cm
from cooptim import config as config_lib
from cooptim import nn
from cooptim.objective import HardwareObjective, temperature_at

REPO = Path(__file__).resolve().parents[1]
METHODS = {"unstructured": "{{method: unstructured, weight_density: {d}}}",
           "csp (chunk 4)": "{{method: csp, weight_density: {d}, chunk: 4}}"}
DENSITIES = (0.5, 0.25)
STEPS, DSE_EVERY = 300, 25


def objective_for(method: str, density: float) -> HardwareObjective:
    cfg = config_lib.load(REPO / "configs/cifar10_resnet20_nm.yaml", overrides=[
        f"sparsity.default={METHODS[method].format(d=density)}",
        "objective.weight=1.0", f"objective.density_target={density}", "objective.temperature_end=0.05"])
    model = nn.build_model(cfg, (32, 32, 3), 10, abstract=True)
    return HardwareObjective.of(cfg, model, (32, 32, 3))


def dse_throughput(obj: HardwareObjective, weight: np.ndarray):
    density = cm.Density(np.asarray(weight, np.float32), np.ones(len(weight), np.float32))
    result = cm.dse.greedy(obj.net, density, obj.device)
    return float(result.cost.throughput), obj.net.names[int(np.argmax(np.asarray(result.cost.layer_cycles)))]


def allocate(obj: HardwareObjective, target: float) -> np.ndarray:
    """Per-layer densities of the pruned layers moved by the cost gradient (dense layers stay 1)."""
    pruned = jnp.asarray(obj.pruned)
    logit0 = np.log(target / (1 - target))
    params = jnp.full(len(obj.names), logit0, jnp.float32)
    opt = optax.adam(0.05)
    state = opt.init(params)

    def weights(p):
        return jnp.where(pruned, jax.nn.sigmoid(p), 1.0)

    @jax.jit
    def step(p, s, folding, temperature):
        def loss(p):
            density = cm.Density(weights(p), jnp.ones_like(p))
            return obj.terms(density, folding, 1.0, temperature)["loss"]
        g = jax.grad(loss)(p)
        updates, s = opt.update(g, s)
        return optax.apply_updates(p, updates), s

    folding = None
    for i in range(STEPS):
        if i % DSE_EVERY == 0:
            w = np.asarray(weights(params))
            folding = cm.dse.greedy(obj.net, cm.Density(w, np.ones_like(w)), obj.device).folding
        params, state = step(params, state, folding, temperature_at(obj.cfg, i / STEPS))
    w = np.asarray(weights(params))
    # hold the overall density at the target exactly: scale the pruned layers' densities
    macs = np.where(obj.pruned, obj.macs, 0.0)
    for _ in range(50):
        overall = (w * macs).sum() / macs.sum()
        w = np.where(obj.pruned, np.clip(w * target / overall, 0.0, 1.0), 1.0)
    return w


def main():
    rows = []
    for method in METHODS:
        for d in DENSITIES:
            obj = objective_for(method, d)
            start = time.perf_counter()
            uniform = np.where(obj.pruned, d, 1.0)
            u_tp, u_bottleneck = dse_throughput(obj, uniform)
            learned = allocate(obj, d)
            c_tp, c_bottleneck = dse_throughput(obj, learned)
            macs = np.where(obj.pruned, obj.macs, 0.0)
            overall = float((learned * macs).sum() / macs.sum())
            rows.append((method, d, overall, u_tp, c_tp, c_tp / u_tp, u_bottleneck, c_bottleneck,
                         time.perf_counter() - start, learned[obj.pruned]))
            print(method, d, f"{overall:.3f}", f"{u_tp:,.0f}", f"{c_tp:,.0f}", f"{c_tp / u_tp:.2f}x", flush=True)
    lines = ["# Cost-aware vs uniform allocation: ResNet-20, CIFAR-10-shaped input (hardware side)", "",
             "Command: `python experiments/resnet20_allocation.py` (writes this file; see its docstring).", "",
             "Every conv but the stem is pruned, and the head stays dense. The ZCU102 runs at 16-bit data. Throughput is",
             "the greedy DSE's on the exported densities, in images/s. `overall` is the MAC-weighted density of",
             "the pruned layers after the allocation, held at the target.", "",
             "| method | target density | overall | uniform img/s | cost-aware img/s | ratio | bottleneck (uniform -> cost-aware) | time |",
             "|---|---|---|---|---|---|---|---|"]
    for m, d, o, u, c, r, ub, cb, t, _ in rows:
        lines.append(f"| {m} | {d} | {o:.3f} | {u:,.0f} | {c:,.0f} | {r:.2f}x | {ub} -> {cb} | {t:.0f} s |")
    lines += ["", "Per-layer densities chosen (pruned layers in order):", ""]
    for m, d, *_, w in rows:
        lines.append(f"- {m} @ {d}: " + ", ".join(f"{x:.2f}" for x in w))
    (REPO / "experiments/resnet20_allocation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
