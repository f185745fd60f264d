"""Shared pydantic settings for method dataclasses: unknown keys are errors."""

from typing import Annotated

from pydantic import ConfigDict, Field

STRICT = ConfigDict(extra="forbid")

# a fraction of training (gradual-pruning ramps)
Fraction = Annotated[float, Field(ge=0.0, le=1.0, strict=True)]
