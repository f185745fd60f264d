"""Records fpgaConvNet's own predictions for many conv / inner-product layers and foldings.

The peer is fpgaconvnet-model 0.1.4.2 (hls backend). It cannot be installed next to cooptim (it
pins onnx 1.8 / onnxruntime 1.7), so it lives in its own virtual environment:

    python3 -m venv /tmp/peer
    /tmp/peer/bin/pip install --no-deps fpgaconvnet-model==0.1.4.2
    /tmp/peer/bin/pip install torch==2.13.0 onnx pydot graphviz "protobuf<4" ddt scipy networkx pyyaml matplotlib
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python /tmp/peer/bin/python benchmarks/peer_fpgaconvnet.py \
        tests/fixtures/fpgaconvnet_peer.json

The script needs only the peer (no cooptim, no JAX): it writes a JSON list of
{layer, folding, peer: {cycles, LUT, FF, BRAM, DSP}} that tests/test_cost_peer.py compares against.

`--network DESIGN.json OUT.json` evaluates a whole network design written by
`experiments/resnet18_vs_fpgaconvnet.py design` (every node with its folding) with the peer's own
layer models, and composes them as the peer's `Partition` does (interval = the slowest node's
latency; pipeline depth = the longest path of the nodes' pipeline depths). The wheel has no
eltwise, split or global-pooling layer; those need fpgaconvnet-model's git source (the current
layout), in a second environment (`fetch` gives the source where there is no network):

    python3 -m venv /tmp/peer-git
    /tmp/peer-git/bin/pip install --no-deps ./fpgaconvnet-model     # its git checkout
    /tmp/peer-git/bin/pip install numpy networkx pydot graphviz scipy fpbinary matplotlib toml \
        "protobuf==3.20.3" tabulate "pyparsing<3" ddt pyyaml xgboost scikit-learn pandas onnx tqdm

`--parse FILE` reads an exported `fpgaconvnet.json` with the git source's own protobuf
(tests/integration/test_export_graphs.py runs it where COOPTIM_PEER_PYTHON names that environment's
python). Run the network mode in both environments: the wheel gives the hls backend's figures for the conv,
fc, pooling and ReLU layers it has, the git source every node with its (chisel) backend.
"""

import json
import random
import sys
import time
import warnings

warnings.filterwarnings("ignore")

