"""The one top-level error handler of every cooptim CLI."""

from __future__ import annotations

import sys
import warnings
from typing import Callable

import cost_models as cm
from cooptim.errors import UserError

# cost_models is importable alone and has its own errors (an unknown device, a design that fits no device)
EXPECTED = (UserError, cm.devices.DeviceError, cm.dataflow.CostModelError, cm.dse.DeviceFitError)


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run_cli(body: Callable[[], int], *, debug: bool = False) -> int:
    """Runs a CLI's body: an expected failure is one `error:` line and status 2, Ctrl-C is one
    `interrupted` line and status 130, anything else one line naming it and status 1; with
    debug=True every failure keeps its traceback."""
    warnings.formatwarning = _warning_line
    try:
        return body()
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder that cannot be read or written
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {e} (run again with --debug for the traceback)",
              file=sys.stderr)
        return 1
