"""Dense ResNet-18 on a U250: cooptim's dataflow model against fpgaconvnet-model's, node by node.

Three steps, the middle one in the peer's own environments (see benchmarks/peer_fpgaconvnet.py):

    python experiments/resnet18_vs_fpgaconvnet.py design /tmp/r18_design.json
    PEER=benchmarks/peer_fpgaconvnet.py
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python /tmp/peer/bin/python $PEER --network /tmp/r18_design.json /tmp/r18_hls.json
    /tmp/peer-git/bin/python $PEER --network /tmp/r18_design.json /tmp/r18_git.json
    python experiments/resnet18_vs_fpgaconvnet.py merge /tmp/r18_design.json /tmp/r18_hls.json /tmp/r18_git.json \
        tests/fixtures/fpgaconvnet_resnet18_network.json
    python experiments/resnet18_vs_fpgaconvnet.py table tests/fixtures/fpgaconvnet_resnet18_network.json \
        > experiments/resnet18_vs_fpgaconvnet.md

Whether a design fits the device by both models (`dse.greedy`'s `memory` modes):

    python experiments/resnet18_vs_fpgaconvnet.py design /tmp/fit.json u250 on_chip 0.85   # or zcu102 streamed
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python /tmp/peer/bin/python $PEER --network /tmp/fit.json /tmp/fit_hls.json
    python experiments/resnet18_vs_fpgaconvnet.py fit /tmp/fit.json /tmp/fit_hls.json
    python experiments/resnet18_vs_fpgaconvnet.py zoo_row /tmp/fit.json /tmp/fit_hls.json   # one table row

Partitions (`dse.partition`), each checked the same way:

    python experiments/resnet18_vs_fpgaconvnet.py partitions /tmp/p zcu102 streamed resnet50 256
    for f in /tmp/p.*[0-9].json; do
        PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python /tmp/peer/bin/python $PEER --network $f ${f%.json}.hls.json
    done
    python experiments/resnet18_vs_fpgaconvnet.py fit_partitions /tmp/p

experiments/regenerate_device_fit.sh runs all of device_fit.md's cases.

`design` builds the whole graph of ResNet-18 (convs, ReLUs, max pool, forks, adds, global pool,
fc: 56 nodes) at 16-bit data and weights, folds every node with cooptim's greedy DSE on the U250
and writes each node with its folding. `merge` puts both peers' figures beside each node in one
fixture (tests/unit/test_cost_peer.py reads it); `table` evaluates cooptim's model at the fixture's
foldings and writes the comparison, per node type and per node.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

import numpy as np

import cost_models as cm
from cost_models import peer

DEVICE = "u250"
PRECISION = cm.Precision(data_bits=16, weight_bits=16)  # fpgaconvnet-model's default widths


def _node_type(layer) -> str:
    if isinstance(layer, cm.Conv2D):
        return "conv"
    if isinstance(layer, cm.Dense):
        return "dense"
    if isinstance(layer, cm.Pool):
        return "pool"
    if isinstance(layer, cm.GlobalPool):
        return "global_pool"
    if isinstance(layer, cm.Split):
        return "split"
    if isinstance(layer, cm.Elementwise):
        return layer.op if layer.op in ("add", "relu") else "elementwise"
    raise ValueError(f"node {layer.name}: no peer counterpart for {type(layer).__name__}")


def zoo_graph(network: str) -> cm.Graph:
    """The dense graph of a network of cooptim's zoo at 224 x 224 (ResNet-18 from cost_models)."""
    if network == "resnet18":
        return cm.networks.resnet18()
    from cooptim import config as config_lib, nn

    cfg = config_lib.from_dict({"name": network, "model": {"name": network},
                                "sparsity": {"default": {"method": "dense"}}})
    return nn.graph_of(nn.build_model(cfg, (224, 224, 3), 1000), (224, 224, 3))


