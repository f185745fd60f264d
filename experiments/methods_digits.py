"""Every sparsity method on digits at ~50% and ~75% of MACs removed, 3 seeds each.

    python experiments/methods_digits.py [--workers 2] [--out experiments/methods_digits.md]

Trains with the methods' configs in configs/ (first and last layers dense), writes each run to
runs/methods_digits/, and writes the table: accuracy (mean and spread over seeds), achieved
density of the pruned layers and of the whole network's MACs, and the cost model's modelled
throughput on the ZCU102 (dataflow design, greedy DSE) against the dense network.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = "runs/methods_digits"

# (label, config, {target: sparsity.default as YAML}): ~50% and ~75% of the MACs of the pruned layers
METHODS = [
    ("nm (SR-STE)", "quickstart", {"50%": "{method: nm, n: 2, m: 4}", "75%": "{method: nm, n: 1, m: 4}"}),
    ("bdwp (SAT)", "digits_bdwp", {"50%": "{method: bdwp, n: 4, m: 8}", "75%": "{method: bdwp, n: 2, m: 8}"}),
    ("balanced_group (Kang)", "digits_balanced_group",
     {"50%": "{method: balanced_group, keep: 8}", "75%": "{method: balanced_group, keep: 4}"}),
    ("csp", "digits_csp", {"50%": "{method: csp, weight_density: 0.5}", "75%": "{method: csp, weight_density: 0.25}"}),
    ("dynamic (DPACS)", "digits_dynamic", {"50%": "{method: dynamic, target: 0.5, channel_group: 4}",
                                           "75%": "{method: dynamic, target: 0.25, channel_group: 4}"}),
    ("unstructured (HASS)", "digits_unstructured",
     {"50%": "{method: unstructured, weight_density: 0.5}", "75%": "{method: unstructured, weight_density: 0.25}"}),
]
SEEDS = (0, 1, 2)


def run_one(config: str, method_yaml: str | None, seed: int, name: str) -> dict:
    cmd = [sys.executable, "-m", "cooptim.train", "--config", f"configs/{config}.yaml", "--quiet", "--force",
           "--set", f"seed={seed}", "--set", f"name={name}", "--set", f"output_dir={OUT_DIR}"]
    if method_yaml:
        cmd += ["--set", f"sparsity.default={method_yaml}"]
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-2000:]}")
    return json.loads((REPO / OUT_DIR / name / "report.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="experiments/methods_digits.md")
    args = parser.parse_args()

    jobs = [("dense", "dense_digits", None, "-", s) for s in SEEDS]
    for label, config, targets in METHODS:
        for target, spec in targets.items():
            jobs += [(label, config, spec, target, s) for s in SEEDS]
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_one, config, spec, seed,
                               f"{config}-{target.rstrip('%')}-s{seed}".replace("--", "-dense-"))
                   for label, config, spec, target, seed in jobs]
        reports = [f.result() for f in futures]

    rows = {}
    for (label, _, _, target, _), report in zip(jobs, reports):
        rows.setdefault((label, target), []).append(report)
    lines = [
        "# Sparsity methods on digits",
        "",
        f"Command: `python experiments/methods_digits.py` ({datetime.date.today()}, {os.cpu_count()} CPU cores, "
        f"{platform.machine()}). Digits CNN (conv 1->16, 16->32, 32->64, linear head), 450-image test set, "
        "40 epochs of Adam (configs/digits_*.yaml, quickstart.yaml for nm); conv1 and the head stay dense "
        "in every run, so the pruned layers (conv2, conv3) hold 98% of the MACs. Seeds 0, 1, 2.",
        "",
        "Throughput: the cost model's dataflow design on a ZCU102 @ 200 MHz, 16-bit, folding chosen by the "
        "greedy DSE for each network; speedup against the dense network on the same device.",
        "",
        "| method | target MACs removed | test accuracy (mean ± std) | pruned-layer density | network MACs kept "
        "| modelled images/s | speedup vs dense |",
        "|---|---|---|---|---|---|---|",
    ]
    for (label, target), reps in rows.items():
        acc = np.array([r["test_accuracy"] for r in reps]) * 100
        # dynamic layers: the measured fraction of active (position, channel) pairs on the test set
        pruned = [[l["density"] for l in r["layers"] if l["method"] != "dense"] for r in reps]
        density = np.mean([np.mean(p) for p in pruned]) if pruned[0] else 1.0
        kept = np.mean([r["effective_macs"] / r["macs"] for r in reps])
        thr = np.mean([r["hardware"]["sparse"]["throughput"] for r in reps])
        speedup = np.mean([r["hardware"]["speedup"] for r in reps])
        lines.append(f"| {label} | {target} | {acc.mean():.2f} ± {acc.std():.2f} | {density:.3f} | "
                     f"{kept:.3f} | {thr:,.0f} | {speedup:.2f}x |")
    lines += ["", "Raw reports: `runs/methods_digits/*/report.json` (not committed)."]
    out = Path(args.out)
    # the hand-written discussion below the table (from its first "## " heading) is kept
    previous = out.read_text() if out.exists() else ""
    discussion = previous[previous.index("\n## ") :] if "\n## " in previous else ""
    out.write_text("\n".join(lines) + "\n" + discussion)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
