"""Models built from the sparse-aware layers.

Every model takes `sparsity_for(layer_name) -> method`, so any sparsity method applies to any
layer by config. Layer names are dotted paths such as ``stage2.block1.conv1``.
"""

from __future__ import annotations

from typing import Callable

from flax import nnx

from cooptim.nn.blocks import Activation, Chain, Flatten, GlobalAvgPool, Identity, Pool, Residual, Subsample
from cooptim.nn.layers import SparseConv, SparseDense
from cooptim.sparsity import SparsityMethod

SparsityFor = Callable[[str], SparsityMethod]


class DigitsCNN(Chain):
    """A small CNN for 8x8 inputs: three 3x3 convs (w, 2w, 4w channels) and a linear head.

    conv1 -> relu -> conv2 -> relu -> avgpool 2 -> conv3 -> relu -> avgpool 2 -> flatten -> head.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, sparsity_for: SparsityFor,
                 *, width: int = 16, rngs: nnx.Rngs):
        h, w, c = in_shape
        if h % 4 or w % 4:
            raise ValueError(f"DigitsCNN needs H and W divisible by 4, got input {in_shape}")
        conv = lambda i, o, name: SparseConv(i, o, 3, name=name, use_bias=True,
                                             sparsity=sparsity_for(name), rngs=rngs)
        self.conv1 = conv(c, width, "conv1")
        self.conv2 = conv(width, 2 * width, "conv2")
        self.conv3 = conv(2 * width, 4 * width, "conv3")
        flat = (h // 4) * (w // 4) * 4 * width
        self.head = SparseDense(flat, num_classes, name="head", sparsity=sparsity_for("head"), rngs=rngs)
        self.steps = ("conv1", Activation("conv1.relu"), "conv2", Activation("conv2.relu"), Pool("pool2", "avg"),
                      "conv3", Activation("conv3.relu"), Pool("pool3", "avg"), Flatten(), "head")


class BasicBlock(Residual):
    """ResNet basic block (He et al., CVPR 2016) with the CIFAR "option A" shortcut:
    identity, subsampled by the stride and zero-padded in channels when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, name: str, sparsity_for: SparsityFor,
                 rngs: nnx.Rngs):
        self.conv1 = SparseConv(in_ch, out_ch, 3, strides=stride, name=f"{name}.conv1",
                                sparsity=sparsity_for(f"{name}.conv1"), rngs=rngs)
        self.bn1 = nnx.BatchNorm(out_ch, momentum=0.9, rngs=rngs)
        self.conv2 = SparseConv(out_ch, out_ch, 3, name=f"{name}.conv2",
                                sparsity=sparsity_for(f"{name}.conv2"), rngs=rngs)
        self.bn2 = nnx.BatchNorm(out_ch, momentum=0.9, rngs=rngs)
        self.name = name
        self.body = ("conv1", "bn1", Activation(f"{name}.relu1"), "conv2", "bn2")
        changes = stride != 1 or out_ch != in_ch
        self.shortcut = Subsample(f"{name}.shortcut", stride, out_ch - in_ch) if changes else Identity()
        self.after = Activation(f"{name}.relu2")


