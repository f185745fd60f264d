"""Layer descriptions of reference networks, for using the cost model without a trained model."""

from __future__ import annotations

from cost_models.layers import Conv2D, Dense, Elementwise, GlobalPool, Pool


def resnet18(image: int = 224, num_classes: int = 1000) -> list:
    """ResNet-18 (He et al., CVPR 2016) at ImageNet resolution: 20 convs + fc, with its pools,
    ReLUs and residual adds (1.82 GMAC, 11.7 M parameters at 224 x 224)."""
    layers = [Conv2D("conv1", (image, image, 3), 64, (7, 7), (2, 2), ((3, 3), (3, 3))),
              Elementwise("relu1", (image // 2, image // 2, 64))]
    size = image // 2
    layers.append(Pool("maxpool", (size, size, 64), (3, 3), (2, 2), ((1, 1), (1, 1))))
    size //= 2
    c_in = 64
    for stage, c_out in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}.{block}"
            out = size // stride
            layers += [Conv2D(f"{name}.conv1", (size, size, c_in), c_out, (3, 3), (stride, stride)),
                       Elementwise(f"{name}.relu1", (out, out, c_out)),
                       Conv2D(f"{name}.conv2", (out, out, c_out), c_out)]
            if stride != 1 or c_in != c_out:
                layers.append(Conv2D(f"{name}.downsample", (size, size, c_in), c_out, (1, 1),
                                     (stride, stride), ((0, 0), (0, 0))))
            layers += [Elementwise(f"{name}.add", (out, out, c_out), "add"),
                       Elementwise(f"{name}.relu2", (out, out, c_out))]
            size, c_in = out, c_out
    layers += [GlobalPool("avgpool", (size, size, 512)), Dense("fc", 512, num_classes)]
    return layers
