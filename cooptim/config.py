"""Typed experiment configs: YAML files loaded into frozen, validated dataclasses.

    cfg = config.load("configs/quickstart.yaml", overrides=["optimizer.learning_rate=0.01"])

Every section is a frozen pydantic dataclass with `extra="forbid"`: an unknown key, a wrong type
or an out-of-range value raises one `ConfigError` that names the key, the value and the file (or
the ``--set`` override it came from). `to_dict(cfg)` gives the resolved config back as plain data,
which the trainer saves into the run folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Optional

import yaml
from pydantic import Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from cooptim.errors import UserError
from cooptim.sparsity import NM, Method
from cooptim.sparsity._config import STRICT

PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0.0, strict=True)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, strict=True)]


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the key, the value and the source."""


@dataclass(frozen=True, config=STRICT)
class DataConfig:
    """Which data set, where it lives, and how it is batched.

    `digits` (scikit-learn's 8x8 digits) ships with scikit-learn and needs no download. `cifar10`
    and `imagenet2012` are read with tensorflow-datasets from `data_dir`, prepared beforehand in
    array_record format (see the README).
    """

    name: Literal["digits", "cifar10", "imagenet2012"] = "digits"
    data_dir: Optional[StrictStr] = None
    batch_size: PositiveInt = 128
    eval_batch_size: PositiveInt = 500
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0, strict=True)] = 0.25
    augment: StrictBool = False
    image_size: PositiveInt = 224


@dataclass(frozen=True, config=STRICT)
class PretrainedConfig:
    """Weights to start from: a torchvision state dict (`.safetensors`, or `.pth` where torch is
    installed) of the model's architecture; see `cooptim.pretrained`. `keep_initial`: layer-name
    patterns left at their initialisation (e.g. ``head`` for a new number of classes).
    `adapt_input_channels`: an RGB first conv summed over its channels for one-channel images."""

    path: StrictStr
    keep_initial: list[StrictStr] = dataclasses.field(default_factory=list)
    adapt_input_channels: StrictBool = False


@dataclass(frozen=True, config=STRICT)
class ModelConfig:
    """The network. `width` is the channel count of the first stage (None: the model's own:
    digits_cnn 16, resnet8/20/56 16, resnet18/50 64, mobilenet_v2 32, vgg16 64).
    `classifier_width`: vgg16's two hidden fully connected layers (None: 4096). `pretrained`:
    start from these weights rather than a random initialisation."""

    name: Literal["digits_cnn", "resnet8", "resnet20", "resnet56", "resnet18", "resnet50", "mobilenet_v2",
                  "vgg16"] = "digits_cnn"
    width: Optional[PositiveInt] = None
    classifier_width: Optional[PositiveInt] = None
    pretrained: Optional[PretrainedConfig] = None


@dataclass(frozen=True, config=STRICT)
class SparsityConfig:
    """The sparsity method of every prunable layer.

    `layers` maps layer-name patterns (shell-style, e.g. ``conv1`` or ``stage3.*``) to a method
    that replaces `default` for the layers it matches; the first matching pattern wins, and a
    pattern that matches no layer is an error.
    """

    default: Method = NM()
    layers: dict[StrictStr, Method] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, config=STRICT)
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    momentum: Annotated[float, Field(ge=0.0, lt=1.0, strict=True)] = 0.9
    nesterov: StrictBool = False
    weight_decay: NonNegativeFloat = 0.0
    schedule: Literal["constant", "cosine", "warmup_cosine"] = "cosine"
    warmup_steps: NonNegativeInt = 0


@dataclass(frozen=True, config=STRICT)
class TrainConfig:
    """Training length and bookkeeping, in optimizer steps. `steps`, when set, overrides `epochs`."""

    epochs: PositiveInt = 30
    steps: Optional[PositiveInt] = None
    eval_every: PositiveInt = 200
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 100
    keep_checkpoints: PositiveInt = 2