def design(out_path: str, device_name: str = DEVICE, memory: str = "pooled", limit: str = "1.0",
           network: str = "resnet18", ram: str = "lutram") -> None:
    graph = zoo_graph(network)
    net = cm.Network.build(graph, None, PRECISION)
    device = cm.get_device(device_name)
    best = cm.dse.greedy(net, cm.Density.dense(net), device, memory=memory, limit=float(limit),
                         resources=cm.ResourceParams(ram=ram))
    _write_design(out_path, graph, best, network, device_name, memory, ram, float(limit))


def partitions(out_prefix: str, device_name: str, memory: str, network: str, batch: str = "256",
               limit: str = "1.0") -> None:
    """`dse.partition` of a network: one design file per partition, OUT_PREFIX.N.json, each
    evaluated by the peer and checked by `fit` like a whole design."""
    graph = zoo_graph(network)
    net = cm.Network.build(graph, None, PRECISION)
    device = cm.get_device(device_name)
    result = cm.dse.partition(net, cm.Density.dense(net), device, batch=int(batch), memory=memory,
                              limit=float(limit))
    for n, ((start, stop), best) in enumerate(zip(result.bounds, result.designs)):
        _write_design(f"{out_prefix}.{n}.json", graph.segment(start, stop), best, network, device_name, memory,
                      "lutram", float(limit), partition={"index": n, "of": len(result.bounds), "nodes": [start, stop],
                                                "batch": result.batch, "throughput": result.throughput})
    print(f"{len(result.bounds)} partitions, {result.throughput:.1f} images/s at batch {result.batch}",
          file=sys.stderr)


