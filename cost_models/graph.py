"""The network as a graph: nodes that are layer descriptions (`cost_models.layers`), joined by
streams.

A `Graph` holds its nodes in topological order; each node names the nodes it reads (or `INPUT`,
the image). The last node is the output. `Graph.build` checks the shapes along every edge and
inserts a `Split` wherever a tensor has more than one reader, as fpgaConvNet does, so that every
stream has one producer and one consumer:

    g = Graph.build((32, 32, 16), [
        Node(Conv2D("conv1", (32, 32, 16), 16), (INPUT,)),
        Node(Elementwise("relu1", (32, 32, 16)), ("conv1",)),
        Node(Conv2D("conv2", (32, 32, 16), 16), ("relu1",)),
        Node(Elementwise("add", (32, 32, 16), "add"), ("conv2", INPUT)),   # INPUT gets a split
    ])

Batch norm is folded into the convolution before a model reaches this graph. Adding an op: a
frozen dataclass in `layers.py` with `name`, `in_shape`, `out_shape`, `params` and `macs`, its
arity in `_ARITY` below if it reads more than one stream, and its row in `dataflow.tables`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import defaultdict
from typing import Sequence

from cost_models.layers import Conv2D, Dense, Elementwise, GlobalPool, Layer, Pool, Split, Subsample

INPUT = "input"


class GraphError(ValueError):
    """A graph that cannot be built; the message names the node."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One op and the nodes it reads, in order (`INPUT` for the network's input)."""

    layer: Layer
    inputs: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.layer.name


def op_name(layer: Layer) -> str:
    """A node's op, for reports and the quantizer: conv, dense, max_pool, avg_pool, global_pool,
    subsample, split, or an element-wise op's own name (relu, relu6, add)."""
    if isinstance(layer, Pool):
        return f"{layer.op}_pool"
    if isinstance(layer, Elementwise):
        return layer.op
    return {Conv2D: "conv", Dense: "dense", GlobalPool: "global_pool", Split: "split",
            Subsample: "subsample"}[type(layer)]


def out_shape(layer: Layer) -> tuple[int, ...]:
    """The shape of a layer's output for one image: (H, W, C), or (features,) for a dense layer."""
    return (layer.out_features,) if isinstance(layer, Dense) else tuple(layer.out_shape)


_MERGE_OPS = ("add",)  # element-wise ops that read two or more streams of one shape


def _arity(layer: Layer) -> int | None:
    """How many streams a layer reads (None: two or more)."""
    return None if isinstance(layer, Elementwise) and layer.op in _MERGE_OPS else 1


def _check_input(layer: Layer, shape: tuple, source: str) -> None:
    if isinstance(layer, Dense):  # a dense layer reads its input flattened (NHWC order)
        if math.prod(shape) != layer.in_features:
            raise GraphError(f"node {layer.name!r} has {layer.in_features} inputs but reads {source!r} "
                             f"of shape {shape} ({math.prod(shape)} values)")
    elif tuple(layer.in_shape) != tuple(shape):
        raise GraphError(f"node {layer.name!r} expects input shape {tuple(layer.in_shape)} but reads "
                         f"{source!r} of shape {shape}")


