"""The network graph (`cost_models.graph`) and the dataflow model over it: checks, forks, skip
buffers, and the costs of the non-compute nodes."""

import numpy as np
import pytest

import cost_models as cm
from cost_models.graph import INPUT, Graph, GraphError, Node

U250 = cm.get_device("u250")


def basic_block(size=16, c=8):
    """conv -> relu -> conv -> add(input) -> relu: the input is read twice."""
    return Graph.build((size, size, c), [
        Node(cm.Conv2D("conv1", (size, size, c), c), (INPUT,)),
        Node(cm.Elementwise("relu1", (size, size, c)), ("conv1",)),
        Node(cm.Conv2D("conv2", (size, size, c), c), ("relu1",)),
        Node(cm.Elementwise("add", (size, size, c), "add"), ("conv2", INPUT)),
        Node(cm.Elementwise("relu2", (size, size, c)), ("add",)),
    ])


def test_a_tensor_read_twice_gets_one_split_and_every_stream_one_reader():
    g = basic_block()
    assert g.names == ("input.split", "conv1", "relu1", "conv2", "add", "relu2")
    split = g.node("input.split").layer
    assert isinstance(split, cm.Split) and split.outputs == 2
    assert g.node("add").inputs == ("conv2", "input.split")
    producers = [src for src, _ in g.edges]
    assert all(producers.count(n) == (2 if n == "input.split" else 1) for n in g.names[:-1])
    assert g.output == "relu2" and g.readers("input.split") == ("conv1", "add")


@pytest.mark.parametrize("nodes, message", [
    ([Node(cm.Conv2D("c", (8, 8, 3), 4), ("x",))], "reads 'x', which is not a node before it"),
    ([Node(cm.Conv2D("c", (8, 8, 4), 4), (INPUT,))], r"'c' expects input shape \(8, 8, 4\) but reads 'input' of shape \(8, 8, 3\)"),
    ([Node(cm.Conv2D("c", (8, 8, 3), 4), (INPUT,)), Node(cm.Dense("fc", 100, 10), ("c",))],
     "'fc' has 100 inputs but reads 'c' of shape"),
    ([Node(cm.Conv2D("c", (8, 8, 3), 4), (INPUT,)), Node(cm.Elementwise("a", (8, 8, 4), "add"), ("c",))],
     "'a' .* reads 1 inputs; it takes two or more"),
    ([Node(cm.Conv2D("c", (8, 8, 3), 4), (INPUT,)), Node(cm.Elementwise("c", (8, 8, 4)), ("c",))],
     "node name 'c' is used twice"),
    ([Node(cm.Conv2D("c", (8, 8, 3), 4), (INPUT,)), Node(cm.Conv2D("d", (8, 8, 3), 4), (INPUT,))],
     "node 'c' is read by no node and is not the output"),
])
def test_a_bad_graph_is_one_error_naming_the_node(nodes, message):
    with pytest.raises(GraphError, match=message):
        Graph.build((8, 8, 3), nodes)


def test_resnet18_graph_has_every_node_and_its_skip_connections():
    g = cm.networks.resnet18()
    kinds = [type(l).__name__ for l in g.layers]
    assert kinds.count("Conv2D") == 20 and kinds.count("Split") == 8  # one fork per block
    assert sum(isinstance(l, cm.Elementwise) and l.op == "add" for l in g.layers) == 8
    assert abs(g.macs / 1.814e9 - 1) < 0.01
    buffers = g.skip_buffers()
    assert sorted(buffers) == sorted(n for n in g.names if n.endswith(".add"))
    # an identity shortcut waits for two 3x3 convs: about two rows of the block's input
    short, depth = buffers["layer1.0.add"]
    assert short == "maxpool.split"
    assert 2 * 56 * 64 <= depth <= 3 * 56 * 64
    # a projection shortcut (1x1, stride 2) waits less than the two-conv branch, so it gets the FIFO
    assert buffers["layer2.0.add"][0] == "layer2.0.downsample"


def test_skip_buffers_grow_with_the_long_branch_and_appear_in_bram():
    # the FIFO depth grows with the image width (rows of the fork's tensor) ...
    small, wide = basic_block(size=16).skip_buffers()["add"][1], basic_block(size=64).skip_buffers()["add"][1]
    assert wide > 3.5 * small
    # ... and the merge node's BRAM holds it (no weights there)
    net = cm.Network.build(basic_block(size=64, c=64))
    cost = cm.evaluate(net, cm.Folding.minimal(net), cm.Density.dense(net), U250)
    add = net.graph.index("add")
    assert float(cost.layer_bram18[add]) > 0
    assert float(cost.layer_dsp[add]) == 0


def test_a_chain_graph_costs_the_same_as_the_list_it_came_from():
    layers = [cm.Conv2D("c1", (8, 8, 3), 8), cm.Elementwise("r1", (8, 8, 8)), cm.Pool("p", (8, 8, 8)),
              cm.Conv2D("c2", (4, 4, 8), 16), cm.GlobalPool("g", (4, 4, 16)), cm.Dense("fc", 16, 10)]
    from_list = cm.Network.build(layers)
    from_graph = cm.Network.build(Graph.chain(layers))
    assert from_list == from_graph
    a = cm.evaluate(from_list, cm.Folding.minimal(from_list), cm.Density.dense(from_list), U250)
    b = cm.evaluate(from_graph, cm.Folding.minimal(from_graph), cm.Density.dense(from_graph), U250)
    np.testing.assert_array_equal(a.layer_cycles, b.layer_cycles)
    assert float(a.latency) == float(b.latency)


def test_latency_fills_along_the_longest_branch_only():
    g = basic_block(size=32, c=16)
    net = cm.Network.build(g)
    cost = cm.evaluate(net, cm.Folding.minimal(net), cm.Density.dense(net), U250)
    fill = cm.dataflow.tables(net)["fill"]
    # the shortcut has no window: the fill is conv1's and conv2's, not doubled by the branch
    expected = float(cost.interval) * (1 + fill[g.index("conv1")] + fill[g.index("conv2")]) / (U250.clock_mhz * 1e6)
    assert float(cost.latency) == pytest.approx(expected, rel=1e-6)


def test_patterns_by_node_name_and_an_unknown_name_is_an_error():
    g = basic_block()
    net = cm.Network.build(g, {"conv2": cm.NMPattern(2, 4)})
    assert net.patterns[g.index("conv2")] == cm.NMPattern(2, 4)
    assert net.patterns[g.index("conv1")] == cm.DensePattern()
    with pytest.raises(cm.CostModelError, match="'conv9', which is no node"):
        cm.Network.build(g, {"conv9": cm.NMPattern(2, 4)})


def test_the_dse_folds_every_node_of_a_residual_graph():
    net = cm.Network.build(basic_block(size=16, c=16))
    best = cm.dse.greedy(net, cm.Density.dense(net), U250)
    # all engines, the split and the add included, end at the same interval or faster
    assert float(np.max(best.cost.layer_cycles)) == pytest.approx(float(best.cost.interval), rel=1e-6)
    assert int(best.folding.coarse_in[net.graph.index("add")]) > 1