@dataclass(frozen=True, config=STRICT)
class HardwareConfig:
    """The accelerator the network is designed for (its cost in the loss: `ObjectiveConfig`).

    `device` names a board of `cost_models.DEVICES`, or of `devices_file` (YAML, see
    `cost_models.load_devices`). `dataflow`: one engine per layer, folding chosen by the greedy
    DSE; `overlay`: one pe_in x pe_out PE array for all layers.

    Fixed point (`cooptim.quantize`, `emulate`, `export`): activations have `data_bits`, weights
    `weight_bits` (both at most 8 for the kernels' int8 path), accumulators `acc_bits`; every
    scale is a power of two, calibrated on `calibration_samples` training images; weights get one
    scale per output channel (`weight_scale: per_channel`) or per layer. Requantization rounds with
    `rounding` and saturates.

    The dataflow DSE (`cost_models.dse.greedy`) keeps every resource within `resource_budget` of
    the device and places the weights by `memory`: `pooled` (all on chip, a URAM counted as 16
    BRAM18 in one pool), `on_chip` (BRAM and URAM apart, weights balanced between them) or
    `streamed` (also streams weights from off-chip where they do not fit, their bandwidth in the
    interval), the last two as fpgaConvNet's optimiser does. Co-optimization's relaxed cost (the
    training loss) keeps the pooled model; its DSE re-solves use `memory`.

    `ram` is how on-chip memories become BRAM18 blocks (`cost_models.ResourceParams.ram`):
    `lutram` (arrays of at most 1,024 bits in LUTRAM, UG573's aspect ratios) or `hls`
    (fpgaconvnet-model's hls backend: every memory in BRAM, its window, accumulator and bias
    memories too; equal to the peer's BRAM on every layer of its fixture).
    """

    device: StrictStr = "zcu102"
    devices_file: Optional[StrictStr] = None
    accelerator: Literal["dataflow", "overlay"] = "dataflow"
    clock_mhz: Optional[PositiveFloat] = None
    data_bits: Annotated[StrictInt, Field(ge=2, le=32)] = 16
    weight_bits: Annotated[StrictInt, Field(ge=2, le=32)] = 16
    pe_in: PositiveInt = 16
    pe_out: PositiveInt = 16
    acc_bits: Annotated[StrictInt, Field(ge=2, le=32)] = 32
    weight_scale: Literal["per_channel", "per_layer"] = "per_channel"
    rounding: Literal["half_up", "half_even", "floor"] = "half_up"
    calibration_samples: PositiveInt = 512
    memory: Literal["pooled", "on_chip", "streamed"] = "pooled"
    ram: Literal["lutram", "hls"] = "lutram"
    resource_budget: Annotated[float, Field(gt=0.0, le=1.0, strict=True)] = 1.0


@dataclass(frozen=True, config=STRICT)
class ObjectiveConfig:
    """The hardware term of the training loss (`cooptim.objective`); off while `weight` is 0.

    loss = task loss + lambda(t) * cost + resource_weight * sum(max(0, utilisation - 1)^2)
           + density_weight * (overall density - density_target)^2

    cost: `throughput` (-log images/s), `latency` (log seconds) or `energy` (log joules per image)
      of the current densities under the relaxed dataflow cost model.
    lambda(t) rises linearly from 0 to `weight` between `warmup_start` and `warmup_end` (fractions
      of training); the relaxation temperature falls geometrically from `temperature_start` to
      `temperature_end` over training.
    density_target: MAC-weighted density of the prunable layers (None: no target).
    learn_density: give every pruned layer a trained density variable (unstructured/csp: kept
      fraction; nm: N of M; balanced_group: kept per group; dynamic: the gate target), so the
      gradient can move sparsity between layers. Otherwise only the methods' own densities move.
    folding: `dse` re-solves the integer folding with the greedy DSE every `dse_every` steps (and
      holds it fixed in between); `fixed` solves it once, for the initial densities; `learned`
      relaxes it: continuous factors exp(theta) in [1, their maximum] per layer, started at the
      DSE's solution for the initial densities and trained by the same loss's gradient (their own
      Adam, learning rate `folding_lr`), the resource penalty keeping them on the device. After
      training the DSE fixes the integer folding, as for every run.
    """

    weight: NonNegativeFloat = 0.0
    cost: Literal["throughput", "latency", "energy"] = "throughput"
    warmup_start: Annotated[float, Field(ge=0.0, le=1.0, strict=True)] = 0.0
    warmup_end: Annotated[float, Field(ge=0.0, le=1.0, strict=True)] = 0.3
    temperature_start: PositiveFloat = 0.2
    temperature_end: PositiveFloat = 0.02
    resource_weight: NonNegativeFloat = 10.0
    density_target: Optional[Annotated[float, Field(gt=0.0, le=1.0, strict=True)]] = None
    density_weight: NonNegativeFloat = 500.0
    learn_density: StrictBool = False
    density_lr_scale: PositiveFloat = 10.0
    folding: Literal["dse", "fixed", "learned"] = "dse"
    dse_every: PositiveInt = 100
    folding_lr: PositiveFloat = 0.05


