"""cooptim: co-design of pruned neural networks and FPGA accelerators in JAX."""

__version__ = "0.1.0"
