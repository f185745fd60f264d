"""Models built from the sparse-aware layers.

Every model takes `sparsity_for(layer_name) -> method`, so any sparsity method applies to any
layer by config. Layer names are dotted paths such as ``stage2.block1.conv1``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from cooptim.nn.layers import SparseConv, SparseDense
from cooptim.sparsity import SparsityMethod

SparsityFor = Callable[[str], SparsityMethod]


def _avg_pool(x, k: int):
    return nnx.avg_pool(x, window_shape=(k, k), strides=(k, k))


class DigitsCNN(nnx.Module):
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

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) float32 -> logits (B, num_classes)."""
        x = jax.nn.relu(self.conv1(x))
        x = _avg_pool(jax.nn.relu(self.conv2(x)), 2)
        x = _avg_pool(jax.nn.relu(self.conv3(x)), 2)
        return self.head(x.reshape(x.shape[0], -1))


class BasicBlock(nnx.Module):
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
        self.stride, self.pad_ch = stride, out_ch - in_ch

    def __call__(self, x):
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x[:, :: self.stride, :: self.stride, :]
        if self.pad_ch:
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, self.pad_ch)))
        return jax.nn.relu(y + shortcut)


class CifarResNet(nnx.Module):
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

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, C) float32 -> logits (B, num_classes)."""
        x = jax.nn.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))


def resnet20(in_shape, num_classes, sparsity_for, *, width=16, rngs):
    return CifarResNet(in_shape, num_classes, sparsity_for, blocks_per_stage=3, width=width, rngs=rngs)


MODELS = {"digits_cnn": DigitsCNN, "resnet20": resnet20}
