"""Cost-aware vs uniform density allocation on digits, at the same overall density.

    python experiments/cost_aware_vs_uniform.py [--workers 2] [--seeds 0 1]

For each method and target density D, two runs of the same config: `uniform` gives every pruned
layer density D; `cost-aware` gives each pruned layer a learned density variable and trains with
the hardware cost in the loss (`objective: {weight: 1, density_target: D, learn_density: true}`),
so the MAC-weighted density of the pruned layers is held at D while the gradient of the relaxed
dataflow cost model moves sparsity between layers. Both are scored by the same greedy DSE on the
ZCU102. Writes experiments/cost_aware_vs_uniform.md (the discussion below its table is kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = "runs/cost_aware"
BASE = "configs/digits_cost_aware.yaml"

# label -> (sparsity.default at density D, sparsity.layers)
METHODS = {
    "csp (all layers, chunk 2)": (lambda d: f"{{method: csp, weight_density: {d}, chunk: 2}}", "{}"),
    "unstructured (all layers)": (lambda d: f"{{method: unstructured, weight_density: {d}}}", "{}"),
    "nm M=8 (conv1, head dense)": (lambda d: f"{{method: nm, n: {round(d * 8)}, m: 8}}",
                                   "{conv1: {method: dense}, head: {method: dense}}"),
    "balanced_group group=16 (conv1 dense)": (lambda d: f"{{method: balanced_group, keep: {round(d * 16)}}}",
                                              "{conv1: {method: dense}}"),
    "dynamic channel_group=4 (conv1, head dense)": (
        lambda d: f"{{method: dynamic, target: {d}, channel_group: 4}}",
        "{conv1: {method: dense}, head: {method: dense}}"),
}
# objective keys per method besides the defaults: the gates' density is the batch's measured
# activity, which the default density_weight (500) pushes so hard that accuracy collapses at 0.25
OBJECTIVE_EXTRA = {"dynamic": ", density_weight: 20.0"}
DENSITIES = (0.5, 0.25)


def run_one(name: str, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "cooptim.train", "--config", BASE, "--quiet", "--force",
           "--set", f"name={name}", "--set", f"output_dir={OUT_DIR}"]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-2000:]}")
    return json.loads((REPO / OUT_DIR / name / "report.json").read_text())


def pruned_density(report: dict) -> float:
    rows = [r for r in report["layers"] if r["method"] != "dense"]
    return sum(r["effective_macs"] for r in rows) / sum(r["macs"] for r in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="experiments/cost_aware_vs_uniform.md")
    parser.add_argument("--only", nargs="+", default=None, metavar="METHOD",
                        help="run only these methods (first word of the label); other rows of --out are kept")
    args = parser.parse_args()

    jobs = []
    for label, (method, layers) in METHODS.items():
        if args.only and label.split()[0] not in args.only:
            continue
        for d in DENSITIES:
            for seed in args.seeds:
                common = [f"seed={seed}", f"sparsity.default={method(d)}", f"sparsity.layers={layers}"]
                slug = label.split()[0]
                jobs.append((label, d, "uniform", f"{slug}-{d}-uniform-s{seed}", common + ["objective={}"]))
                jobs.append((label, d, "cost-aware", f"{slug}-{d}-aware-s{seed}", common + [
                    f"objective={{weight: 1.0, density_target: {d}, learn_density: true"
                    f"{OBJECTIVE_EXTRA.get(slug, '')}}}"]))
    with ThreadPoolExecutor(args.workers) as pool:
        reports = list(pool.map(lambda job: run_one(job[3], job[4]), jobs))

    out = Path(args.out)
    previous = out.read_text() if out.exists() else ""
    kept = {}  # table rows of methods not rerun, by (label, density)
    for line in previous.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 7 and cells[0] in METHODS and args.only and cells[0].split()[0] not in args.only:
            kept[(cells[0], float(cells[1]))] = line
    rows: dict = {}
    for (label, d, kind, _, _), report in zip(jobs, reports):
        rows.setdefault((label, d), {}).setdefault(kind, []).append(report)
    lines = [
        "# Cost-aware vs uniform density allocation",
        "",
        f"Command: `python experiments/cost_aware_vs_uniform.py --seeds {' '.join(map(str, args.seeds))}` "
        f"({datetime.date.today()}, {os.cpu_count()} CPU cores). Digits CNN, 40 epochs of Adam "
        f"({BASE}), ZCU102 @ 200 MHz, 16-bit, greedy DSE for every network. `density` is the "
        "MAC-weighted density of the pruned layers as trained (mean over seeds); the ratio is the "
        "cost-aware run's modelled throughput over the uniform run's.",
        "",
        "| method | target density | uniform: accuracy / density / images/s | cost-aware: accuracy / density "
        "/ images/s | per-layer densities (cost-aware, seed 0) | throughput ratio | accuracy change |",
        "|---|---|---|---|---|---|---|",
    ]
    new_rows = {}
    for (label, d), kinds in rows.items():
        cells = {}
        for kind, reps in kinds.items():
            acc = np.mean([r["test_accuracy"] for r in reps]) * 100
            dens = np.mean([pruned_density(r) for r in reps])
            thr = np.mean([r["hardware"]["sparse"]["throughput"] for r in reps])
            cells[kind] = (acc, dens, thr)
        per_layer = ", ".join(f"{r['name']} {r['density']:.2f}" for r in kinds["cost-aware"][0]["layers"])
        u, a = cells["uniform"], cells["cost-aware"]
        new_rows[(label, d)] = (f"| {label} | {d} | {u[0]:.2f} / {u[1]:.3f} / {u[2]:,.0f} | {a[0]:.2f} / "
                                f"{a[1]:.3f} / {a[2]:,.0f} | {per_layer} | {a[2] / u[2]:.2f}x | {a[0] - u[0]:+.2f} pt |")
    every = {**kept, **new_rows}
    lines += [every[(label, d)] for label in METHODS for d in DENSITIES if (label, d) in every]
    lines += ["", f"Raw reports: `{OUT_DIR}/*/report.json` (not committed)."]
    discussion = previous[previous.index("\n## "):] if "\n## " in previous else ""
    out.write_text("\n".join(lines) + "\n" + discussion)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
