"""python -m cooptim.export RUN_DIR --out DIR [--force] [--vectors N] [--check]"""

from __future__ import annotations

import argparse
import shutil
import sys

from cooptim.cli.errors import run_cli
from cooptim.export import ExportError, build_reference, export, run_reference


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cooptim.export",
                                     description="Hardware parameter files of a trained run, for synthesis.")
    parser.add_argument("run_dir", help="a trained run folder (config.yaml + checkpoints/)")
    parser.add_argument("--out", required=True, help="the folder to write (must not exist unless --force)")
    parser.add_argument("--force", action="store_true", help="replace an output folder that an earlier export made")
    parser.add_argument("--vectors", type=_count, default=8,
                        help="test images in testbench/ (besides the saturation vector)")
    parser.add_argument("--check", action="store_true", help="then compile the C++ reference with g++ and run it")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    args = parser.parse_args(argv)

    def body() -> int:
        out = export(args.run_dir, args.out, force=args.force, vectors=args.vectors)
        print(f"exported {args.run_dir} -> {out} (accelerator.json, fpgaconvnet.json, params.h, weights/, "
              f"testbench/, README.md)")
        if not args.check:
            return 0
        if shutil.which("g++") is None:
            raise ExportError("--check needs g++ on the PATH")
        build_reference(out)
        done = run_reference(out)
        print(done.stdout, end="")
        print(done.stderr, end="", file=sys.stderr)
        return done.returncode

    return run_cli(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
