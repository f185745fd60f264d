"""python -m cooptim.sweep --config S.yaml: see `cooptim.sweep`."""

from __future__ import annotations

import argparse
import signal
import sys

from tqdm.auto import tqdm

from cooptim import sweep
from cooptim.cli.errors import run_cli


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the sweep as Ctrl-C does: trainers stopped, points resumable


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cooptim.sweep", description=sweep.__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="sweep YAML file")
    parser.add_argument("--workers", type=int, default=None,
                        help="points trained at once on this machine (default: the file's)")
    parser.add_argument("--backend", choices=("local", "ray"), default=None,
                        help="local process pool, or one Ray task per point (default: the file's)")
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster ('auto' or HOST:PORT); implies --backend ray")
    parser.add_argument("--list", action="store_true", help="print the points (and whether each is done)")
    parser.add_argument("--point", help="run only this point (cluster fan-out)")
    parser.add_argument("--collect", action="store_true", help="only write sweep.csv and pareto.png")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    return run_cli(lambda: _main(args), debug=args.debug)


def _main(args) -> int:
    _, points, folder = sweep.load(args.config)
    if args.list:
        for p in points:
            print(f"{p.name}\t{'done' if sweep.is_finished(folder, p) else 'todo'}")
        return 0
    if args.point:
        chosen = [p for p in points if p.name == args.point]
        if not chosen:
            print(f"error: no point {args.point!r} in {args.config} (see --list)", file=sys.stderr)
            return 2
        if not sweep.is_finished(folder, chosen[0]):
            sweep.run_point(folder, chosen[0])
        return 0
    if args.collect:
        rows, failures = sweep.collect(folder, points), []
    else:
        todo = sum(not sweep.is_finished(folder, p) for p in points)
        print(f"{len(points)} points, {len(points) - todo} already finished, {todo} to run -> {folder}")
        bar = tqdm(total=todo, unit="point")

        def done(point, error):
            bar.update(1)
            bar.set_postfix_str(point.name + (" FAILED" if error else ""))

        try:
            rows, failures = sweep.run(args.config, args.workers, on_done=done, backend=args.backend,
                                       address=args.address)
        except KeyboardInterrupt:
            bar.close()
            finished = sum(sweep.is_finished(folder, p) for p in points)
            print(f"\ninterrupted: {finished} of {len(points)} points finished; run the same command again "
                  f"to finish the others (their checkpoints are kept)", file=sys.stderr)
            return 130
        bar.close()
    print(f"{len(rows)} of {len(points)} points finished: {folder / 'sweep.csv'}, {folder / 'pareto.png'}")
    for f in failures:
        print(f"error: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
