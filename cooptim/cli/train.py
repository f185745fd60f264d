"""Train a sparse network: ``python -m cooptim.train --config configs/quickstart.yaml``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from cooptim import config as config_lib
from cooptim import train
from cooptim.cli.errors import run_cli
from cooptim.train import parallel


class ProgressBar:
    """A tqdm bar with loss, accuracy and steps/s; evaluations are printed above it."""

    def __init__(self):
        self.bar = None

    def start(self, total_steps, first_step):
        self.bar = tqdm(total=total_steps, initial=first_step, unit="step", dynamic_ncols=True, file=sys.stderr)

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
    if hw["accelerator"] == "dataflow":
        engines = Table(title="dataflow engines, one per graph node (folding: coarse in/out/group, fine)")
        for col in ("node", "op", "output", "folding", "cycles", "DSP", "BRAM18"):
            engines.add_column(col, justify="right" if col in ("cycles", "DSP", "BRAM18") else "left")
        for n in hw["nodes"]:
            f = n["folding"]
            name = f"[bold]{n['name']}[/]" if n["name"] == hw["bottleneck_layer"] else n["name"]
            engines.add_row(name, n["op"], "x".join(map(str, n["out_shape"])),
                            "/".join(str(f[k]) for k in ("coarse_in", "coarse_out", "coarse_group", "fine")) if f else "",
                            f"{n['cycles']:,.0f}", f"{n['dsp']:,.0f}", f"{n['bram18']:,.0f}")
        console.print(engines)
    hw_table = Table(title=f"{hw['accelerator']} accelerator on {hw['device']} @ {hw['clock_mhz']:g} MHz "
                           f"(bottleneck: {hw['bottleneck_layer']})")
    for col in ("", "images/s", "latency (us)", "DSP", "BRAM18", "LUT", "energy/image (uJ)"):
        hw_table.add_column(col, justify="right")
    for label in ("dense", "sparse"):
        c = hw[label]
        hw_table.add_row(label, f"{c['throughput']:,.0f}", f"{c['latency_s'] * 1e6:,.1f}", f"{c['dsp']:,.0f}",
                         *(f"{c[k]:,.0f}" if k in c else "-" for k in ("bram18", "lut")),  # the overlay models neither
                         f"{c['energy_j'] * 1e6:,.2f}")
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
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    hosts = parser.add_argument_group(
        "several hosts", "data-parallel training over the devices of several processes: every process runs "
        "the same command (with its own --process-id where the cluster does not set it)")
    hosts.add_argument("--distributed", action="store_true",
                       help="join a multi-process run (jax.distributed.initialize; on Slurm, Open MPI or a "
                            "TPU pod the cluster's environment says the rest)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (implies --distributed)")
    hosts.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    hosts.add_argument("--process-id", type=int, metavar="I", help="this process, 0 to N-1")
    args = parser.parse_args(argv)
    if args.resume and args.force:
        parser.error("--resume and --force exclude each other")
    if (args.num_processes is not None or args.process_id is not None) and not args.coordinator:
        parser.error("--num-processes and --process-id need --coordinator")

    def body() -> int:
        cfg = config_lib.load(args.config, args.set)
        if args.distributed or args.coordinator:
            parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        report = train.run(cfg, source=args.config, resume=args.resume, force=args.force,
                           reporter=train.SilentReporter() if args.quiet else ProgressBar())
        if jax.process_index() == 0:
            print_report(report, cfg.run_dir)
        return 0

    return run_cli(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
