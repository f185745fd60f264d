import os

# Tests run on the CPU, two threads at most, whatever the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration/ is `slow` (`pytest -m "not slow"` runs the unit tests)."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)
