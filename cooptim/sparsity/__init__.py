"""Sparsity methods: one module per method, each a frozen dataclass of its parameters that
subclasses `SparsityMethod` (`base.py`, the whole contract). `METHODS` and the config type
`Method` come from the registry (`registry.py`)."""

from __future__ import annotations

from cooptim.sparsity.balanced_group import BalancedGroup
from cooptim.sparsity.base import (PatternCheck, SparsityError, SparsityMethod, WeightLayout, srste,
                                   straight_through)
from cooptim.sparsity.bdwp import BDWP
from cooptim.sparsity.csp import CSP
from cooptim.sparsity.dense import Dense
from cooptim.sparsity.dynamic import Dynamic
from cooptim.sparsity.nm import NM, nm_mask
from cooptim.sparsity.registry import METHODS, Method
from cooptim.sparsity.unstructured import Unstructured

__all__ = [
    "BDWP",
    "CSP",
    "Dynamic",
    "BalancedGroup",
    "Unstructured",
    "METHODS",
    "NM",
    "Dense",
    "Method",
    "PatternCheck",
    "SparsityError",
    "SparsityMethod",
    "WeightLayout",
    "nm_mask",
    "srste",
    "straight_through",
]
