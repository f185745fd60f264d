"""python -m cooptim.export RUN_DIR --out DIR [--force] [--vectors N] [--check]"""

from __future__ import annotations

import argparse
import shutil
import sys

from cooptim.export import ExportError, build_reference, export, run_reference
from cooptim.quantize import QuantizationError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cooptim.export",
                                     description="Hardware parameter files of a trained run, for synthesis.")
    parser.add_argument("run_dir", help="a trained run folder (config.yaml + checkpoints/)")
    parser.add_argument("--out", required=True, help="the folder to write (must not exist unless --force)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.add_argument("--vectors", type=int, default=8, help="test images in testbench/ (besides the saturation vector)")
    parser.add_argument("--check", action="store_true", help="then compile the C++ reference with g++ and run it")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.out, force=args.force, vectors=args.vectors)
    except (ExportError, QuantizationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} -> {out} (accelerator.json, fpgaconvnet.json, params.h, weights/, testbench/, README.md)")
    if args.check:
        if shutil.which("g++") is None:
            print("error: --check needs g++ on the PATH", file=sys.stderr)
            return 2
        try:
            build_reference(out)
        except ExportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        done = run_reference(out)
        print(done.stdout, end="")
        print(done.stderr, end="", file=sys.stderr)
        return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
