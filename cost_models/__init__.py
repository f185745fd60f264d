"""Differentiable analytical cost models of FPGA accelerators.

Pure JAX/NumPy: importable without Flax or cooptim. The public API is gathered here.
"""

from cost_models.layers import Conv2D, Dense, Layer, total_macs, total_params
from cost_models.sparsity import DensePattern, NMPattern, Pattern

__all__ = [
    "Conv2D",
    "Dense",
    "DensePattern",
    "Layer",
    "NMPattern",
    "Pattern",
    "total_macs",
    "total_params",
]
