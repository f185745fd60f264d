"""Static layer descriptions: the shapes a cost model needs, nothing trainable.

A description is a small frozen dataclass; a network is a tuple of them in execution order.
cooptim extracts them from a Flax model by tracing shapes (``cooptim.nn.describe``); users of
``cost_models`` alone may build them by hand.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union


def _conv_out(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class Conv2D:
    """A 2-D convolution, NHWC activations and HWIO weights.

    Attributes:
      name: the layer's name in the model (used in reports and errors).
      in_shape: (H, W, C_in) of one input image.
      out_channels: C_out.
      kernel: (K_h, K_w).
      stride: (S_h, S_w).
      padding: ((top, bottom), (left, right)) in pixels.
      groups: feature groups; C_in and C_out are both divisible by it (depthwise: groups == C_in).
    """

    name: str
    in_shape: tuple[int, int, int]
    out_channels: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1))
    groups: int = 1

    def __post_init__(self):
        c_in = self.in_shape[2]
        if c_in % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"layer {self.name!r}: groups={self.groups} must divide C_in={c_in} "
                f"and C_out={self.out_channels}"
            )

    @property
    def out_shape(self) -> tuple[int, int, int]:
        h, w, _ = self.in_shape
        return (
            _conv_out(h, self.kernel[0], self.stride[0], self.padding[0]),
            _conv_out(w, self.kernel[1], self.stride[1], self.padding[1]),
            self.out_channels,
        )

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (*self.kernel, self.in_shape[2] // self.groups, self.out_channels)

    @property
    def params(self) -> int:
        kh, kw, ci, co = self.weight_shape
        return kh * kw * ci * co

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image (dense)."""
        oh, ow, co = self.out_shape
        kh, kw, ci, _ = self.weight_shape
        return oh * ow * co * kh * kw * ci


@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected layer, weights (in_features, out_features)."""

    name: str
    in_features: int
    out_features: int

    @property
    def weight_shape(self) -> tuple[int, int]:
        return (self.in_features, self.out_features)

    @property
    def params(self) -> int:
        return self.in_features * self.out_features

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features


def total_macs(layers: Sequence[Layer]) -> int:
    return sum(layer.macs for layer in layers)


def total_params(layers: Sequence[Layer]) -> int:
    return sum(layer.params for layer in layers)


@dataclasses.dataclass(frozen=True)
class Pool:
    """Max or average pooling over K_h x K_w windows, NHWC."""

    name: str
    in_shape: tuple[int, int, int]
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    op: str = "max"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        h, w, c = self.in_shape
        return (_conv_out(h, self.kernel[0], self.stride[0], self.padding[0]),
                _conv_out(w, self.kernel[1], self.stride[1], self.padding[1]), c)

    params = 0
    macs = 0


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    """Global average pooling: (H, W, C) -> (1, 1, C)."""

    name: str
    in_shape: tuple[int, int, int]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (1, 1, self.in_shape[2])

    params = 0
    macs = 0


@dataclasses.dataclass(frozen=True)
class Elementwise:
    """A stream-through layer on (H, W, C): an activation (op='relu', ...) or a residual 'add'."""

    name: str
    in_shape: tuple[int, int, int]
    op: str = "relu"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.in_shape

    params = 0
    macs = 0


@dataclasses.dataclass(frozen=True)
class Subsample:
    """ResNet's parameter-free "option A" shortcut (He et al., CVPR 2016, Sec. 4.2): keeps every
    `stride`-th row and column and zero-pads the channels up to `out_channels`."""

    name: str
    in_shape: tuple[int, int, int]
    stride: int = 2
    out_channels: int | None = None

    @property
    def out_shape(self) -> tuple[int, int, int]:
        h, w, c = self.in_shape
        return (-(-h // self.stride), -(-w // self.stride), self.out_channels or c)

    params = 0
    macs = 0


@dataclasses.dataclass(frozen=True)
class Split:
    """A fork: one stream in, `outputs` identical streams out (fpgaConvNet's split layer). Graphs
    insert one wherever a tensor has more than one reader (`cost_models.graph`)."""

    name: str
    in_shape: tuple[int, int, int]
    outputs: int = 2

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.in_shape

    params = 0
    macs = 0


Layer = Union[Conv2D, Dense, Pool, GlobalPool, Elementwise, Subsample, Split]
