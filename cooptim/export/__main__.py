"""python -m cooptim.export RUN_DIR --out DIR [--format cooptim|qonnx] [--force] [--vectors N] [--check] [--hls4ml]"""

from __future__ import annotations

import argparse
import shutil
import sys

from cooptim.cli.errors import run_cli
from cooptim.export import ExportError, build_reference, export, export_qonnx, handover, run_reference


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
    parser.add_argument("--format", choices=("cooptim", "qonnx"), default="cooptim",
                        help="cooptim: the parameter files and the C++ reference (default); qonnx: the network "
                             "as a QONNX model for hls4ml or FINN")
    parser.add_argument("--check", action="store_true",
                        help="then check the export bit for bit: the C++ reference (g++), or qonnx's execution")
    parser.add_argument("--hls4ml", action="store_true",
                        help="with --format qonnx: convert with hls4ml and check its C simulation (g++) bit for bit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.format == "qonnx":
            return _qonnx(args)
        if args.hls4ml:
            raise ExportError("--hls4ml goes with --format qonnx")
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


def _qonnx(args) -> int:
    out = export_qonnx(args.run_dir, args.out, force=args.force, vectors=args.vectors)
    print(f"exported {args.run_dir} -> {out} (model.onnx, testbench/, README.md)")
    checks = ([handover.check_qonnx] if args.check else []) + ([handover.check_hls4ml] if args.hls4ml else [])
    failed = False
    for check in checks:
        result = check(out)
        if result["bit_exact"]:
            print(f"PASS: {result['what']} = cooptim's integer emulation on {result['vectors']} vectors, bit for bit")
        else:
            failed = True
            print(f"FAIL: {result['what']} differs from cooptim's integer emulation on "
                  f"{', '.join(result['mismatched']) or 'off-grid outputs'} (largest difference "
                  f"{result['max_difference']} output steps)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
