import os

# Tests run on the CPU, two threads at most, whatever the machine has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
