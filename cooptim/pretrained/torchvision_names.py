"""Where each tensor of a torchvision state dict goes in cooptim's model of the same architecture.

torchvision's key names (torchvision/models/{resnet,mobilenetv2,vgg}.py) follow its module tree;
cooptim's layer names follow the papers'. Each `Tensor` says which key fills which variable and how
the layout changes: convolutions OIHW -> HWIO, linear layers (out, in) -> (in, out), and VGG's
first linear layer also from torch's (C, H, W) flattening order to cooptim's NHWC one. Batch norm
carries its running statistics (`num_batches_tracked` has no counterpart and is skipped).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from flax import nnx

from cooptim.nn.layers import SparseConv, SparseDense
from cooptim.nn.models import VGG16, ImageNetResNet, MobileNetV2, _ConvBN

TORCHVISION_MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vgg16")
SKIPPED_SUFFIXES = (".num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a torch tensor becomes a cooptim one, and the torch shape a cooptim shape expects."""

    name: str
    to_model: Callable[[np.ndarray], np.ndarray]
    torch_shape: Callable[[tuple], tuple]


SAME = Layout("as is", lambda a: a, tuple)
CONV = Layout("OIHW", lambda a: a.transpose(2, 3, 1, 0), lambda s: (s[3], s[2], s[0], s[1]))
LINEAR = Layout("(out, in)", lambda a: a.T, lambda s: (s[1], s[0]))


def flattened_linear(h: int, w: int, c: int) -> Layout:
    """A linear layer after a flatten: torch flattens (C, H, W), cooptim (H, W, C)."""
    def to_model(a):
        out = a.shape[0]
        return a.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out)
    return Layout(f"(out, C*H*W) of a {c}x{h}x{w} map", to_model, lambda s: (s[1], s[0]))


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One variable of the model and the state-dict key that fills it."""

    key: str
    layer: str  # cooptim's layer name (a batch norm: the conv it follows)
    variable: nnx.Variable
    layout: Layout
    input_conv: bool = False  # the network's first conv (whose input channels may be adapted)


def _conv(key: str, conv: SparseConv, input_conv: bool = False) -> list[Tensor]:
    tensors = [Tensor(f"{key}.weight", conv.layer_name, conv.kernel, CONV, input_conv)]
    if conv.bias is not None:
        tensors.append(Tensor(f"{key}.bias", conv.layer_name, conv.bias, SAME))
    return tensors


def _batch_norm(key: str, layer: str, norm: nnx.BatchNorm) -> list[Tensor]:
    return [Tensor(f"{key}.{torch_name}", layer, getattr(norm, ours), SAME)
            for torch_name, ours in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
                                     ("running_var", "var"))]


def _conv_bn(conv_key: str, bn_key: str, unit: _ConvBN, input_conv: bool = False) -> list[Tensor]:
    return _conv(conv_key, unit.conv, input_conv) + _batch_norm(bn_key, unit.conv.layer_name, unit.bn)


def _linear(key: str, dense: SparseDense, layout: Layout = LINEAR) -> list[Tensor]:
    tensors = [Tensor(f"{key}.weight", dense.layer_name, dense.kernel, layout)]
    if dense.bias is not None:
        tensors.append(Tensor(f"{key}.bias", dense.layer_name, dense.bias, SAME))
    return tensors


def _resnet(model: ImageNetResNet) -> list[Tensor]:
    """torchvision.models.resnet: conv1/bn1, layerS.B.convJ/bnJ, layerS.B.downsample.{0,1}, fc."""
    tensors = _conv_bn("conv1", "bn1", model.stem, input_conv=True)
    for block in model.blocks:
        for j, unit in enumerate(block.units):
            tensors += _conv_bn(f"{block.name}.conv{j + 1}", f"{block.name}.bn{j + 1}", unit)
        if isinstance(block.shortcut, _ConvBN):
            tensors += _conv_bn(f"{block.name}.downsample.0", f"{block.name}.downsample.1", block.shortcut)
    return tensors + _linear("fc", model.head)


def _mobilenet_v2(model: MobileNetV2) -> list[Tensor]:
    """torchvision.models.mobilenetv2: features.0 (stem), features.i.conv.{j}.{0,1} for the expand and
    depthwise units, features.i.conv.{n-1} / .{n} for the linear projection and its norm,
    features.{last} and classifier.1."""
    tensors = _conv_bn("features.0.0", "features.0.1", model.stem, input_conv=True)
    for i, block in enumerate(model.blocks):
        prefix, units = f"features.{i + 1}.conv", list(block.units)
        for j, unit in enumerate(units[:-1]):
            tensors += _conv_bn(f"{prefix}.{j}.0", f"{prefix}.{j}.1", unit)
        n = len(units)
        tensors += _conv_bn(f"{prefix}.{n - 1}", f"{prefix}.{n}", units[-1])
    last = len(model.blocks) + 1
    tensors += _conv_bn(f"features.{last}.0", f"features.{last}.1", model.last)
    return tensors + _linear("classifier.1", model.head)


def _vgg16(model: VGG16) -> list[Tensor]:
    """torchvision.models.vgg (no batch norm): features.{index} in the Sequential of convs, ReLUs
    and max pools; classifier.{0,3,6}, the first after torch's (C, 7, 7) flatten."""
    tensors, index, n_conv = [], 0, 0
    for item in VGG16.PLAN:
        if item == "M":
            index += 1
            continue
        tensors += _conv(f"features.{index}", model.convs[n_conv], input_conv=n_conv == 0)
        index, n_conv = index + 2, n_conv + 1
    channels = model.convs[n_conv - 1].out_features
    side = int(round((model.fc1.layout.shape[0] // channels) ** 0.5))
    tensors += _linear("classifier.0", model.fc1, flattened_linear(side, side, channels))
    return tensors + _linear("classifier.3", model.fc2) + _linear("classifier.6", model.head)


def torchvision_tensors(model: nnx.Module) -> list[Tensor] | None:
    """Every tensor a torchvision state dict gives `model`, in the file's order; None when the
    model has no torchvision counterpart."""
    if isinstance(model, ImageNetResNet):
        return _resnet(model)
    if isinstance(model, MobileNetV2):
        return _mobilenet_v2(model)
    if isinstance(model, VGG16):
        return _vgg16(model)
    return None