@dataclass(frozen=True, config=STRICT)
class Config:
    """One experiment. The run folder is `output_dir/name`."""

    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    seed: NonNegativeInt = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    sparsity: SparsityConfig = SparsityConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    hardware: HardwareConfig = HardwareConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    output_dir: StrictStr = "runs"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


_ADAPTER = TypeAdapter(Config)


def _key_of(loc: tuple, raw: Any) -> str:
    """Dotted config key of a pydantic error location, without union tags (e.g. 'nm')."""
    parts, node = [], raw
    for item in loc:
        if isinstance(node, dict) and item in node:
            parts.append(str(item))
            node = node[item]
        elif not isinstance(node, dict) or parts == [] or item not in _TAGS:
            parts.append(str(item))
            node = None
        # else: a discriminated-union tag inserted by pydantic; not part of the user's key.
    return ".".join(parts) or "<top level>"


from cooptim.sparsity import METHODS as _METHODS  # noqa: E402

_TAGS = set(_METHODS)


def _describe(error: dict, raw: Any, origin) -> str:
    key = _key_of(error["loc"], raw)
    where = origin(key)
    kind = error["type"]
    if kind == "unexpected_keyword_argument":
        return f"{where}: unknown key '{key}'"
    if kind == "missing_argument" or kind == "missing":
        return f"{where}: required key '{key}' is missing"
    if kind == "union_tag_not_found":
        return f"{where}: '{key}' needs a 'method' (one of: {', '.join(sorted(_TAGS))})"
    if kind == "union_tag_invalid":
        value = error["input"].get("method") if isinstance(error["input"], dict) else error["input"]
        return (
            f"{where}: '{key}.method' = {value!r} is not a known sparsity method "
            f"(one of: {', '.join(sorted(_TAGS))})"
        )
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: '{key}' = {error['input']!r}: {message}"


def from_dict(raw: Any, source: str = "<dict>", set_keys: Iterable[str] = ()) -> Config:
    """Validates plain data into a `Config`; raises `ConfigError` naming key, value and source."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping of keys, got {type(raw).__name__}")
    set_keys = tuple(set_keys)

    def origin(key: str) -> str:
        hits = [k for k in set_keys if key == k or key.startswith(k + ".") or k.startswith(key + ".")]
        return f"{source} (--set {hits[0]})" if hits else source

    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as e:
        lines = [_describe(err, raw, origin) for err in e.errors()]
        raise ConfigError("\n".join(lines)) from None


def apply_overrides(raw: dict, overrides: Iterable[str]) -> tuple[dict, list[str]]:
    """Applies ``a.b=value`` overrides (value parsed as YAML) to a copy of `raw`.

    Returns the new dict and the keys that were set.
    """
    import copy

    raw = copy.deepcopy(raw)
    keys = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.learning_rate=0.01")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from None
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item!r}: '{prefix}' is a value, not a section")
            node = child
        node[parts[-1]] = value
        keys.append(key)
    return raw, keys


def load(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Reads a YAML config file, applies ``--set`` overrides, and validates it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a config is YAML)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a YAML mapping of sections (name:, data:, ...), "
                          f"not a {type(raw).__name__}")
    raw, keys = apply_overrides(raw if raw is not None else {}, overrides)
    return from_dict(raw, source=str(path), set_keys=keys)


def to_dict(config: Config) -> dict:
    """The resolved config as plain JSON/YAML-able data (every default filled in)."""
    return _ADAPTER.dump_python(config, mode="json")


def save(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
