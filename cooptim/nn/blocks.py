"""The blocks models are made of, each knowing its forward pass and its graph.

A model declares its structure once, as `steps`: attribute paths of its sub-modules ("conv1",
"blocks.3") and parameter-free ops (`Activation`, `Pool`, ...). `Chain` runs the steps in order;
`Residual` runs a body, a shortcut and adds them. Both have `__call__` (the Flax forward pass)
and `graph(builder, x)` (the same computation as `cost_models.graph` nodes), from the same steps,
so the cost model, the quantizer and the exporter see exactly what the model computes.

Batch norm has no node: it is folded into the convolution before it reaches hardware.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

import cost_models as cm
from cost_models.graph import INPUT


class GraphBuilder:
    """Collects the nodes of a model's graph while its blocks describe themselves, and what
    computes each node in floating point (`ops`: the sparse layer or the static op; `folded`: the
    batch norm that follows a conv), for the quantizer."""

    def __init__(self, input_shape: tuple[int, ...]):
        self.input_shape = tuple(input_shape)
        self.nodes: list[cm.Node] = []
        self.shapes = {INPUT: self.input_shape}
        self.ops: dict[str, object] = {}
        self.folded: dict[str, nnx.BatchNorm] = {}

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def add(self, layer, *inputs: str, op=None) -> str:
        """Appends `layer` reading `inputs`, computed by `op`; returns its name (the next input)."""
        self.nodes.append(cm.Node(layer, tuple(inputs)))
        self.shapes[layer.name] = cm.graph.out_shape(layer)
        self.ops[layer.name] = op
        return layer.name

    def fold(self, x: str, norm: nnx.BatchNorm) -> str:
        """Batch norm after node `x` (a conv): folded into it, no node of its own."""
        if x in self.folded or not isinstance(self.nodes[-1].layer, cm.Conv2D) or self.nodes[-1].name != x:
            raise ValueError(f"batch norm after {x!r}: only a batch norm right after a convolution is folded")
        self.folded[x] = norm
        return x

    def build(self) -> cm.Graph:
        return cm.Graph.build(self.input_shape, self.nodes)


def graph_of(model: nnx.Module, in_shape: tuple[int, int, int]) -> cm.Graph:
    """The model's graph for one input of `in_shape` (H, W, C)."""
    return trace_graph(model, in_shape).build()


def trace_graph(model: nnx.Module, in_shape: tuple[int, int, int]) -> GraphBuilder:
    """The builder after the model described itself: its nodes, ops and folded batch norms."""
    builder = GraphBuilder(in_shape)
    model.graph(builder, INPUT)
    return builder


# ---------------------------------------------------------------- parameter-free ops (static)


@dataclasses.dataclass(frozen=True)
class Activation:
    name: str
    kind: str = "relu"  # relu | relu6

    def __call__(self, x):
        return jax.nn.relu(x) if self.kind == "relu" else jnp.clip(x, 0.0, 6.0)

    def graph(self, g: GraphBuilder, x: str) -> str:
        return g.add(cm.Elementwise(self.name, g.shape(x), self.kind), x, op=self)


@dataclasses.dataclass(frozen=True)
class Pool:
    """Max or average pooling over `window` x `window`, zero (avg) or -inf (max) padding."""

    name: str
    op: str  # avg | max
    window: int = 2
    stride: int = 2
    padding: int = 0

    def __call__(self, x):
        p = self.padding
        if p:
            x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-jnp.inf if self.op == "max" else 0.0)
        pool = nnx.max_pool if self.op == "max" else nnx.avg_pool
        return pool(x, window_shape=(self.window,) * 2, strides=(self.stride,) * 2)

    def graph(self, g: GraphBuilder, x: str) -> str:
        p = self.padding
        return g.add(cm.Pool(self.name, g.shape(x), (self.window,) * 2, (self.stride,) * 2, ((p, p), (p, p)), self.op),
                     x, op=self)


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool:
    name: str = "avgpool"

    def __call__(self, x):
        return x.mean(axis=(1, 2))

    def graph(self, g: GraphBuilder, x: str) -> str:
        return g.add(cm.GlobalPool(self.name, g.shape(x)), x, op=self)


@dataclasses.dataclass(frozen=True)
class Flatten:
    """(B, H, W, C) -> (B, H*W*C) in NHWC order; no node (a dense layer reads its input flattened)."""

    def __call__(self, x):
        return x.reshape(x.shape[0], -1)

    def graph(self, g: GraphBuilder, x: str) -> str:
        return x


@dataclasses.dataclass(frozen=True)
class Identity:
    """The identity shortcut of a residual block."""

    def __call__(self, x):
        return x

    def graph(self, g: GraphBuilder, x: str) -> str:
        return x


@dataclasses.dataclass(frozen=True)
class Subsample:
    """ResNet's "option A" shortcut: every `stride`-th pixel, channels zero-padded by `pad_channels`."""

    name: str
    stride: int
    pad_channels: int

    def __call__(self, x):
        x = x[:, :: self.stride, :: self.stride, :]
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.pad_channels))) if self.pad_channels else x

    def graph(self, g: GraphBuilder, x: str) -> str:
        shape = g.shape(x)
        return g.add(cm.Subsample(self.name, shape, self.stride, shape[2] + self.pad_channels), x, op=self)


# ---------------------------------------------------------------- composite blocks


def _step(module: nnx.Module, step):
    """A step: a static op, or the sub-module at an attribute path such as "blocks.3"."""
    if not isinstance(step, str):
        return step
    node = module
    for part in step.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _run(module, steps, x):
    for step in steps:
        x = _step(module, step)(x)
    return x


def _graph(module, steps, g: GraphBuilder, x: str) -> str:
    for step in steps:
        part = _step(module, step)
        x = g.fold(x, part) if isinstance(part, nnx.BatchNorm) else part.graph(g, x)
    return x


class Chain(nnx.Module):
    """Runs `self.steps` in order (set by the subclass's constructor)."""

    steps: tuple = ()

    def __call__(self, x: jax.Array) -> jax.Array:
        return _run(self, self.steps, x)

    def graph(self, g: GraphBuilder, x: str) -> str:
        return _graph(self, self.steps, g, x)


class Residual(nnx.Module):
    """after(body(x) + shortcut(x)); `shortcut` None: no skip connection, just after(body(x)).

    Set by the subclass: `name`, `body` (steps), `shortcut` (a step or None), `after` (an op or None).
    """

    name: str = ""
    body: tuple = ()
    shortcut = None
    after = None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = _run(self, self.body, x)
        if self.shortcut is not None:
            y = y + _step(self, self.shortcut)(x)
        return self.after(y) if self.after is not None else y

    def graph(self, g: GraphBuilder, x: str) -> str:
        y = _graph(self, self.body, g, x)
        if self.shortcut is not None:
            s = _graph(self, (self.shortcut,), g, x)
            y = g.add(cm.Elementwise(f"{self.name}.add", g.shape(y), "add"), y, s, op=jnp.add)
        return self.after.graph(g, y) if self.after is not None else y
