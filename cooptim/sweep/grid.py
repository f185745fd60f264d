"""A sweep file and its grid of points (pruning ratios x methods x devices x seeds).

The sweep file names a base training config and the grid:

    name: sweep_digits
    base: quickstart.yaml          # relative to the sweep file
    output_dir: runs               # the sweep folder is output_dir/name
    ratios: [0.25, 0.5, 0.625, 0.75]   # fraction of each pruned layer's weights removed
    methods:                       # sparsity.default per method; "{density}" = 1 - ratio,
      csp: {method: csp, weight_density: "{density}", chunk: 4}   # "{kept:M}" = round(density x M)
      nm: {method: nm, n: "{kept:8}", m: 8}
    devices: [zcu102]
    seeds: [0]
    set: ["train.epochs=20"]       # --set overrides applied to every point
    workers: 2                     # points trained at once on this machine (local pool, local Ray)
    retries: 1                     # a failed point is run again (resuming) at most this many times
    backend: local                 # or ray
    ray:                           # with backend: ray
      address: null                # null: a local Ray instance; "auto" or HOST:PORT: a running cluster
      cpus_per_point: 1
      gpus_per_point: 0

Each point's full training config is validated when the file is loaded, so a bad point fails
before any training starts.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import Field, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from cooptim import config as config_lib
from cooptim.config import ConfigError
from cooptim.sparsity._config import STRICT

_PLACEHOLDER = re.compile(r"^\{(density|kept:(\d+))\}$")


@dataclass(frozen=True, config=STRICT)
class RayConfig:
    """Where and how the points run with `backend: ray`: every point one Ray task."""

    address: Optional[StrictStr] = None  # None: a local instance; "auto" or HOST:PORT: a cluster
    cpus_per_point: Annotated[float, Field(gt=0)] = 1.0
    gpus_per_point: Annotated[float, Field(ge=0)] = 0.0


@dataclass(frozen=True, config=STRICT)
class SweepConfig:
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    base: StrictStr
    methods: dict[StrictStr, dict[StrictStr, Any]]
    ratios: list[Annotated[float, Field(ge=0.0, lt=1.0, strict=True)]]
    devices: list[StrictStr] = dataclasses.field(default_factory=lambda: ["zcu102"])
    seeds: list[Annotated[int, Field(ge=0, strict=True)]] = dataclasses.field(default_factory=lambda: [0])
    set: list[StrictStr] = dataclasses.field(default_factory=list)
    output_dir: StrictStr = "runs"
    workers: Annotated[int, Field(ge=1, strict=True)] = 2
    retries: Annotated[int, Field(ge=0, strict=True)] = 1
    backend: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()


@dataclasses.dataclass(frozen=True)
class Point:
    name: str
    method: str
    ratio: float
    device: str
    seed: int
    config: dict  # the full training config


def _fill(template: Any, density: float, where: str) -> Any:
    """Replaces "{density}" and "{kept:M}" placeholders in a method template."""
    if isinstance(template, dict) and len(template) == 1 and list(template.values()) == [None]:
        template = "{" + next(iter(template)) + "}"  # YAML read an unquoted {density} as a mapping
    if isinstance(template, dict):
        return {k: _fill(v, density, f"{where}.{k}") for k, v in template.items()}
    if isinstance(template, str) and template.startswith("{"):
        match = _PLACEHOLDER.match(template)
        if not match:
            raise ConfigError(f"{where} = {template!r}: unknown placeholder (use {{density}} or {{kept:M}})")
        if match.group(2) is None:
            return round(density, 6)
        m = int(match.group(2))
        return max(1, min(m, round(density * m)))
    return template


def load(path: str | Path) -> tuple[SweepConfig, list[Point], Path]:
    """The sweep file, its points (each a validated training config) and the sweep folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read sweep file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        sweep = TypeAdapter(SweepConfig).validate_python(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<top>"
        raise ConfigError(f"{path}: '{key}': {first['msg']}") from None
    base_path = (path.parent / sweep.base) if not Path(sweep.base).is_absolute() else Path(sweep.base)
    try:
        base_raw = yaml.safe_load(base_path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: 'base' = {sweep.base!r}: cannot read {base_path} ({e.strerror})") from None
    base_raw, _ = config_lib.apply_overrides(base_raw, sweep.set)
    folder = Path(sweep.output_dir) / sweep.name
    points = []
    for method, template in sweep.methods.items():
        for ratio in sweep.ratios:
            for device in sweep.devices:
                for seed in sweep.seeds:
                    name = f"{method}-r{ratio:g}-{device}-s{seed}"
                    raw = copy.deepcopy(base_raw)
                    raw["name"], raw["seed"] = name, seed
                    raw["output_dir"] = str(folder / "runs")
                    raw.setdefault("sparsity", {})["default"] = _fill(template, 1.0 - ratio, f"methods.{method}")
                    raw.setdefault("hardware", {})["device"] = device
                    # validated now, so a bad point fails before any training starts
                    config_lib.from_dict(raw, source=f"{path} (point {name})")
                    points.append(Point(name, method, ratio, device, seed, raw))
    return sweep, points, folder
