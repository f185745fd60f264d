"""Sparsity methods: one module per method, each a frozen dataclass of its parameters.

`Method` is the config type: a union of the methods discriminated by their `method` field, so a
config says ``{method: nm, n: 2, m: 4}``.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from cooptim.sparsity.base import PatternCheck, SparsityError, SparsityMethod, WeightLayout
from cooptim.sparsity.dense import Dense
from cooptim.sparsity.nm import NM, nm_mask, srste

Method = Annotated[Union[Dense, NM], Field(discriminator="method")]

METHODS = {"dense": Dense, "nm": NM}

__all__ = [
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