@dataclasses.dataclass(frozen=True)
class Graph:
    """Nodes in topological order; the last one is the output. Hashable: a static argument."""

    input_shape: tuple[int, int, int]
    nodes: tuple[Node, ...]

    @staticmethod
    def build(input_shape: Sequence[int], nodes: Sequence[Node], *, splits: bool = True,
              check_shapes: bool = True) -> "Graph":
        """Checks names, order, arity and (check_shapes) the shape on every edge (GraphError
        naming the node), and (splits) inserts a `Split` after every tensor with more than one
        reader."""
        input_shape = tuple(input_shape)
        nodes = tuple(nodes)
        if not nodes:
            raise GraphError("a graph needs at least one node")
        shapes = {INPUT: input_shape}
        for node in nodes:
            if node.name in shapes:
                raise GraphError(f"node name {node.name!r} is used twice" if node.name != INPUT
                                 else f"{INPUT!r} is the graph input's name; rename that node")
            arity = _arity(node.layer) if check_shapes else len(node.inputs)
            if (arity is None and len(node.inputs) < 2) or (arity is not None and len(node.inputs) != arity):
                raise GraphError(f"node {node.name!r} ({type(node.layer).__name__}) reads {len(node.inputs)} "
                                 f"inputs; it takes {'two or more' if arity is None else arity}")
            for source in node.inputs:
                if source not in shapes:
                    raise GraphError(f"node {node.name!r} reads {source!r}, which is not a node before it")
                if check_shapes:
                    _check_input(node.layer, shapes[source], source)
            shapes[node.name] = out_shape(node.layer)
        readers = defaultdict(list)
        for node in nodes:
            for source in node.inputs:
                readers[source].append(node.name)
        unread = [n.name for n in nodes[:-1] if not readers[n.name]]
        if unread:
            raise GraphError(f"node {unread[0]!r} is read by no node and is not the output "
                             f"(the output is the last node, {nodes[-1].name!r})")
        graph = Graph(input_shape, nodes)
        return graph._with_splits() if splits else graph

    @staticmethod
    def chain(layers: Sequence[Layer], input_shape: Sequence[int] | None = None, *,
              check_shapes: bool = True) -> "Graph":
        """A sequential network: each layer reads the one before it. The input shape defaults to
        the first layer's. check_shapes=False takes the list as a pipeline of engines in that
        order whatever their shapes (a list of only the compute layers, as `Network.build` takes)."""
        layers = tuple(layers)
        if not layers:
            raise GraphError("a graph needs at least one node")
        if input_shape is None:
            first = layers[0]
            input_shape = (first.in_features,) if isinstance(first, Dense) else first.in_shape
        inputs = (INPUT,) + tuple(l.name for l in layers[:-1])
        return Graph.build(input_shape, [Node(l, (i,)) for l, i in zip(layers, inputs)],
                           check_shapes=check_shapes)

    def _with_splits(self) -> "Graph":
        readers = defaultdict(list)
        for node in self.nodes:
            for source in node.inputs:
                readers[source].append(node.name)
        names = {n.name for n in self.nodes}
        fork, out = {}, []  # {tensor read more than once: the split that now feeds its readers}

        def split_after(source: str, shape) -> None:
            name = f"{source}.split"
            if name in names:
                raise GraphError(f"cannot insert the fork {name!r}: a node already has that name")
            out.append(Node(Split(name, shape, len(readers[source])), (source,)))
            fork[source] = name

        if len(readers[INPUT]) > 1:
            split_after(INPUT, self.input_shape)
        for node in self.nodes:
            out.append(Node(node.layer, tuple(fork.get(source, source) for source in node.inputs)))
            if len(readers[node.name]) > 1:
                split_after(node.name, out_shape(node.layer))
        return Graph(self.input_shape, tuple(out))

    # ------------------------------------------------------------------ partitions

    @functools.cached_property
    def cut_points(self) -> tuple[int, ...]:
        """Positions i (0 < i < len) where the graph can be cut in two: the only tensor that nodes
        i... read from before i is node i-1's output, and node i-1 is no fork (so the part after
        the cut is a graph with that tensor as its input)."""
        position = {n.name: i for i, n in enumerate(self.nodes)}
        position[INPUT] = -1
        last_read = {}
        for j, node in enumerate(self.nodes):
            for source in node.inputs:
                last_read[source] = j
        cuts = []
        for i in range(1, len(self.nodes)):
            crossing = [t for t, j in last_read.items() if j >= i and position[t] < i]
            if crossing == [self.nodes[i - 1].name] and not isinstance(self.nodes[i - 1].layer, Split):
                cuts.append(i)
        return tuple(cuts)

    def segment(self, start: int, stop: int) -> "Graph":
        """Nodes start..stop-1 as a graph of their own: a cut point's tensor (or the input) in,
        node stop-1's output out (`cut_points` says where a graph can be cut)."""
        if not (start == 0 or start in self.cut_points) or not (stop == len(self) or stop in self.cut_points):
            raise GraphError(f"nodes {start}..{stop - 1} are no segment: cut at {self.cut_points} only")
        before = self.nodes[start - 1].name if start else INPUT
        shape = out_shape(self.nodes[start - 1].layer) if start else self.input_shape
        nodes = [Node(n.layer, tuple(INPUT if s == before else s for s in n.inputs)) for n in self.nodes[start:stop]]
        return Graph.build(shape, nodes, splits=False)

    # ------------------------------------------------------------------ queries

    @property
    def layers(self) -> tuple:
        return tuple(n.layer for n in self.nodes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @property
    def output(self) -> str:
        return self.nodes[-1].name

    def __len__(self) -> int:
        return len(self.nodes)

    def index(self, name: str) -> int:
        for i, node in enumerate(self.nodes):
            if node.name == name:
                return i
        raise GraphError(f"no node {name!r} in the graph")

    def node(self, name: str) -> Node:
        return self.nodes[self.index(name)]

    def shape(self, name: str) -> tuple:
        return self.input_shape if name == INPUT else out_shape(self.node(name).layer)

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """(producer, consumer) of every stream, in the consumers' order."""
        return tuple((source, node.name) for node in self.nodes for source in node.inputs)

    def readers(self, name: str) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes if name in n.inputs)

    @property
    def weighted(self) -> tuple:
        """The layers with weights (convolutions and dense layers), in order."""
        return tuple(l for l in self.layers if l.params)

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.layers)

    @property
    def params(self) -> int:
        return sum(l.params for l in self.layers)

    def skip_buffers(self) -> dict[str, tuple[str, float]]:
        """{merge node: (the input edge's producer that needs a FIFO, its depth in words)}.

        In a streaming pipeline a merge (add) consumes both inputs in step. While the longer
        branch fills its sliding windows, the fork keeps emitting into the shorter one, and those
        words must wait in a FIFO or the fork stalls and the pipeline deadlocks (the skip-connection
        deadlock FINN's users meet). Our first-order depth: the words the fork emits before each
        branch yields its first output (`first_output_delay`, per windowed node, scaled to the
        fork's tensor), the difference between the longest and the shortest branch, at most the
        whole tensor."""
        buffers = {}
        for node in self.nodes:
            if len(node.inputs) < 2:
                continue
            delays = [self._branch_delay(source) for source in node.inputs]
            words = [d for _, d in delays]
            short = min(range(len(words)), key=words.__getitem__)
            # branches from different forks (nested merges): at most the merged tensor itself
            cap = max(math.prod(self.shape(fork)) for fork, _ in delays)
            buffers[node.name] = (node.inputs[short], float(min(max(words) - words[short], cap)))
        return buffers

    def _branch_delay(self, name: str) -> tuple[str, float]:
        """(the fork this branch starts at, the words the fork emits before the branch's first output)."""
        delay, current, path = 0.0, name, []
        while current != INPUT and not isinstance(self.node(current).layer, Split):
            path.append(self.node(current).layer)
            current = self.node(current).inputs[0]
        fork_words = math.prod(self.shape(current))
        for layer in path:
            in_words = math.prod(layer.in_shape) if not isinstance(layer, Dense) else layer.in_features
            delay += first_output_delay(layer) * fork_words / max(in_words, 1)
        return current, delay


def first_output_delay(layer: Layer) -> float:
    """Input words a node reads before its first output word (streamed row-major, NHWC).

    A sliding window (conv, pool) needs its first window's rows: (K_h - 1 - pad_top) full rows
    and (K_w - pad_left) pixels of the next, every channel; a dense or global-pool node needs its
    whole input; element-wise nodes none."""
    if isinstance(layer, (Conv2D, Pool)):
        h, w, c = layer.in_shape
        (kh, kw), ((pt, _), (pl, _)) = layer.kernel, layer.padding
        return (max(kh - 1 - pt, 0) * w + max(kw - pl, 1)) * c
    if isinstance(layer, Dense):
        return float(layer.in_features)
    if isinstance(layer, GlobalPool):
        return float(math.prod(layer.in_shape))
    return 0.0
