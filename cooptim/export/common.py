"""What every part of an export shares: its error, the schema version, the C names of layers."""

from __future__ import annotations

import re

from cooptim.errors import UserError

SCHEMA_VERSION = "2.1"


class ExportError(UserError, RuntimeError):
    """An export that cannot be written (names the run folder, the output folder or the layer)."""


def c_name(name: str) -> str:
    """A node name as a C identifier and file stem: 'stage1.block2.conv1' -> 'stage1_block2_conv1'."""
    return re.sub(r"\W", "_", name)