# (name, H, W, C_in, C_out, K, stride, pad, groups): layers of ResNet-18, MobileNetV2 and VGG-16
# at ImageNet resolution (a representative subset; repeated shapes appear once).
CONVS = [
    ("resnet18.conv1", 224, 224, 3, 64, 7, 2, 3, 1),
    ("resnet18.layer1.conv", 56, 56, 64, 64, 3, 1, 1, 1),
    ("resnet18.layer2.0.conv1", 56, 56, 64, 128, 3, 2, 1, 1),
    ("resnet18.layer2.0.downsample", 56, 56, 64, 128, 1, 2, 0, 1),
    ("resnet18.layer2.conv", 28, 28, 128, 128, 3, 1, 1, 1),
    ("resnet18.layer3.0.conv1", 28, 28, 128, 256, 3, 2, 1, 1),
    ("resnet18.layer3.conv", 14, 14, 256, 256, 3, 1, 1, 1),
    ("resnet18.layer4.0.conv1", 14, 14, 256, 512, 3, 2, 1, 1),
    ("resnet18.layer4.conv", 7, 7, 512, 512, 3, 1, 1, 1),
    ("mobilenetv2.conv1", 224, 224, 3, 32, 3, 2, 1, 1),
    ("mobilenetv2.block1.expand", 112, 112, 16, 96, 1, 1, 0, 1),
    ("mobilenetv2.block2.project", 56, 56, 144, 24, 1, 1, 0, 1),
    ("mobilenetv2.block3.expand", 28, 28, 32, 192, 1, 1, 0, 1),
    ("mobilenetv2.block5.expand", 14, 14, 96, 576, 1, 1, 0, 1),
    ("mobilenetv2.block6.project", 7, 7, 960, 160, 1, 1, 0, 1),
    ("mobilenetv2.last", 7, 7, 320, 1280, 1, 1, 0, 1),
    ("vgg16.conv1_2", 224, 224, 64, 64, 3, 1, 1, 1),
    ("vgg16.conv2_1", 112, 112, 64, 128, 3, 1, 1, 1),
    ("vgg16.conv3_2", 56, 56, 256, 256, 3, 1, 1, 1),
    ("vgg16.conv4_2", 28, 28, 512, 512, 3, 1, 1, 1),
    ("vgg16.conv5_1", 14, 14, 512, 512, 3, 1, 1, 1),
]
DENSES = [("resnet18.fc", 512, 1000), ("mobilenetv2.fc", 1280, 1000), ("vgg16.fc7", 4096, 4096)]
# Added to the fixture later, sampled with their own seed so that the records above stay as they
# were: depthwise convs, 1 x 1 and strided convs with the largest coarse products, and pooling
# with padding. coarse_group stays 1: this wheel's hls conv ignores it in its rate (its cycles are
# the same for every coarse_group) and counts one bias DSP per coarse_out lane only.
MORE_CONVS = [
    ("mobilenetv2.block2.depthwise", 112, 112, 96, 96, 3, 2, 1, 96),
    ("mobilenetv2.block5.depthwise", 14, 14, 576, 576, 3, 1, 1, 576),
    ("mobilenetv2.block6.depthwise", 14, 14, 960, 960, 3, 2, 1, 960),
    ("resnet18.layer3.0.downsample", 28, 28, 128, 256, 1, 2, 0, 1),
    ("resnet18.layer4.conv.widest", 7, 7, 512, 512, 3, 1, 1, 1),
    ("mobilenetv2.block4.expand", 14, 14, 64, 384, 1, 1, 0, 1),
    ("resnet50.layer1.conv2", 56, 56, 64, 64, 3, 1, 1, 1),
    ("vgg16.conv3_1", 56, 56, 128, 256, 3, 1, 1, 1),
]
POOLS = [  # (name, H, W, C, K, stride, pad)
    ("resnet18.maxpool", 112, 112, 64, 3, 2, 1),
    ("vgg16.pool1", 224, 224, 64, 2, 2, 0),
    ("vgg16.pool4", 28, 28, 512, 2, 2, 0),
    ("padded.pool", 15, 15, 32, 3, 1, 1),
]


