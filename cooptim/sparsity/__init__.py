"""Sparsity methods: one module per method, each a frozen dataclass of its parameters.

`Method` is the config type: a union of the methods discriminated by their `method` field, so a
config says ``{method: nm, n: 2, m: 4}``.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from cooptim.sparsity.balanced_group import BalancedGroup
from cooptim.sparsity.base import PatternCheck, SparsityError, SparsityMethod, WeightLayout
from cooptim.sparsity.bdwp import BDWP
from cooptim.sparsity.csp import CSP
from cooptim.sparsity.dense import Dense
from cooptim.sparsity.dynamic import Dynamic
from cooptim.sparsity.nm import NM, nm_mask, srste
from cooptim.sparsity.unstructured import Unstructured

Method = Annotated[Union[Dense, NM, BDWP, BalancedGroup, CSP, Dynamic, Unstructured], Field(discriminator="method")]

METHODS = {"dense": Dense, "nm": NM, "bdwp": BDWP, "balanced_group": BalancedGroup, "csp": CSP,
           "dynamic": Dynamic, "unstructured": Unstructured}

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
]
