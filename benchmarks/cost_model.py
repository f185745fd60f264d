"""Speed of the dataflow cost model and its DSE on ResNet-18 (ImageNet shapes), beside fpgaConvNet's.

    python benchmarks/cost_model.py [--peer-python /path/to/peer/venv/bin/python] [--configs N]

One table, every figure measured in this run:
- the greedy DSE in a fresh Python process (a subprocess: the import of cost_models apart from the
  DSE itself, which includes building the option table and the final cost), and warm, and with
  the weights placed by the memory plans (`memory=on_chip` on the U250, `streamed` on the ZCU102);
- one evaluation of the full discrete `Cost` (jitted, compile time reported apart; and the NumPy
  path the DSE uses), on the same 21 conv/fc layers the peer evaluates and on the whole 56-node
  graph;
- the peer (fpgaconvnet-model 0.1.4.2, hls backend; see benchmarks/peer_fpgaconvnet.py) on those
  21 layers, on its optimiser's own path (layers built once; per evaluation each layer's folding
  set, which runs its update(), then latency and resources read) and built from scratch;
- the relaxed cost + gradient, one call and vmapped over N folding/density configurations, for a
  2:4 ResNet-18 and an all-unstructured (HASS) one, compile time apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import cost_models as cm

DEVICE = cm.get_device("u250")


def median_time(fn, *args, repeats=50):
    """(seconds of the first call, median seconds of the next `repeats`)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def resnet18(pattern=None, compute_only=False):
    graph = cm.networks.resnet18()
    if compute_only:  # the layers the peer benchmark evaluates: 20 convs and the fc, as a chain
        graph = [l for l in graph.layers if isinstance(l, (cm.Conv2D, cm.Dense))]
        names = [l.name for l in graph if isinstance(l, cm.Conv2D)]
    else:
        names = [l.name for l in graph.layers if isinstance(l, cm.Conv2D)]
    return cm.Network.build(graph, {n: pattern for n in names} if pattern else None)