def factors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def main(out_path, per_layer=12, seed=0):
    from fpgaconvnet.models.layers.hls.ConvolutionLayer import ConvolutionLayer
    from fpgaconvnet.models.layers import InnerProductLayer

    rng = random.Random(seed)
    records, t_peer = [], 0.0
    for name, h, w, c, f, k, s, p, g in CONVS:
        options = [(ci, co, fi) for ci in factors(c // g) for co in factors(f // g) for fi in factors(k * k)]
        for ci, co, fi in [(1, 1, 1)] + rng.sample(options, min(per_layer - 1, len(options))):
            t0 = time.perf_counter()
            layer = ConvolutionLayer(filters=f, rows=h, cols=w, channels=c, coarse_in=ci, coarse_out=co,
                                     kernel_size=k, stride=s, pad=p, groups=g, fine=fi)
            peer = {"cycles": layer.latency(), **layer.resource()}
            t_peer += time.perf_counter() - t0
            records.append({"layer": {"type": "conv", "name": name, "in_shape": [h, w, c], "out_channels": f,
                                      "kernel": k, "stride": s, "padding": p, "groups": g},
                            "folding": {"coarse_in": ci, "coarse_out": co, "coarse_group": 1, "fine": fi},
                            "peer": peer})
    for name, cin, cout in DENSES:
        options = [(ci, co) for ci in factors(cin) for co in factors(cout)]
        for ci, co in [(1, 1)] + rng.sample(options, per_layer - 1):
            t0 = time.perf_counter()
            layer = InnerProductLayer(filters=cout, rows=1, cols=1, channels=cin, coarse_in=ci, coarse_out=co)
            peer = {"cycles": layer.latency(), **layer.resource()}
            t_peer += time.perf_counter() - t0
            records.append({"layer": {"type": "dense", "name": name, "in_features": cin, "out_features": cout},
                            "folding": {"coarse_in": ci, "coarse_out": co, "coarse_group": 1, "fine": 1},
                            "peer": peer})
    more, seconds = _more_records(per_layer, seed + 1)
    records += more
    t_peer += seconds
    meta = {"peer": "fpgaconvnet-model 0.1.4.2 (hls backend), 16-bit data/weights",
            "seconds_per_layer_evaluation": t_peer / len(records), "records": len(records)}
    with open(out_path, "w") as fh:
        json.dump({"meta": meta, "records": records}, fh, indent=1)
    print(f"wrote {len(records)} records to {out_path}; peer: {1e3 * meta['seconds_per_layer_evaluation']:.2f} ms per layer")


def _more_records(per_layer, seed):
    """MORE_CONVS (every folding kind, the largest coarse products among them) and POOLS."""
    from fpgaconvnet.models.layers.hls.ConvolutionLayer import ConvolutionLayer
    from fpgaconvnet.models.layers import PoolingLayer

    rng = random.Random(seed)
    records, t_peer = [], 0.0
    for name, h, w, c, f, k, s, p, g in MORE_CONVS:
        options = [(ci, co, fi) for ci in factors(c // g) for co in factors(f // g) for fi in factors(k * k)]
        largest = max(options, key=lambda o: (o[0] * o[1], o[2]))
        for ci, co, fi in [(1, 1, 1), largest] + rng.sample(options, min(per_layer - 2, len(options))):
            t0 = time.perf_counter()
            layer = ConvolutionLayer(filters=f, rows=h, cols=w, channels=c, coarse_in=ci, coarse_out=co,
                                     kernel_size=k, stride=s, pad=p, groups=g, fine=fi)
            peer = {"cycles": layer.latency(), **layer.resource()}
            t_peer += time.perf_counter() - t0
            records.append({"layer": {"type": "conv", "name": name, "in_shape": [h, w, c], "out_channels": f,
                                      "kernel": k, "stride": s, "padding": p, "groups": g},
                            "folding": {"coarse_in": ci, "coarse_out": co, "coarse_group": 1, "fine": fi},
                            "peer": peer})
    for name, h, w, c, k, s, p in POOLS:
        for coarse in [1, c] + rng.sample(factors(c)[1:-1], min(per_layer - 2, len(factors(c)) - 2)):
            t0 = time.perf_counter()
            layer = PoolingLayer(rows=h, cols=w, channels=c, coarse=coarse, pool_type="max", kernel_size=k,
                                 stride=s, pad=p)
            peer = {"cycles": layer.latency(), **layer.resource()}
            t_peer += time.perf_counter() - t0
            records.append({"layer": {"type": "pool", "name": name, "in_shape": [h, w, c], "kernel": k,
                                      "stride": s, "padding": p},
                            "folding": {"coarse_in": coarse, "coarse_out": 1, "coarse_group": 1, "fine": 1},
                            "peer": peer})
    return records, t_peer


RESNET18 = [  # (H, W, C_in, C_out, K, stride, pad): the 20 convs of ResNet-18 at 224 x 224
    (224, 224, 3, 64, 7, 2, 3)] + [(56, 56, 64, 64, 3, 1, 1)] * 4 + [
    (56, 56, 64, 128, 3, 2, 1), (28, 28, 128, 128, 3, 1, 1), (56, 56, 64, 128, 1, 2, 0),
    (28, 28, 128, 128, 3, 1, 1), (28, 28, 128, 128, 3, 1, 1),
    (28, 28, 128, 256, 3, 2, 1), (14, 14, 256, 256, 3, 1, 1), (28, 28, 128, 256, 1, 2, 0),
    (14, 14, 256, 256, 3, 1, 1), (14, 14, 256, 256, 3, 1, 1),
    (14, 14, 256, 512, 3, 2, 1), (7, 7, 512, 512, 3, 1, 1), (14, 14, 256, 512, 1, 2, 0),
    (7, 7, 512, 512, 3, 1, 1), (7, 7, 512, 512, 3, 1, 1)]


def time_resnet18(repeats=20):
    """Seconds for the peer to evaluate ResNet-18's conv + fc layers (latency and resources) once."""
    from fpgaconvnet.models.layers.hls.ConvolutionLayer import ConvolutionLayer
    from fpgaconvnet.models.layers import InnerProductLayer

    def once():
        interval, rsc = 0.0, 0
        for h, w, c, f, k, s, p in RESNET18:
            layer = ConvolutionLayer(filters=f, rows=h, cols=w, channels=c, coarse_in=1, coarse_out=1,
                                     kernel_size=k, stride=s, pad=p, fine=1)
            interval = max(interval, layer.latency())
            rsc += layer.resource()["DSP"]
        fc = InnerProductLayer(filters=1000, rows=1, cols=1, channels=512)
        return max(interval, fc.latency()), rsc + fc.resource()["DSP"]

    once()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - t0) / repeats


def time_resnet18_update(repeats=50):
    """Seconds for the peer to evaluate ResNet-18's conv + fc layers once on its optimiser's own
    path: layers built once, then per evaluation each layer's folding set (the setters run the
    layer's `update()`), its latency and its resources read. Successive evaluations alternate
    between two foldings, so every update changes the modules."""
    from fpgaconvnet.models.layers.hls.ConvolutionLayer import ConvolutionLayer
    from fpgaconvnet.models.layers import InnerProductLayer

    layers = [ConvolutionLayer(filters=f, rows=h, cols=w, channels=c, coarse_in=1, coarse_out=1,
                               kernel_size=k, stride=s, pad=p, fine=1) for h, w, c, f, k, s, p in RESNET18]
    layers.append(InnerProductLayer(filters=1000, rows=1, cols=1, channels=512))

    def once(wide):
        interval, dsp = 0.0, 0
        for layer in layers:
            layer.coarse_in = 1 if not wide or layer.channels == 3 else 2
            layer.coarse_out = 2 if wide else 1
            interval = max(interval, layer.latency())
            dsp += layer.resource()["DSP"]
        return interval, dsp

    once(True)
    t0 = time.perf_counter()
    for i in range(repeats):
        once(i % 2 == 0)
    return (time.perf_counter() - t0) / repeats


def _peer_layer(node: dict, api_git: bool):
    """The peer's layer object for one node of a design, or None where this peer has no such layer."""
    import fpgaconvnet.models.layers as L
    shape = node["in_shape"]
    h, w, c = shape if len(shape) == 3 else (1, 1, shape[-1])  # (features,): a vector after a dense layer
    fold = node["folding"]
    if node["type"] == "conv":
        (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = node["kernel"], node["stride"], node["padding"]
        if api_git:
            return L.ConvolutionLayer(node["out_channels"], h, w, c, coarse_in=fold["coarse_in"],
                                      coarse_out=fold["coarse_out"], coarse_group=fold["coarse_group"],
                                      kernel_rows=kh, kernel_cols=kw, stride_rows=sh, stride_cols=sw,
                                      groups=node["groups"], pad_top=pt, pad_bottom=pb, pad_left=pl,
                                      pad_right=pr, fine=fold["fine"])
        from fpgaconvnet.models.layers.hls.ConvolutionLayer import ConvolutionLayer
        assert kh == kw and sh == sw and pt == pb == pl == pr, node["name"]
        return ConvolutionLayer(filters=node["out_channels"], rows=h, cols=w, channels=c,
                                coarse_in=fold["coarse_in"], coarse_out=fold["coarse_out"], kernel_size=kh,
                                stride=sh, pad=pt, groups=node["groups"], fine=fold["fine"])
    if node["type"] == "dense":
        return L.InnerProductLayer(node["out_channels"], 1, 1, c, coarse_in=fold["coarse_in"],
                                   coarse_out=fold["coarse_out"])
    coarse = fold["coarse_in"]
    if node["type"] == "pool":
        (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = node["kernel"], node["stride"], node["padding"]
        if api_git:
            return L.PoolingLayer(h, w, c, coarse=coarse, kernel_rows=kh, kernel_cols=kw, stride_rows=sh,
                                  stride_cols=sw, pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr)
        return L.PoolingLayer(h, w, c, coarse=coarse, kernel_size=kh, stride=sh, pad=pt)
    if node["type"] == "relu":
        return L.ReLULayer(h, w, c, coarse=coarse)
    if not api_git:
        return None
    if node["type"] == "add":
        return L.EltWiseLayer(h, w, c, ports_in=len(node["inputs"]), coarse=coarse, op_type="add")
    if node["type"] == "split":
        return L.SplitLayer(h, w, c, coarse=coarse, ports_out=node["outputs"])
    if node["type"] == "global_pool":
        return L.GlobalPoolingLayer(h, w, c, coarse=coarse)
    raise ValueError(f"node {node['name']}: no peer layer for type {node['type']!r}")


def network(design_path, out_path):
    """Every node of a design through the peer's layer models, composed as its Partition does."""
    import inspect
    import fpgaconvnet.models.layers as L

    api_git = "kernel_rows" in inspect.signature(L.ConvolutionLayer.__init__).parameters
    design = json.loads(open(design_path).read())
    nodes, depth = [], {}
    for node in design["nodes"]:
        layer = _peer_layer(node, api_git)
        record = {"name": node["name"], "type": node["type"]}
        if layer is not None:
            record.update(cycles=float(layer.latency()), pipeline_depth=float(layer.pipeline_depth()),
                          **{k: float(v) for k, v in layer.resource().items()})
        nodes.append(record)
        # Partition.get_pipeline_depth_fast: a node's depth plus the deepest of its inputs
        known = [depth[i] for i in node["inputs"] if i in depth]
        if layer is not None and (known or node["inputs"] == ["input"]):
            depth[node["name"]] = record["pipeline_depth"] + max(known, default=0)
    complete = all("cycles" in n for n in nodes)
    version = "git source (chisel backend)" if api_git else "0.1.4.2 wheel (hls backend)"
    result = {"peer": f"fpgaconvnet-model {version}", "nodes": nodes,
              # Partition.get_interval: the slowest node's latency (only when every node has a model)
              "interval": max(n["cycles"] for n in nodes) if complete else None,
              "pipeline_depth": depth.get(design["nodes"][-1]["name"]) if complete else None}
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {len(nodes)} nodes ({version}) to {out_path}")


def parse(path):
    """Parse an exported fpgaconvnet.json with the peer's own protobuf (git source): its layers."""
    from google.protobuf import json_format
    from fpgaconvnet.proto import fpgaconvnet_pb2

    message = json_format.Parse(open(path).read(), fpgaconvnet_pb2.partitions())
    layers = [{"name": layer.name, "type": fpgaconvnet_pb2.layer.layer_type.Name(layer.type),
               "op_type": layer.op_type, "inputs": [s.node for s in layer.streams_in],
               "outputs": [s.node for s in layer.streams_out],
               "skip_all_zero_window": bool(layer.parameters.skip_all_zero_window),
               "sparsity": len(layer.parameters.sparsity)}
              for partition in message.partition for layer in partition.layers]
    print(json.dumps({"partitions": len(message.partition), "layers": layers}))


SPARSE_CONVS = [  # (name, H, W, C_in, C_out, K, stride, pad): HASS's sparse engines
    ("resnet18.layer1.conv", 56, 56, 64, 64, 3, 1, 1),
    ("resnet18.layer3.0.conv1", 28, 28, 128, 256, 3, 2, 1),
    ("resnet18.layer4.conv", 7, 7, 512, 512, 3, 1, 1),
    ("vgg16.conv3_2", 56, 56, 256, 256, 3, 1, 1),
    ("resnet18.conv1", 224, 224, 8, 64, 7, 2, 3),  # the stem's 7x7 window, on 8 channels
]


def sparse(out_path, per_layer=6, seed=2):
    """fpgaConvNet's sparse convolution (git source: ConvolutionSparseLayer, HASS's engine) on
    random per-channel histograms of zeros per window (counts of 1,000 windows drawn from a
    Dirichlet-multinomial, so the fixture stores small integers), both zero-window settings. Records the peer's cycles and its workload, the
    number of vector dot products it multiplies the slowest stream's cycles per window by
    (rows_out x cols_out x C/(ci cg) x F/(co g)); only compute-bound records are kept, so that
    cycles = ceil(workload x that stream's expected cycles)."""
    import numpy as np
    from fpgaconvnet.models.layers import ConvolutionSparseLayer

    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    records = []
    for name, h, w, c, f, k, s, p in SPARSE_CONVS:
        options = [(ci, co, fi) for ci in factors(c) for co in factors(f) if co <= f // 4 for fi in range(1, k * k + 1)]
        kept = 0
        for ci, co, fi in rng.sample(options, len(options)):
            if kept == per_layer:
                break
            skew = np_rng.uniform(0.2, 3.0, size=k * k + 1)
            counts = np.stack([np_rng.multinomial(1000, np_rng.dirichlet(skew)) for _ in range(c)])
            zeros = counts / 1000
            skip = bool(rng.random() < 0.75)
            layer = ConvolutionSparseLayer(f, h, w, c, coarse_in=ci, coarse_out=co, kernel_rows=k, kernel_cols=k,
                                           stride_rows=s, stride_cols=s, pad_top=p, pad_bottom=p, pad_left=p,
                                           pad_right=p, fine=fi, channel_sparsity_hist=zeros.flatten().tolist(),
                                           skip_all_zero_window=skip)
            cycles = layer.latency()
            workload = layer.rows_out() * layer.cols_out() * (c / ci) * (f / co)
            data = max(layer.rows_in() * layer.rows_in() * c / ci, layer.rows_out() * layer.rows_out() * f / co)
            if cycles <= data:
                continue
            kept += 1
            records.append({"layer": {"type": "conv", "name": name, "in_shape": [h, w, c], "out_channels": f,
                                      "kernel": k, "stride": s, "padding": p, "groups": 1},
                            "folding": {"coarse_in": ci, "coarse_out": co, "coarse_group": 1, "fine": fi},
                            "skip_all_zero_window": skip, "zero_counts_of_1000": counts.tolist(),
                            "peer": {"cycles": cycles, "workload": workload}})
    meta = {"peer": "fpgaconvnet-model git source (ConvolutionSparseLayer), commit edfbeb6", "records": len(records)}
    with open(out_path, "w") as fh:
        json.dump({"meta": meta, "records": records}, fh)
    print(f"wrote {len(records)} sparse records to {out_path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--parse":
        parse(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "--sparse":
        sparse(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "--network":
        network(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--time-resnet18":
        print(json.dumps({"seconds_per_network": time_resnet18(),
                          "seconds_per_network_update": time_resnet18_update()}))
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/fpgaconvnet_peer.json")
