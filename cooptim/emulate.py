"""python -m cooptim.emulate RUN_DIR: the trained network in the hardware's fixed point.

Quantizes the run's latest checkpoint to the formats of its `hardware` config (calibrated on the
first `hardware.calibration_samples` training images, see `cooptim.quantize`), runs the integer
forward pass of the model's graph (residual networks included, `cooptim.quantize.graph`) over
the test set through the kernels' fixed-point path, and reports the integer model's accuracy
next to the float model's. Writes RUN_DIR/emulation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from flax import nnx
from rich.console import Console
from rich.table import Table

from cooptim import quantize as q
from cooptim.cli.errors import run_cli
from cooptim.quantize.graph import QuantizedGraph, calibrate_graph
from cooptim.run import load_run


def calibration_images(cfg, dataset) -> np.ndarray:
    """The first `hardware.calibration_samples` training images (all of them if fewer)."""
    return dataset.train.get(np.arange(min(cfg.hardware.calibration_samples, len(dataset.train))))[0]


def load_quantized_graph(run_dir: str | Path):
    """(config, model, dataset, quantized graph) of a trained run folder: any network."""
    cfg, model, dataset = load_run(run_dir)
    return cfg, model, dataset, calibrate_graph(model, calibration_images(cfg, dataset), cfg.hardware)


def evaluate(model, net: QuantizedGraph, source, batch_size: int = 256) -> dict:
    """Float and integer accuracy on `source`, their agreement, and the saturations of every
    node that can saturate (accumulators, residual adds)."""
    correct_float = correct_int = agree = 0
    saturated = {node.name: 0 for node in net.nodes if node.layer is not None or node.op in ("add", "relu6")}
    forward = nnx.jit(lambda m, x: m(x))
    for start in range(0, len(source), batch_size):
        images, labels = source.get(np.arange(start, min(start + batch_size, len(source))))
        float_pred = np.asarray(forward(model, images)).argmax(1)
        logits, trace = net.forward(net.quantize_input(images))
        int_pred = logits.reshape(len(images), -1).argmax(1)
        correct_float += int((float_pred == labels).sum())
        correct_int += int((int_pred == labels).sum())
        agree += int((float_pred == int_pred).sum())
        for name in saturated:
            saturated[name] += int(trace[name]["saturated"])
    n = len(source)
    return {"float_accuracy": correct_float / n, "integer_accuracy": correct_int / n, "agreement": agree / n,
            "examples": n, "saturated": saturated}


def layer_rows(net: QuantizedGraph, needed: list[int]) -> list[dict]:
    return [{"layer": layer.name, "pattern": layer.pattern, "input": layer.in_format.describe(),
             "weight_frac": [int(layer.weight_frac.min()), int(layer.weight_frac.max())],
             "output": layer.out_format.describe(), "acc_bits": layer.acc_bits, "acc_bits_needed": bits}
            for layer, bits in zip(net.layers, needed)]


def run(run_dir: str | Path) -> dict:
    cfg, model, dataset, net = load_quantized_graph(run_dir)
    images = calibration_images(cfg, dataset)
    needed = q.accumulator_bits_needed(net, images)
    result = {**evaluate(model, net, dataset.test), "layers": layer_rows(net, needed),
              "calibration_samples": len(images), "rounding": cfg.hardware.rounding,
              "weight_scale": cfg.hardware.weight_scale}
    (Path(run_dir) / "emulation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cooptim.emulate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a trained run folder (with config.yaml and checkpoints/)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    args = parser.parse_args(argv)
    return run_cli(lambda: _show(args.run_dir, run(args.run_dir)), debug=args.debug)


def _show(run_dir: str, result: dict) -> int:
    console = Console()
    table = Table(title=f"fixed-point emulation of {run_dir}")
    for col in ("layer", "pattern", "input", "weight frac", "output", "acc bits (needed)", "saturated"):
        table.add_column(col, justify="right" if col in ("acc bits (needed)", "saturated") else "left")
    for row in result["layers"]:
        lo, hi = row["weight_frac"]
        table.add_row(row["layer"], row["pattern"], row["input"], f"{lo}" if lo == hi else f"{lo}..{hi}",
                      row["output"], f"{row['acc_bits']} ({row['acc_bits_needed']})",
                      f"{result['saturated'][row['layer']]:,}")
    console.print(table)
    merges = {name: n for name, n in result["saturated"].items() if name not in {r["layer"] for r in result["layers"]}}
    if merges:
        console.print(f"saturated residual adds: {sum(merges.values()):,} values over {len(merges)} adds")
    drop = 100 * (result["float_accuracy"] - result["integer_accuracy"])
    console.print(f"test accuracy: float {result['float_accuracy']:.4f}, integer {result['integer_accuracy']:.4f} "
                  f"({drop:+.2f} points lost), same prediction on {result['agreement']:.1%} of "
                  f"{result['examples']} images")
    console.print(f"written: {Path(run_dir) / 'emulation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
