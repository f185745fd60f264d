import os
import tempfile

# Tests run on the CPU, two threads at most, whatever the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the whole run, subprocesses included: the suite compiles the
# same train steps, kernels and cost models many times over.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "cooptim-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The suite is dominated by XLA compiling small programs it runs once or a few times: without
# LLVM's optimisations XLA:CPU compiles them several times faster (measured: the unit tests 203 s
# -> 161 s on 2 cores), and the programs are too small for the slower code to matter. Numerics are
# unchanged (no fast-math either way); integer kernels stay bit-exact against the golden models.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import pytest


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration/ is `slow` (`pytest -m "not slow"` runs the unit tests)."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)
