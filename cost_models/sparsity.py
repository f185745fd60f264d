"""Hardware sparsity patterns: plain data that the cost model and the exporter read.

Each pattern is a frozen dataclass describing what the accelerator can exploit. cooptim's
sparsity methods produce them (``method.pattern()``); the cost model turns them into work,
storage and bandwidth.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Union


@dataclasses.dataclass(frozen=True)
class DensePattern:
    """No sparsity: every weight is stored and every MAC is done."""

    kind: Literal["dense"] = "dense"

    @property
    def work_fraction(self) -> float:
        return 1.0

    def describe(self) -> str:
        return "dense"


@dataclasses.dataclass(frozen=True)
class NMPattern:
    """N:M fine-grained sparsity: N kept weights in every group of M along `axis`.

    Stored as the N kept values of each group plus one index of ceil(log2 M) bits per kept
    value (Zhou et al., ICLR 2021; SAT/BDWP, TCAD 2023).
    """

    n: int
    m: int
    axis: Literal["input", "output"] = "input"
    kind: Literal["nm"] = "nm"

    def __post_init__(self):
        if not 1 <= self.n <= self.m:
            raise ValueError(f"N:M pattern needs 1 <= N <= M, got N={self.n}, M={self.m}")

    @property
    def work_fraction(self) -> float:
        # SAT/BDWP: an N:M engine does N of every M MACs along the reduction axis.
        return self.n / self.m

    @property
    def index_bits(self) -> int:
        # Zhou et al. 2021 / NVIDIA 2:4 layout: one position index per kept value.
        return max(1, math.ceil(math.log2(self.m)))

    def describe(self) -> str:
        return f"{self.n}:{self.m} along {self.axis}"


Pattern = Union[DensePattern, NMPattern]
