"""The registry of sparsity methods: every `SparsityMethod` subclass defined in a module of this
package, keyed by its config name (the default of its `method` field). Adding a method is adding
its module; nothing here names the methods."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Union

from pydantic import Field

from cooptim.sparsity.base import SparsityMethod


def _discover() -> dict[str, type[SparsityMethod]]:
    package = importlib.import_module("cooptim.sparsity")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in ("base", "registry"):
            importlib.import_module(f"cooptim.sparsity.{info.name}")
    methods = {}
    for cls in SparsityMethod.__subclasses__():
        name = cls.__dataclass_fields__["method"].default
        if name in methods:
            raise TypeError(f"two sparsity methods are named {name!r}: {methods[name]} and {cls}")
        methods[name] = cls
    return dict(sorted(methods.items()))


METHODS: dict[str, type[SparsityMethod]] = _discover()

# The config type: a union of the methods discriminated by their `method` field, so a config
# says ``{method: nm, n: 2, m: 4}``.
Method = Annotated[Union[tuple(METHODS.values())], Field(discriminator="method")]
