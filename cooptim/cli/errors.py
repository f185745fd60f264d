"""The one top-level error handler of every cooptim CLI."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import jax

import cost_models as cm
from cooptim.errors import UserError

# cost_models is importable alone and has its own errors (an unknown device, a design that fits no device)
EXPECTED = (UserError, cm.devices.DeviceError, cm.dataflow.CostModelError, cm.dse.DeviceFitError)


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def use_compilation_cache() -> None:
    """JAX's persistent compilation cache for the CLIs: a second run of a command compiles little
    (the train step, the cost model and the DSE's programs come from disk). In
    `$COOPTIM_JAX_CACHE` (`off` turns it off), else `$XDG_CACHE_HOME/cooptim/jax` or
    `~/.cache/cooptim/jax`; JAX's own `JAX_COMPILATION_CACHE_DIR` wins where it is set."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    where = os.environ.get("COOPTIM_JAX_CACHE")
    if where == "off":
        return
    if not where:
        where = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cooptim" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(where))
    # the DSE and the cost model compile many programs of a fraction of a second each
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_cli(body: Callable[[], int], *, debug: bool = False) -> int:
    """Runs a CLI's body: an expected failure is one `error:` line and status 2, Ctrl-C is one
    `interrupted` line and status 130, anything else one line naming it and status 1; with
    debug=True every failure keeps its traceback."""
    warnings.formatwarning = _warning_line
    use_compilation_cache()
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