def fresh_process_dse() -> dict:
    """The greedy DSE of a 2:4 ResNet-18 on a U250 in a new interpreter, timed inside it."""
    code = textwrap.dedent("""
        import json, time
        t0 = time.perf_counter()
        import cost_models as cm
        t1 = time.perf_counter()
        graph = cm.networks.resnet18()
        convs = {l.name: cm.NMPattern(2, 4) for l in graph.layers if isinstance(l, cm.Conv2D)}
        net = cm.Network.build(graph, convs)
        result = cm.dse.greedy(net, cm.Density.from_patterns(net), cm.get_device("u250"))
        throughput = float(result.cost.throughput)
        t2 = time.perf_counter()
        print(json.dumps({"import_s": t1 - t0, "dse_s": t2 - t1, "throughput": throughput,
                          "evaluations": result.evaluations}))
    """)
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def relaxed_rows(pattern_name, pattern, n_configs):
    net = resnet18(pattern)
    L = len(net)
    ones = jnp.ones(L, jnp.float32)

    def objective(d_w, theta):
        folding = cm.Folding(*(jnp.exp(x) for x in theta))
        cost = cm.evaluate(net, folding, cm.Density(d_w, ones), DEVICE, temperature=0.05)
        return -jnp.log(cost.throughput) + cost.utilisation["dsp"]

    rng = np.random.default_rng(0)
    d = jnp.asarray(rng.uniform(0.1, 1.0, L), jnp.float32)
    theta = tuple(jnp.asarray(rng.uniform(0.0, 2.0, L), jnp.float32) for _ in range(4))
    first, one = median_time(jax.jit(jax.value_and_grad(objective, argnums=(0, 1))), d, theta)
    rows = [(f"relaxed cost + gradient, {pattern_name}, one jitted call", f"{one * 1e3:.3f} ms",
             f"compile + first call {first:.2f} s")]
    ds = jnp.asarray(rng.uniform(0.1, 1.0, (n_configs, L)), jnp.float32)
    thetas = tuple(jnp.asarray(rng.uniform(0.0, 2.0, (n_configs, L)), jnp.float32) for _ in range(4))
    batched = jax.jit(jax.vmap(jax.value_and_grad(objective, argnums=(0, 1))))
    first, many = median_time(batched, ds, thetas, repeats=5)
    rows.append((f"relaxed cost + gradient, {pattern_name}, vmap over {n_configs:,} configurations",
                 f"{many * 1e3:.1f} ms", f"{n_configs / many:,.0f} configs/s; compile + first call {first:.2f} s"))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-python", help="python of a venv with fpgaconvnet-model 0.1.4.2")
    parser.add_argument("--configs", type=int, default=10_000)
    args = parser.parse_args()
    rows = []

    fresh = fresh_process_dse()
    rows.append(("greedy DSE, ResNet-18 2:4 on U250, fresh process", f"{fresh['dse_s']:.3f} s",
                 f"{fresh['throughput']:,.0f} img/s, {fresh['evaluations']} evaluations; "
                 f"import cost_models {fresh['import_s']:.2f} s before it"))
    net = resnet18(cm.NMPattern(2, 4))
    density = cm.Density.from_patterns(net)
    _, warm = median_time(lambda: cm.dse.greedy(net, density, DEVICE).cost.throughput, repeats=20)
    rows.append(("greedy DSE, ResNet-18 2:4 on U250, warm", f"{warm * 1e3:.1f} ms", "median of 20"))
    dense = resnet18()
    for memory, device in (("on_chip", DEVICE), ("streamed", cm.get_device("zcu102"))):
        _, planned = median_time(lambda: cm.dse.greedy(dense, cm.Density.dense(dense), device,
                                                        memory=memory).cost.throughput, repeats=5)
        best = cm.dse.greedy(dense, cm.Density.dense(dense), device, memory=memory)
        rows.append((f"greedy DSE, dense ResNet-18 on {device.name.upper()}, memory={memory}", f"{planned * 1e3:.0f} ms",
                     f"{float(best.cost.throughput):,.0f} img/s; the weights placed at every candidate"))

    ours = {}
    for label, compute_only in (("21 conv/fc layers", True), ("whole graph, 56 nodes", False)):
        net = resnet18(compute_only=compute_only)
        folding, density = cm.Folding.minimal(net), cm.Density.dense(net)
        first, jitted = median_time(jax.jit(lambda f, d, net=net: cm.evaluate(net, f, d, DEVICE)), folding, density)
        _, numpy_path = median_time(lambda: cm.evaluate(net, folding, density, DEVICE, xp=np).throughput)
        ours[label] = jitted
        rows.append((f"one full discrete Cost, {label}, jitted", f"{jitted * 1e3:.3f} ms",
                     f"compile + first call {first:.2f} s"))
        rows.append((f"one full discrete Cost, {label}, NumPy (what the DSE's final cost uses)",
                     f"{numpy_path * 1e3:.3f} ms", "no compilation"))

    if args.peer_python:
        env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
        out = subprocess.run([args.peer_python, str(Path(__file__).with_name("peer_fpgaconvnet.py")),
                              "--time-resnet18"], capture_output=True, text=True, env=env, check=True)
        peer = json.loads(out.stdout.strip().splitlines()[-1])
        mine = ours["21 conv/fc layers"]
        rows.append(("fpgaconvnet-model 0.1.4.2, the same 21 layers, its update path",
                     f"{peer['seconds_per_network_update'] * 1e3:.2f} ms",
                     f"ours (jitted) {peer['seconds_per_network_update'] / mine:,.0f}x faster per evaluation"))
        rows.append(("fpgaconvnet-model 0.1.4.2, the same 21 layers, each built from scratch",
                     f"{peer['seconds_per_network'] * 1e3:.1f} ms", "not the peer's optimiser path: shown, not compared"))

    for name, pattern in (("2:4", cm.NMPattern(2, 4)), ("all-unstructured (HASS)", cm.UnstructuredPattern())):
        rows.extend(relaxed_rows(name, pattern, args.configs))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cost model speed, {os.cpu_count()} CPU cores, jax {jax.__version__}")
    for col in ("what", "time", "note"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


if __name__ == "__main__":
    sys.exit(main())
