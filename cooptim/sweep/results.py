"""A sweep's results: `sweep.csv` (one row per finished point) and `pareto.png` (accuracy vs
modelled throughput, one curve per method, one panel per device)."""

from __future__ import annotations

import csv
import json
from pathlib import Path


COLUMNS = ["point", "method", "ratio", "device", "seed", "test_accuracy", "density", "throughput",
           "dense_throughput", "speedup", "latency_s", "energy_j", "dsp", "bram18", "lut", "bottleneck"]


def collect(folder: Path, points: list) -> list[dict]:
    """Writes sweep.csv and pareto.png from the finished points (`grid.Point`s); returns the rows."""
    rows = []
    for p in points:
        report_path = folder / "runs" / p.name / "report.json"
        if not report_path.exists():
            continue
        r = json.loads(report_path.read_text())
        hw = r["hardware"]
        pruned = [x for x in r["layers"] if x["method"] != "dense"] or r["layers"]
        rows.append({
            "point": p.name, "method": p.method, "ratio": p.ratio, "device": p.device, "seed": p.seed,
            "test_accuracy": r["test_accuracy"],
            "density": sum(x["effective_macs"] for x in pruned) / sum(x["macs"] for x in pruned),
            "throughput": hw["sparse"]["throughput"], "dense_throughput": hw["dense"]["throughput"],
            "speedup": hw["speedup"], "latency_s": hw["sparse"]["latency_s"], "energy_j": hw["sparse"]["energy_j"],
            "dsp": hw["sparse"]["dsp"], "bram18": hw["sparse"].get("bram18"), "lut": hw["sparse"].get("lut"),
            "bottleneck": hw["bottleneck_layer"],
        })
    tmp = folder / "sweep.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(folder / "sweep.csv")
    if rows:
        plot_pareto(rows, folder / "pareto.png")
    return rows


def plot_pareto(rows: list[dict], path: Path) -> None:
    """Accuracy vs modelled throughput, one curve per method (mean over seeds), one panel per device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    devices = sorted({r["device"] for r in rows})
    fig, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 4.5), squeeze=False)
    for ax, device in zip(axes[0], devices):
        for method in sorted({r["method"] for r in rows}):
            points = {}
            for r in rows:
                if r["device"] == device and r["method"] == method:
                    points.setdefault(r["ratio"], []).append(r)
            ratios = sorted(points)
            x = [np.mean([r["throughput"] for r in points[q]]) for q in ratios]
            y = [100 * np.mean([r["test_accuracy"] for r in points[q]]) for q in ratios]
            ax.plot(x, y, marker="o", label=method)
            for q, xi, yi in zip(ratios, x, y):
                ax.annotate(f"{q:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        dense = [r["dense_throughput"] for r in rows if r["device"] == device]
        ax.axvline(dense[0], color="grey", linestyle=":", label="dense design")
        ax.set_xscale("log")
        ax.set_xlabel("modelled throughput (images/s)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{device} (labels: pruning ratio)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