class CifarResNet(Chain):
    """ResNet-(6n+2) for 32x32 inputs (He et al. 2016, Sec. 4.2): ResNet-20 is n=3, 0.27M params."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, sparsity_for: SparsityFor,
                 *, blocks_per_stage: int = 3, width: int = 16, rngs: nnx.Rngs):
        self.stem = SparseConv(in_shape[2], width, 3, name="stem", sparsity=sparsity_for("stem"), rngs=rngs)
        self.stem_bn = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
        blocks, in_ch = [], width
        for s in range(3):
            out_ch = width * 2**s
            for b in range(blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, f"stage{s + 1}.block{b + 1}", sparsity_for, rngs))
                in_ch = out_ch
        self.blocks = nnx.List(blocks)
        self.head = SparseDense(in_ch, num_classes, name="head", sparsity=sparsity_for("head"), rngs=rngs)
        self.steps = ("stem", "stem_bn", Activation("stem.relu"), *(f"blocks.{i}" for i in range(len(blocks))),
                      GlobalAvgPool(), "head")


def resnet8(in_shape, num_classes, sparsity_for, *, width=16, rngs):
    """ResNet-8: one basic block per stage, small enough for the 8x8 digits."""
    return CifarResNet(in_shape, num_classes, sparsity_for, blocks_per_stage=1, width=width, rngs=rngs)


def resnet20(in_shape, num_classes, sparsity_for, *, width=16, rngs):
    return CifarResNet(in_shape, num_classes, sparsity_for, blocks_per_stage=3, width=width, rngs=rngs)


MODELS = {"digits_cnn": DigitsCNN, "resnet8": resnet8, "resnet20": resnet20}


def resnet56(in_shape, num_classes, sparsity_for, *, width=16, rngs):
    return CifarResNet(in_shape, num_classes, sparsity_for, blocks_per_stage=9, width=width, rngs=rngs)


class _ConvBN(Chain):
    """conv -> BatchNorm (-> ReLU or ReLU6), the unit of the ImageNet models."""

    def __init__(self, c_in, c_out, k, name, sparsity_for, rngs, *, stride=1, groups=1, act="relu"):
        self.conv = SparseConv(c_in, c_out, k, strides=stride, groups=groups, name=name,
                               sparsity=sparsity_for(name), rngs=rngs)
        self.bn = nnx.BatchNorm(c_out, momentum=0.9, rngs=rngs)
        self.steps = ("conv", "bn") + ((Activation(f"{name}.{act}", act),) if act else ())


class ImageNetBlock(Residual):
    """ResNet basic block (ResNet-18/34) or bottleneck (ResNet-50+, stride on the 3x3 conv as in
    torchvision), with a 1x1 conv + BN projection shortcut when the shape changes."""

    def __init__(self, c_in, width, stride, bottleneck, name, sparsity_for, rngs):
        c_out = width * 4 if bottleneck else width
        if bottleneck:
            self.units = nnx.List([
                _ConvBN(c_in, width, 1, f"{name}.conv1", sparsity_for, rngs),
                _ConvBN(width, width, 3, f"{name}.conv2", sparsity_for, rngs, stride=stride),
                _ConvBN(width, c_out, 1, f"{name}.conv3", sparsity_for, rngs, act=None)])
        else:
            self.units = nnx.List([
                _ConvBN(c_in, width, 3, f"{name}.conv1", sparsity_for, rngs, stride=stride),
                _ConvBN(width, c_out, 3, f"{name}.conv2", sparsity_for, rngs, act=None)])
        self.shortcut = (_ConvBN(c_in, c_out, 1, f"{name}.downsample", sparsity_for, rngs, stride=stride, act=None)
                         if stride != 1 or c_in != c_out else Identity())
        self.name = name
        self.body = tuple(f"units.{i}" for i in range(len(self.units)))
        self.after = Activation(f"{name}.relu")


class ImageNetResNet(Chain):
    """ResNet-18/50 (He et al., CVPR 2016, Table 1) for 224 x 224 inputs."""

    def __init__(self, in_shape, num_classes, sparsity_for, *, depth=18, width=64, rngs):
        stages = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
        bottleneck = depth >= 50
        self.stem = _ConvBN(in_shape[2], width, 7, "stem", sparsity_for, rngs, stride=2)
        blocks, c_in = [], width
        for s, n_blocks in enumerate(stages):
            w = width * 2**s
            for b in range(n_blocks):
                block = ImageNetBlock(c_in, w, 2 if (s > 0 and b == 0) else 1, bottleneck,
                                      f"layer{s + 1}.{b}", sparsity_for, rngs)
                blocks.append(block)
                c_in = w * 4 if bottleneck else w
        self.blocks = nnx.List(blocks)
        self.head = SparseDense(c_in, num_classes, name="head", sparsity=sparsity_for("head"), rngs=rngs)
        self.steps = ("stem", Pool("maxpool", "max", 3, 2, 1), *(f"blocks.{i}" for i in range(len(blocks))),
                      GlobalAvgPool(), "head")


class InvertedResidual(Residual):
    """MobileNetV2 block (Sandler et al., CVPR 2018, Table 1): 1x1 expand, 3x3 depthwise, 1x1 project."""

    def __init__(self, c_in, c_out, stride, expand, name, sparsity_for, rngs):
        hidden = c_in * expand
        units = []
        if expand != 1:
            units.append(_ConvBN(c_in, hidden, 1, f"{name}.expand", sparsity_for, rngs, act="relu6"))
        units += [_ConvBN(hidden, hidden, 3, f"{name}.depthwise", sparsity_for, rngs, stride=stride,
                          groups=hidden, act="relu6"),
                  _ConvBN(hidden, c_out, 1, f"{name}.project", sparsity_for, rngs, act=None)]
        self.units = nnx.List(units)
        self.name = name
        self.body = tuple(f"units.{i}" for i in range(len(units)))
        self.shortcut = Identity() if stride == 1 and c_in == c_out else None


def _divisible(channels: float, divisor: int = 8) -> int:
    """Channels rounded to the nearest multiple of `divisor`, never below it nor more than 10% under
    `channels` (the rounding of the MobileNetV2 reference implementation's width multiplier)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class MobileNetV2(Chain):
    """MobileNetV2 for 224 x 224 inputs (Sandler et al., CVPR 2018; 3.5 M parameters, 0.30 GMAC
    at width 32). `width` is the stem's channels: every layer scales by the width multiplier
    width / 32, rounded to multiples of 8, and the last 1x1 conv keeps 1280 channels below 1.0,
    as in the paper."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))  # (expansion t, channels c, repeats n, stride s)

    def __init__(self, in_shape, num_classes, sparsity_for, *, width=32, rngs):
        alpha = width / 32
        self.stem = _ConvBN(in_shape[2], width, 3, "stem", sparsity_for, rngs, stride=2, act="relu6")
        blocks, c_in = [], width
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            c = c if alpha == 1 else _divisible(c * alpha)
            for r in range(n):
                blocks.append(InvertedResidual(c_in, c, s if r == 0 else 1, t, f"block{i + 1}.{r}",
                                               sparsity_for, rngs))
                c_in = c
        self.blocks = nnx.List(blocks)
        last = 1280 if alpha <= 1 else _divisible(1280 * alpha)
        self.last = _ConvBN(c_in, last, 1, "last", sparsity_for, rngs, act="relu6")
        self.head = SparseDense(last, num_classes, name="head", sparsity=sparsity_for("head"), rngs=rngs)
        self.steps = ("stem", *(f"blocks.{i}" for i in range(len(blocks))), "last", GlobalAvgPool(), "head")


class VGG16(Chain):
    """VGG-16 (Simonyan & Zisserman, ICLR 2015, configuration D) for 224 x 224 inputs; `hidden` is
    the width of its two hidden fully connected layers (4096 in the paper)."""

    PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, in_shape, num_classes, sparsity_for, *, width=64, hidden=4096, rngs):
        convs, c_in, size = [], in_shape[2], in_shape[0]
        scale = width / 64
        for i, item in enumerate(self.PLAN):
            if item == "M":
                size //= 2
                continue
            c_out = int(item * scale)
            name = f"conv{len(convs) + 1}"
            convs.append(SparseConv(c_in, c_out, 3, name=name, use_bias=True, sparsity=sparsity_for(name), rngs=rngs))
            c_in = c_out
        self.convs = nnx.List(convs)
        self.fc1 = SparseDense(c_in * size * size, hidden, name="fc1", sparsity=sparsity_for("fc1"), rngs=rngs)
        self.fc2 = SparseDense(hidden, hidden, name="fc2", sparsity=sparsity_for("fc2"), rngs=rngs)
        self.head = SparseDense(hidden, num_classes, name="head", sparsity=sparsity_for("head"), rngs=rngs)
        steps, n_conv, n_pool = [], 0, 0
        for item in self.PLAN:
            if item == "M":
                n_pool += 1
                steps.append(Pool(f"pool{n_pool}", "max"))
            else:
                steps += [f"convs.{n_conv}", Activation(f"conv{n_conv + 1}.relu")]
                n_conv += 1
        self.steps = (*steps, Flatten(), "fc1", Activation("fc1.relu"), "fc2", Activation("fc2.relu"), "head")


def resnet18(in_shape, num_classes, sparsity_for, *, width=64, rngs):
    return ImageNetResNet(in_shape, num_classes, sparsity_for, depth=18, width=width, rngs=rngs)


def resnet50(in_shape, num_classes, sparsity_for, *, width=64, rngs):
    return ImageNetResNet(in_shape, num_classes, sparsity_for, depth=50, width=width, rngs=rngs)


MODELS.update({"resnet56": resnet56, "resnet18": resnet18, "resnet50": resnet50,
               "mobilenet_v2": MobileNetV2, "vgg16": VGG16})
