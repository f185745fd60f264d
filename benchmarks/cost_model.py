"""Speed of the dataflow cost model on ResNet-18 (ImageNet shapes), against fpgaConvNet's own model.

    python benchmarks/cost_model.py [--peer-python /path/to/peer/venv/bin/python]

Prints a table: jitted cost + gradient per call; configurations per second under vmap; the greedy
DSE's wall time; and, when the peer's interpreter is given (see benchmarks/peer_fpgaconvnet.py),
the peer's time for one evaluation of the same network, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import cost_models as cm


def timeit(fn, *args, repeats=200):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-python", help="python of a venv with fpgaconvnet-model 0.1.4.2")
    parser.add_argument("--configs", type=int, default=10_000)
    args = parser.parse_args()

    graph = cm.networks.resnet18()
    patterns = {l.name: cm.NMPattern(2, 4) for l in graph.layers if isinstance(l, cm.Conv2D) and l.kernel == (3, 3)}
    net = cm.Network.build(graph, patterns)
    device = cm.get_device("u250")
    density = cm.Density.from_patterns(net)
    rows = []

    t0 = time.perf_counter()
    best = cm.dse.greedy(net, density, device)
    rows.append(("greedy DSE, ResNet-18 2:4 on U250", f"{time.perf_counter() - t0:.2f} s",
                 f"{float(best.cost.throughput):,.0f} img/s, {best.evaluations} evaluations"))

    theta = tuple(jnp.log(jnp.asarray(f, jnp.float32)) for f in best.folding)

    def objective(d_w, theta):
        folding = cm.Folding(*(jnp.exp(x) for x in theta))
        cost = cm.evaluate(net, folding, cm.Density(d_w, density.activation), device, temperature=0.05)
        return -jnp.log(cost.throughput) + cost.utilisation["dsp"]

    value_and_grad = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))
    t_grad = timeit(value_and_grad, jnp.asarray(density.weight), theta)
    rows.append(("cost + gradient (relaxed, jitted), one call", f"{t_grad * 1e3:.3f} ms", "target < 1 ms"))

    rng = np.random.default_rng(0)
    options = cm.dse.factor_options(net)
    n = args.configs
    foldings = cm.Folding(*(np.stack([rng.choice(o[f], size=n) for o in options], axis=1).astype(np.int32)
                            for f in cm.Folding._fields))
    densities = cm.Density(jnp.asarray(rng.uniform(0.1, 1.0, (n, len(net))), jnp.float32),
                           jnp.ones((n, len(net)), jnp.float32))
    batched = jax.jit(jax.vmap(lambda f, d: cm.evaluate(net, f, d, device).throughput))
    t_batch = timeit(batched, foldings, densities, repeats=5)
    rate = n / t_batch
    rows.append((f"vmap over {n:,} folding/density configurations", f"{t_batch * 1e3:.1f} ms",
                 f"{rate:,.0f} configs/s (target > 10,000)"))

    single = jax.jit(lambda f, d: cm.evaluate(net, f, d, device).throughput)
    t_single = timeit(single, best.folding, density)
    rows.append(("one evaluation (discrete, jitted)", f"{t_single * 1e3:.3f} ms", ""))

    if args.peer_python:
        env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
        out = subprocess.run([args.peer_python, str(Path(__file__).with_name("peer_fpgaconvnet.py")),
                              "--time-resnet18"], capture_output=True, text=True, env=env, check=True)
        t_peer = json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_network"]
        rows.append(("fpgaconvnet-model 0.1.4.2, one ResNet-18 evaluation", f"{t_peer * 1e3:.1f} ms",
                     f"ours is {t_peer / t_single:,.0f}x faster per evaluation, "
                     f"{t_peer * rate:,.0f}x in throughput under vmap"))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cost model speed, {os.cpu_count()} CPU cores, jax {jax.__version__}")
    for col in ("what", "time", "note"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
