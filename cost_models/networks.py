"""Graphs of reference networks, for using the cost model without a trained model."""

from __future__ import annotations

from cost_models.graph import INPUT, Graph, Node
from cost_models.layers import Conv2D, Dense, Elementwise, GlobalPool, Pool


def resnet18(image: int = 224, num_classes: int = 1000) -> Graph:
    """ResNet-18 (He et al., CVPR 2016) at ImageNet resolution, as torchvision builds it: 20 convs
    + fc, with its pools, ReLUs and residual adds (1.82 GMAC, 11.7 M parameters at 224 x 224).
    Batch norm is folded into the convs."""
    size = image // 2
    nodes = [Node(Conv2D("conv1", (image, image, 3), 64, (7, 7), (2, 2), ((3, 3), (3, 3))), (INPUT,)),
             Node(Elementwise("relu1", (size, size, 64)), ("conv1",)),
             Node(Pool("maxpool", (size, size, 64), (3, 3), (2, 2), ((1, 1), (1, 1))), ("relu1",))]
    size //= 2
    c_in, x = 64, "maxpool"
    for stage, c_out in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}.{block}"
            out = size // stride
            nodes += [Node(Conv2D(f"{name}.conv1", (size, size, c_in), c_out, (3, 3), (stride, stride)), (x,)),
                      Node(Elementwise(f"{name}.relu1", (out, out, c_out)), (f"{name}.conv1",)),
                      Node(Conv2D(f"{name}.conv2", (out, out, c_out), c_out), (f"{name}.relu1",))]
            shortcut = x
            if stride != 1 or c_in != c_out:
                nodes.append(Node(Conv2D(f"{name}.downsample", (size, size, c_in), c_out, (1, 1),
                                         (stride, stride), ((0, 0), (0, 0))), (x,)))
                shortcut = f"{name}.downsample"
            nodes += [Node(Elementwise(f"{name}.add", (out, out, c_out), "add"), (f"{name}.conv2", shortcut)),
                      Node(Elementwise(f"{name}.relu2", (out, out, c_out)), (f"{name}.add",))]
            size, c_in, x = out, c_out, f"{name}.relu2"
    nodes += [Node(GlobalPool("avgpool", (size, size, 512)), (x,)), Node(Dense("fc", 512, num_classes), ("avgpool",))]
    return Graph.build((image, image, 3), nodes)
