"""Pallas kernels for the sparse compute core and their NumPy golden references.

Depends on JAX and NumPy only; never imports cooptim.
"""