def _write_design(out_path: str, graph: cm.Graph, best, network: str, device_name: str, memory: str, ram: str,
                  limit: float, partition: dict | None = None) -> None:
    """Every node of `graph` with the folding `best` (a `dse.DSEResult`) gave it, and our totals."""
    nodes = []
    for i, node in enumerate(graph.nodes):
        layer = node.layer
        record = {"name": node.name, "type": _node_type(layer), "inputs": list(node.inputs),
                  "in_shape": list(layer.in_shape) if hasattr(layer, "in_shape") else [1, 1, layer.in_features],
                  "folding": {k: int(np.asarray(v)[i]) for k, v in zip(cm.Folding._fields, best.folding)}}
        if isinstance(layer, (cm.Conv2D, cm.Pool)):
            record.update(kernel=list(layer.kernel), stride=list(layer.stride),
                          padding=[list(p) for p in layer.padding])
        if isinstance(layer, cm.Conv2D):
            record.update(out_channels=layer.out_channels, groups=layer.groups)
        if isinstance(layer, cm.Dense):
            record.update(out_channels=layer.out_features)
        if isinstance(layer, cm.Split):
            record.update(outputs=layer.outputs)
        nodes.append(record)
    cost = best.cost
    ours = {"memory": memory, "ram": ram, "limit": limit, "throughput": float(cost.throughput), "DSP": float(cost.dsp),
            "BRAM": float(cost.bram18), "URAM": float(cost.uram), "LUT": float(cost.lut), "FF": float(cost.ff),
            "streamed_layers": int(np.count_nonzero(np.asarray(best.memory.streamed))) if best.memory else 0,
            "bandwidth_gbps": float(cost.bandwidth_gbps)}
    out = {"network": f"{network} (dense, 224x224, 16-bit)", "device": device_name, "ours": ours, "nodes": nodes,
           **({"partition": partition} if partition else {})}
    with open(out_path, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {len(nodes)} nodes to {out_path}; interval {best.cost.interval:,.0f} cycles", file=sys.stderr)


def fit(design_path: str, hls_path: str) -> str:
    """A design's resources by cooptim's model (its memory plan) and by the hls wheel's for the
    same folding, against the device. The wheel has no URAM and no weight streaming: it counts
    every weight in BRAM, and it has no split, add or global-pool layer (those nodes' logic is
    missing from its sums)."""
    design_ = json.loads(open(design_path).read())
    wheel = json.loads(open(hls_path).read())
    device = cm.get_device(design_["device"])
    ours = design_["ours"]
    modelled = [n for n in wheel["nodes"] if "cycles" in n]
    peer_sum = {r: sum(n[r] for n in modelled) for r in ("DSP", "BRAM", "LUT", "FF")}
    capacity = {"DSP": device.dsp, "BRAM": device.bram18, "URAM": device.uram, "LUT": device.lut, "FF": device.ff}
    lines = [f"Dense {design_['network'].split(' ')[0]} on the {device.name.upper()}, `memory: {ours['memory']}`, "
             f"`ram: {ours.get('ram', 'lutram')}`, every resource "
             f"within {ours['limit']:.0%} of the device by cooptim's model: "
             f"{ours['throughput']:,.0f} images/s by cooptim's model, {ours['streamed_layers']} layers' weights "
             f"partly streamed ({ours['bandwidth_gbps']:.1f} Gbit/s of {device.bandwidth_gbps:g}).", "",
             "| resource | device | cooptim | % | fpgaconvnet-model 0.1.4.2 (hls), same folding | % |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in ("DSP", "BRAM", "URAM", "LUT", "FF"):
        mine, theirs = ours[r], peer_sum.get(r)
        cap = capacity[r]
        pct = (lambda x: f"{100 * x / cap:.0f}%" if cap else ("0%" if not x else "over"))
        lines.append(f"| {r} | {cap:,} | {mine:,.0f} | {pct(mine)} | "
                     + (f"{theirs:,.0f} | {pct(theirs)} |" if theirs is not None else "not modelled | - |"))
    lines.append(f"\nThe wheel evaluated {len(modelled)} of the {len(wheel['nodes'])} nodes.")
    return "\n".join(lines)


def _shares(design_: dict, wheel: dict) -> tuple[str, str, bool, int]:
    """A design's resources as shares of its device, by cooptim's model (DSP / BRAM18 / URAM /
    LUT / FF) and by the wheel's at the same folding (DSP / LUT / FF), as table cells; whether
    both are within the device; how many nodes the wheel modelled."""
    device = cm.get_device(design_["device"])
    ours = design_["ours"]
    capacity = {"DSP": device.dsp, "BRAM": device.bram18, "URAM": device.uram, "LUT": device.lut, "FF": device.ff}
    modelled = [node for node in wheel["nodes"] if "cycles" in node]
    theirs = {r: sum(node[r] for node in modelled) / capacity[r] for r in ("DSP", "LUT", "FF")}
    share = {r: ours[r] / capacity[r] if capacity[r] else (0.0 if not ours[r] else np.inf) for r in capacity}
    within = max(share.values()) <= 1.0 + 1e-9 and max(theirs.values()) <= 1.0 + 1e-9
    return (" / ".join(f"{100 * share[r]:.0f}%" if capacity[r] else "none" for r in capacity),
            " / ".join(f"{100 * theirs[r]:.0f}%" for r in theirs), within, len(modelled))


def zoo_row(design_path: str, hls_path: str) -> str:
    """One row of device_fit.md's zoo table: a whole design's throughput, streamed layers and
    resources as shares of the device, by cooptim's model and by the wheel's for the same folding."""
    design_ = json.loads(open(design_path).read())
    ours = design_["ours"]
    mine, theirs, within, _ = _shares(design_, json.loads(open(hls_path).read()))
    return (f"| {design_['network'].split(' ')[0]} | {design_['device']} | {ours['throughput']:,.0f} | "
            f"{ours['streamed_layers']} ({ours['bandwidth_gbps']:.1f}) | {mine} | {theirs}"
            f" | {'yes (BRAM/URAM: ours only)' if within else 'no'} |")


def fit_partitions(prefix: str) -> str:
    """`fit` for every partition written by `partitions PREFIX ...`, the wheel's figures for
    partition N in PREFIX.N.hls.json: one row per partition, each resource as a share of the
    device by cooptim's model and, where the wheel models it, by the wheel's."""
    rows, n = [], 0
    while True:
        try:
            design_ = json.loads(open(f"{prefix}.{n}.json").read())
        except FileNotFoundError:
            break
        mine, theirs, within, modelled = _shares(design_, json.loads(open(f"{prefix}.{n}.hls.json").read()))
        ours, part = design_["ours"], design_["partition"]
        first, stop = part["nodes"]
        rows.append(f"| {n} | {first}..{stop - 1} ({len(design_['nodes'])}; the wheel {modelled}) | "
                    f"{ours['throughput']:,.0f} | {ours['streamed_layers']} | {mine} | {theirs} | "
                    f"{'yes' if within else 'no'} |")
        n += 1
    if not n:
        raise SystemExit(f"no partition designs {prefix}.0.json ...")
    head = (f"{design_['network'].split(' ')[0]} on the {design_['device'].upper()}, `memory: {ours['memory']}`, "
            f"every resource within {ours['limit']:.0%} of the device by cooptim's model: "
            f"{part['of']} partition{'s' if part['of'] > 1 else ''}, {part['throughput']:.1f} images/s at batch "
            f"{part['batch']} "
            f"(reconfigurations included).\n\n"
            "| partition | nodes (count) | its images/s | streamed layers | cooptim: DSP / BRAM18 / URAM / LUT / FF | "
            "wheel, same folding: DSP / LUT / FF | within the device by both? |\n|---|---|---:|---:|---|---|---|")
    return "\n".join([head, *rows])


def merge(design_path: str, hls_path: str, git_path: str, out_path: str) -> None:
    """One fixture: every node with its folding and the two peers' figures (tests read it)."""
    design_ = json.loads(open(design_path).read())
    peers = {key: json.loads(open(path).read()) for key, path in (("hls", hls_path), ("git", git_path))}
    by_name = {key: {n["name"]: n for n in result["nodes"]} for key, result in peers.items()}
    nodes = []
    for node in design_["nodes"]:
        record = dict(node)
        for key in peers:
            figures = {k: v for k, v in by_name[key][node["name"]].items() if k not in ("name", "type")}
            record[key] = figures or None  # None: this peer has no such layer
        nodes.append(record)
    meta = {"network": design_["network"], "device": design_["device"],
            "hls": peers["hls"]["peer"], "git": peers["git"]["peer"] + ", commit edfbeb6",
            "git_interval": peers["git"]["interval"], "git_pipeline_depth": peers["git"]["pipeline_depth"]}
    with open(out_path, "w") as fh:
        json.dump({"meta": meta, "nodes": nodes}, fh, indent=1)


def ours_at(fixture: dict) -> dict:
    """cooptim's figures for the fixture's network and foldings: per node, and the network's."""
    cost = peer.evaluate_network_fixture(fixture)
    clock = cm.get_device(fixture["meta"]["device"]).clock_mhz * 1e6
    per_node = {"cycles": cost.layer_cycles, "DSP": cost.layer_dsp, "BRAM": cost.layer_bram18,
                "LUT": cost.layer_lut, "FF": cost.layer_ff}
    return {"nodes": [{m: float(v[i]) for m, v in per_node.items()} for i in range(len(fixture["nodes"]))],
            "interval": float(cost.interval), "latency_cycles": float(cost.latency) * clock,
            "DSP": float(cost.dsp)}


def _rel(ours: float, peer: float) -> float:
    return abs(ours - peer) / max(abs(peer), 1.0)


def _agree(values: list[bool]) -> str:
    return f"{sum(values)}/{len(values)}" if values else "no layer"


def table(fixture_path: str) -> str:
    fixture = json.loads(open(fixture_path).read())
    ours = ours_at(fixture)
    nodes, meta = fixture["nodes"], fixture["meta"]
    hls_interval = max(n["hls"]["cycles"] for n in nodes if n["hls"])
    lines = [
        "# Dense ResNet-18: cooptim's dataflow model against fpgaconvnet-model",
        "",
        "Made by the commands in the docstring of `experiments/resnet18_vs_fpgaconvnet.py`. The "
        "network is ResNet-18's whole graph (56 nodes) at 224x224, 16-bit data and weights, every "
        f"node folded by cooptim's greedy DSE on the {meta['device'].upper()}. The peer evaluates each "
        "node with that folding through its own layer models and composes them as its `Partition` "
        "does (interval: the slowest node; latency: interval + the longest path's pipeline depth). "
        f"Two versions of the peer: **hls** = {meta['hls']} (the version cooptim's per-layer fixture, "
        f"`tests/fixtures/fpgaconvnet_peer.json`, matches), **git** = {meta['git']} (the current "
        "model; the only one with eltwise, split and global-pooling layers).",
        "",
        "## The network",
        "",
        "| | cooptim | peer (hls) | peer (git) |",
        "|---|---:|---:|---:|",
        f"| interval (cycles per image) | {ours['interval']:,.0f} | {hls_interval:,.0f} (its nodes) | "
        f"{meta['git_interval']:,.0f} |",
        f"| latency, batch 1 (cycles) | {ours['latency_cycles']:,.0f} | - | "
        f"{meta['git_interval'] + meta['git_pipeline_depth']:,.0f} |",
        f"| DSP | {ours['DSP']:,.0f} | {sum(n['hls']['DSP'] for n in nodes if n['hls']):,.0f} (its nodes) | "
        f"{sum(n['git']['DSP'] for n in nodes):,.0f} |",
        "",
        "## Agreement per node type",
        "",
        "Equal means equal to 1e-9 relative; BRAM18 and LUT are median relative errors.",
        "",
        "| type | nodes | cycles = hls | cycles = git | max cycles error vs git | DSP = hls | DSP = git "
        "| BRAM18 vs hls | BRAM18 vs git | LUT vs hls | LUT vs git |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_type = defaultdict(list)
    for node, mine in zip(nodes, ours["nodes"]):
        by_type[node["type"]].append((node, mine))

    def equal(mine, peer, metric):
        return abs(mine[metric] - peer[metric]) <= 1e-9 * max(abs(peer[metric]), 1.0)

    def median(pairs, key, metric):
        errors = [_rel(m[metric], n[key][metric]) for n, m in pairs if n[key]]
        return f"{statistics.median(errors):.2f}" if errors else "-"

    for kind, pairs in by_type.items():
        cells = [kind, str(len(pairs))]
        cells.append(_agree([equal(m, n["hls"], "cycles") for n, m in pairs if n["hls"]]))
        cells.append(_agree([equal(m, n["git"], "cycles") for n, m in pairs]))
        cells.append(f"{max(_rel(m['cycles'], n['git']['cycles']) for n, m in pairs):.3f}")
        cells.append(_agree([equal(m, n["hls"], "DSP") for n, m in pairs if n["hls"]]))
        cells.append(_agree([equal(m, n["git"], "DSP") for n, m in pairs]))
        cells += [median(pairs, "hls", "BRAM"), median(pairs, "git", "BRAM"), median(pairs, "hls", "LUT"),
                  median(pairs, "git", "LUT")]
        lines.append("| " + " | ".join(cells) + " |")
    by_name = {n["name"]: (n, m) for n, m in zip(nodes, ours["nodes"])}
    conv, conv_mine = by_name["layer1.0.conv1"]
    pool, pool_mine = by_name["avgpool"]
    add_bram = [m["BRAM"] for n, m in by_type["add"]]
    lines += [
        "",
        "## Reading it",
        "",
        "- Convolution cycles equal the hls wheel's on all 20 convs (as on the 393 layers of the "
        "per-layer fixture). The current git model counts one window per output position, Ho x Wo; "
        "the wheel, and cooptim, count the windows the sliding window walks over the padded input, "
        "((Ho-1)S+K)^2/S^2. They agree on the unpadded 1x1 convs and the fc, and differ most on the "
        "7x7 maps (9^2/7^2 = 1.65). We have not measured which of the two a board follows; the "
        "fixture's move to the git source is in the cost-fidelity issue.",
        "- ReLU, split and add cycles equal the git model's; the max pool's equal the wheel's, which "
        "walks only the rows and columns its windows touch, as for its convs (the git model's max pool "
        "walks one row and column more). The global pool is the one deliberate difference: the git model's "
        f"latency is C / coarse ({pool['git']['cycles']:,.0f} cycles) and it counts reading the "
        "7x7xC input as pipeline depth; cooptim counts that read in the interval "
        f"({pool_mine['cycles']:,.0f} cycles), the rate at which a streaming engine can take its input.",
        "- DSP equal the hls wheel's on every node it has. The chisel backend puts the accumulators in "
        f"logic, not DSPs (layer1.0.conv1: {conv['git']['DSP']:,.0f} against {conv_mine['DSP']:,.0f}).",
        "- The interval follows: cooptim's equals the wheel's over the nodes the wheel has; the git "
        "model's is lower because of its lower conv cycles (its bottleneck is the max pool).",
        "- Latency: the peer adds each node's own pipeline depth at the node's own rate to one "
        "interval; cooptim multiplies each node's fill fraction by the network interval (a node "
        "downstream of the bottleneck receives its input at the bottleneck's rate) and counts the "
        "global pool and the fc, which need their whole input, as a full interval each. Neither is "
        "measured here; cooptim's is the pessimistic one.",
        f"- BRAM18: each residual add holds its skip FIFO ({min(add_bram):.0f}-{max(add_bram):.0f} BRAM18 "
        "here); fpgaConvNet sizes those buffers in its hardware generator, not in its model, so both "
        "peers count none. The peer's two backends differ by 5x in conv LUTs "
        f"(layer1.0.conv1: hls {conv['hls']['LUT']:,.0f}, chisel {conv['git']['LUT']:,.0f}); cooptim's "
        "LUT model is fitted to the hls backend.",
    ]
    lines += ["", "## Every node", "",
              "| node | type | ci/co/cg/fine | cycles: ours | hls | git | DSP: ours | hls | git "
              "| BRAM18: ours | hls | git |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(figures, metric):
        return f"{figures[metric]:,.0f}" if figures else "-"

    for node, mine in zip(nodes, ours["nodes"]):
        f = node["folding"]
        lines.append(f"| {node['name']} | {node['type']} | {f['coarse_in']}/{f['coarse_out']}/"
                     f"{f['coarse_group']}/{f['fine']} | " + " | ".join(
                         cell(src, metric) for metric in ("cycles", "DSP", "BRAM")
                         for src in (mine, node["hls"], node["git"])) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) in (3, 5, 6, 7, 8) and sys.argv[1] == "design":
        design(*sys.argv[2:])  # OUT [DEVICE MEMORY [LIMIT [NETWORK [RAM]]]]
    elif len(sys.argv) in (6, 7, 8) and sys.argv[1] == "partitions":
        partitions(*sys.argv[2:])  # OUT_PREFIX DEVICE MEMORY NETWORK [BATCH [LIMIT]]
    elif len(sys.argv) == 4 and sys.argv[1] == "fit":
        print(fit(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "zoo_row":
        print(zoo_row(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "fit_partitions":
        print(fit_partitions(sys.argv[2]))
    elif len(sys.argv) == 6 and sys.argv[1] == "merge":
        merge(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        print(table(sys.argv[2]), end="")
    else:
        sys.exit(__doc__)
