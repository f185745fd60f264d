"""Starting from pretrained weights: a torchvision state dict loaded into cooptim's model.

    state = pretrained.read_state_dict("resnet18.safetensors")       # or a .pth, through torch
    summary = pretrained.load_torchvision(model, state, source="resnet18.safetensors")

`load_torchvision` fills cooptim's resnet18, resnet50, mobilenet_v2 or vgg16 from torchvision's
state dict of the same architecture (`torchvision_names` maps the keys and layouts), all or
nothing: it checks every key and shape first and changes the model only when all fit, else raises
one `PretrainedError` naming the first key that is missing, unexpected or of the wrong shape.
Layers named in `keep_initial` (shell patterns of cooptim layer names, e.g. ``head``) keep their
initialisation and their keys are ignored, for a new number of classes or input size;
`adapt_input_channels` sums an RGB first conv over its input channels for a one-channel input
(what timm's `adapt_input_conv` does for grayscale).

Afterwards the sparsity methods start at the loaded weights (`nn.start_from_weights`): stored masks
are recomputed from them and DPACS's gates open, every position and channel active at first.
"""

from __future__ import annotations

import dataclasses
import fnmatch

import jax.numpy as jnp
from flax import nnx

from cooptim.nn.layers import start_from_weights
from cooptim.pretrained.files import PretrainedError, read_state_dict
from cooptim.pretrained.torchvision_names import SKIPPED_SUFFIXES, TORCHVISION_MODELS, Tensor, torchvision_tensors

__all__ = ["LoadSummary", "PretrainedError", "TORCHVISION_MODELS", "load_torchvision", "read_state_dict"]


@dataclasses.dataclass(frozen=True)
class LoadSummary:
    """What a load did: the cooptim layers filled from the file and those left at initialisation."""

    loaded: tuple[str, ...]
    kept: tuple[str, ...]
    tensors: int


def _shape(shape) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def _checked_value(tensor: Tensor, value, source: str, adapt_input_channels: bool):
    """The file's array for `tensor` in the model's layout, or a PretrainedError naming the key."""
    expected = tuple(tensor.variable[...].shape)
    needs = tensor.layout.torch_shape(expected)  # the shape the file should have, torch's layout
    adapting = tensor.input_conv and adapt_input_channels and value.ndim == 4 and value.shape[1] != needs[1]
    if adapting:
        if not (value.shape[1] == 3 and needs[1] == 1):
            raise PretrainedError(f"{source}: adapt_input_channels sums an RGB first conv for a one-channel "
                                  f"input; key {tensor.key!r} has {value.shape[1]} input channels and the "
                                  f"model {needs[1]}")
        needs = needs[:1] + (3,) + needs[2:]
    if tuple(value.shape) != needs:
        hint = ""
        if tensor.input_conv and value.ndim == 4 and value.shape[1] != needs[1]:
            hint = " (a different number of input channels: adapt_input_channels sums RGB weights for one channel)"
        elif tensor.layer == "head" or value.shape[:1] != needs[:1]:
            hint = (f" (another width, number of classes or input size: set model.width to match, or keep "
                    f"layer {tensor.layer!r} at its initialisation with keep_initial)")
        raise PretrainedError(f"{source}: key {tensor.key!r} has shape {_shape(value.shape)} but cooptim's layer "
                              f"{tensor.layer!r} needs {_shape(needs)} (torch layout {tensor.layout.name}){hint}")
    if adapting:
        value = value.sum(axis=1, keepdims=True)
    return tensor.layout.to_model(value).astype(tensor.variable[...].dtype)


def load_torchvision(model: nnx.Module, state: dict, *, source: str, model_name: str = "the model",
                     keep_initial=(), adapt_input_channels: bool = False) -> LoadSummary:
    """Fills `model` from torchvision's `state` dict ({key: array}, torch layouts), in place, all or
    nothing. `source` names the file in messages; `model_name` the architecture."""
    tensors = torchvision_tensors(model)
    if tensors is None:
        raise PretrainedError(f"{source}: {model_name} has no torchvision counterpart; torchvision weights "
                              f"load into {', '.join(TORCHVISION_MODELS)}")
    layers = list(dict.fromkeys(t.layer for t in tensors))
    kept = set()
    for pattern in keep_initial:
        matched = fnmatch.filter(layers, pattern)
        if not matched:
            raise PretrainedError(f"{source}: keep_initial pattern {pattern!r} matches no layer of {model_name}; "
                                  f"its layers are: {', '.join(layers)}")
        kept.update(matched)
    known = {t.key for t in tensors}
    unexpected = [k for k in state if k not in known and not k.endswith(SKIPPED_SUFFIXES)]
    if unexpected:
        raise PretrainedError(f"{source}: key {unexpected[0]!r} ({len(unexpected)} unexpected in all) has no "
                              f"place in cooptim's {model_name}: is the file another architecture? "
                              f"{model_name} expects keys such as {tensors[0].key!r}")
    values = []
    for tensor in tensors:
        if tensor.layer in kept:
            continue
        if tensor.key not in state:
            raise PretrainedError(f"{source}: key {tensor.key!r} (cooptim layer {tensor.layer!r}) is missing from "
                                  f"the file: is it a torchvision {model_name} state dict?")
        values.append((tensor, _checked_value(tensor, state[tensor.key], source, adapt_input_channels)))
    for tensor, value in values:  # only now, with every key and shape checked
        tensor.variable[...] = jnp.asarray(value)
    start_from_weights(model)
    return LoadSummary(loaded=tuple(layer for layer in layers if layer not in kept),
                       kept=tuple(layer for layer in layers if layer in kept), tensors=len(values))


def load_configured(model: nnx.Module, cfg, source: str = "<config>") -> LoadSummary:
    """Loads `cfg.model.pretrained` (a `Config`'s) into `model`; errors name the config key and file."""
    spec = cfg.model.pretrained
    where = f"{source}: model.pretrained.path {spec.path}"
    try:
        state = read_state_dict(spec.path)
    except PretrainedError as e:
        raise PretrainedError(f"{source}: model.pretrained.path: {e}") from None
    return load_torchvision(model, state, source=where, model_name=cfg.model.name,
                            keep_initial=tuple(spec.keep_initial), adapt_input_channels=spec.adapt_input_channels)
