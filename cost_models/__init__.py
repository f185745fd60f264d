"""Differentiable analytical cost models of FPGA accelerators.

Pure JAX/NumPy: importable without Flax or cooptim.

    import cost_models as cm
    net = cm.Network.build(cm.networks.resnet18(), patterns)   # a Graph, or a list of layers in order
    cost = cm.evaluate(net, cm.Folding.minimal(net), cm.Density.from_patterns(net), cm.get_device("u250"))
    best = cm.dse.greedy(net, cm.Density.from_patterns(net), cm.get_device("u250"))
"""

from cost_models import dataflow, dse, graph, networks, overlay, relax, sparsity, training
from cost_models.dataflow import (Cost, CostModelError, Density, EnergyParams, Folding, Network,
                                  Precision, ResourceParams, evaluate)
from cost_models.devices import DEVICES, Device, DeviceError, get_device, load_devices
from cost_models.dse import DeviceFitError
from cost_models.graph import INPUT, Graph, GraphError, Node
from cost_models.layers import (Conv2D, Dense, Elementwise, GlobalPool, Layer, Pool, Split, Subsample,
                                total_macs, total_params)
from cost_models.sparsity import (BalancedGroupPattern, CSPPattern, DensePattern, DynamicPattern,
                                  NMPattern, Pattern, UnstructuredPattern)

__all__ = [
    "DEVICES", "BalancedGroupPattern", "CSPPattern", "Conv2D", "Cost", "CostModelError", "Dense",
    "DensePattern", "Density", "Device", "DeviceError", "DeviceFitError", "DynamicPattern",
    "Elementwise", "EnergyParams", "Folding", "GlobalPool", "Graph", "GraphError", "INPUT", "Layer",
    "NMPattern", "Network", "Node", "Pattern", "Pool", "Precision", "ResourceParams", "Split",
    "Subsample", "UnstructuredPattern", "dataflow", "dse", "evaluate", "get_device", "graph",
    "load_devices", "networks", "overlay", "relax", "sparsity", "training",
    "total_macs", "total_params",
]
