"""ResNet-18 and MobileNetV2 at full width and ImageNet shape through quantization, export and g++.

    python benchmarks/export_imagenet.py [--model resnet18 mobilenet_v2] [--calibration 8] [--vectors 2]

The tests take these networks at reduced width and 32x32; this runs them as users deploy them:
224x224x3 input, the zoo's own widths, random weights and batch-norm statistics (no data set or
weights are loaded), one node per exported sparsity pattern (N:M, Kang's balanced groups, CSP,
HASS unstructured, DPACS dynamic), the rest dense. Each stage is timed: the model build, the
calibration on `--calibration` random images, the export (DSE, test vectors with the saturating
one first, files), the g++ build and the C++ reference's run, which must print PASS with every
node bit-exact.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/kernels.py is named like the `kernels` package: drop this folder from the path so that
# `import kernels` (through cooptim) finds the package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np

from cooptim import config as config_lib
from cooptim import export as ex
from cooptim import nn
from cooptim import quantize as q
from cooptim.data import ArraySource, Dataset
from cooptim.testing import EXPORTED_PATTERNS as PATTERNS, randomize_batch_norms

SHAPE = (224, 224, 3)
WHERE = {  # network -> {pattern: the node that takes it}
    "resnet18": {"nm": "layer1.0.conv1", "balanced_group": "layer2.0.conv2", "csp": "layer2.0.downsample",
                 "unstructured": "layer3.0.conv2", "dynamic": "layer4.0.conv1"},
    "mobilenet_v2": {"nm": "block2.0.expand", "balanced_group": "block2.0.project", "csp": "block3.0.expand",
                     "unstructured": "block3.1.expand", "dynamic": "block4.0.project"},
}


def run(name: str, calibration: int, vectors: int, folder: Path) -> dict:
    times, t0 = {}, time.perf_counter()
    cfg = config_lib.from_dict({
        "name": f"imagenet_{name}", "model": {"name": name},
        "sparsity": {"default": {"method": "dense"}, "layers": {n: PATTERNS[p] for p, n in WHERE[name].items()}},
        "hardware": {"data_bits": 8, "weight_bits": 8, "device": "u250"}})
    rng = np.random.default_rng(0)
    model = nn.build_model(cfg, SHAPE, 1000)
    randomize_batch_norms(model, rng)
    model.eval()
    images = rng.normal(size=(calibration + vectors, *SHAPE)).astype(np.float32)
    labels = rng.integers(0, 1000, len(images))
    source = lambda s: ArraySource(images[s], labels[s], np.zeros(3, np.float32), np.ones(3, np.float32))
    dataset = Dataset("random", source(slice(0, calibration)), source(slice(calibration, None)), 1000, SHAPE)
    times["build"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    net = q.calibrate_graph(model, images[:calibration], cfg.hardware)
    times["calibrate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = ex.export_model(cfg, model, dataset, net, folder / name, vectors=vectors)
    times["export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex.build_reference(out)
    times["g++"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = ex.run_reference(out)
    times["reference"] = time.perf_counter() - t0
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-500:]
    return {"nodes": len(net.nodes), "passed": done.returncode == 0 and last.startswith("PASS"),
            "summary": last, "times": times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", default=list(WHERE), choices=list(WHERE))
    parser.add_argument("--calibration", type=int, default=8, help="random images to calibrate on")
    parser.add_argument("--vectors", type=int, default=2, help="test images after the saturating vector")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model:
            result = run(name, args.calibration, args.vectors, Path(tmp))
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in result["times"].items())
            print(f"{name} (224x224x3, full width, {result['nodes']} nodes): {result['summary']} [{stages}]")
            failed |= not result["passed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
