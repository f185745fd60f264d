"""`python -m cooptim.search`: the command line of the HASS-style search (see the package)."""

import argparse
import sys

from cooptim.cli.errors import run_cli
from cooptim.search import __doc__ as SEARCH_DOC
from cooptim.search import run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cooptim.search", description=SEARCH_DOC.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--mode", choices=["both", "gradient", "random"], default="both")
    parser.add_argument("--budget", type=int, default=None, help="evaluations per mode (default: the file's)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    args = parser.parse_args(argv)
    modes = ("gradient", "random") if args.mode == "both" else (args.mode,)
    return run_cli(lambda: _show(run(args.config, modes, budget=args.budget)), debug=args.debug)


def _show(results: dict) -> int:
    print(f"unpruned: validation accuracy {results['base_accuracy']:.4f}, dense design "
          f"{results['dense_throughput']:,.0f} images/s; floor {results['accuracy_floor']:.4f}")
    for mode, r in results["modes"].items():
        found = ("" if r["best"] is not None else
                 " (no candidate met the accuracy floor: the unpruned network is the best)")
        print(f"{mode:>8}: best {r['best_throughput']:,.0f} images/s "
              f"({r['best_throughput'] / results['dense_throughput']:.2f}x dense) in {r['wall_s']:.1f} s, "
              f"{results['budget']} evaluations{found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
