"""Helpers for testing and benchmarking cooptim on untrained networks (as `numpy.testing` is for
NumPy): a config for every sparsity pattern that has an exported layout, and batch-norm statistics
to fold."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

# One method config per exported sparsity pattern, each valid on a layer whose input channels are
# a multiple of 8 and output channels a multiple of 4.
EXPORTED_PATTERNS = {
    "nm": {"method": "nm", "n": 2, "m": 4},
    "balanced_group": {"method": "balanced_group", "keep": 4, "group": 8},
    "csp": {"method": "csp", "weight_density": 0.5, "chunk": 4},
    "unstructured": {"method": "unstructured", "weight_density": 0.5, "activation_threshold": 0.2},
    "dynamic": {"method": "dynamic", "target": 0.5, "channel_group": 4, "gate_bias": 0.0},
}


def randomize_batch_norms(model: nnx.Module, rng: np.random.Generator) -> None:
    """Untrained batch norms are the identity: give them statistics to fold (in place)."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            c = node.mean[...].shape[0]
            node.mean[...] = jnp.asarray(rng.normal(0, 0.1, c), jnp.float32)
            node.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)
            node.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32)
            node.bias[...] = jnp.asarray(rng.normal(0, 0.1, c), jnp.float32)
