"""Shared pydantic settings for method dataclasses: unknown keys are errors."""

from pydantic import ConfigDict

STRICT = ConfigDict(extra="forbid")
