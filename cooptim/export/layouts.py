"""The two descriptions of an exported accelerator: `accelerator.json` (cooptim's schema: the
graph's nodes and edges) and `fpgaconvnet.json` (fpgaConvNet's partition layout)."""

from __future__ import annotations

import math

import numpy as np

from cooptim import quantize as q
from cooptim.export.common import SCHEMA_VERSION, c_name
from cost_models.graph import INPUT

WEIGHTED = ("conv", "dense")


def _format(fmt) -> dict:
    return {"bits": int(fmt.bits), "frac": int(fmt.frac)}


def edges_of(net: q.QuantizedGraph, skip_buffers: dict) -> list[dict]:
    """Every stream of the graph, in its readers' order: {from, to, port, shape, format,
    buffer_words}. `skip_buffers`: {merge node: (short input, words)}; that edge's FIFO holds
    `buffer_words` values (0 elsewhere: a stream needs no buffer beyond its handshake)."""
    edges = []
    for node in net.nodes:
        for port, source in enumerate(node.inputs):
            buffer = skip_buffers.get(node.name)
            edges.append({"from": source, "to": node.name, "port": port, "shape": list(net.shape(source)),
                          "format": _format(net.format(source)),
                          "buffer_words": int(buffer[1]) if buffer and buffer[0] == source else 0})
    return edges


# ------------------------------------------------------------------------------ accelerator.json


def _weighted(node: q.QuantNode, hw, files: list[str]) -> dict:
    layer = node.layer
    return {
        "kernel": list(layer.kernel), "stride": list(layer.stride), "padding": [list(p) for p in layer.padding],
        "groups": layer.groups, "relu": layer.relu,
        "sparsity": {"pattern": layer.pattern, **_pattern_params(layer)},
        "formats": {
            "input": _format(layer.in_format),
            "weight": {"bits": hw.weight_bits, "frac": [int(f) for f in layer.weight_frac]},
            "accumulator": {"bits": layer.acc_bits, "frac": [int(f) for f in layer.acc_frac]},
            "output": _format(layer.out_format),
        },
        "weights": {"rows": int(layer.weight.shape[0]), "nonzero": int(np.count_nonzero(layer.weight)),
                    "files": files},
    }


def _node_entry(net: q.QuantizedGraph, node: q.QuantNode, cost: dict, hw, arrays: dict) -> dict:
    entry = {"name": node.name, "c_name": c_name(node.name), "op": node.op, "inputs": list(node.inputs),
             "in_shapes": [list(net.shape(i)) for i in node.inputs], "out_shape": list(node.out_shape),
             "format": _format(node.out_format), "folding": cost["folding"],
             "expected": {"cycles": cost["cycles"], "dsp": cost["dsp"], "bram18": cost["bram18"]}}
    if "weights_memory" in cost:  # the DSE's memory plan (hardware.memory: on_chip or streamed)
        entry["weights_memory"] = cost["weights_memory"]
    if node.op in WEIGHTED:
        entry["layer"] = _weighted(node, hw, sorted(f"weights/{c_name(node.name)}_{a}.mem" for a in arrays))
    elif node.op in ("max_pool", "avg_pool"):
        entry["window"] = {"size": node.window, "stride": node.stride, "padding": node.padding}
    elif node.op == "subsample":
        entry["subsample"] = {"stride": node.stride, "pad_channels": node.pad_channels}
    return entry


def accelerator_config(cfg, net: q.QuantizedGraph, hardware: dict, arrays: dict[str, dict]) -> dict:
    """accelerator.json; `hardware`: the DSE's per-node cost and folding (`export._hardware`);
    `arrays`: each weighted node's exported arrays (`cfiles._arrays`), for the file names."""
    hw = cfg.hardware
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": "cooptim",
        "run": cfg.name,
        "model": cfg.model.name,
        "device": hardware["device"],
        "clock_mhz": hardware["clock_mhz"],
        "accelerator": hw.accelerator,
        "arithmetic": {"data_bits": hw.data_bits, "weight_bits": hw.weight_bits, "acc_bits": hw.acc_bits,
                       "rounding": hw.rounding, "overflow": "saturate", "weight_scale": hw.weight_scale},
        "input": {"name": INPUT, "shape": list(net.input_shape), "format": _format(net.input_format)},
        "output": net.output.name,
        "nodes": [_node_entry(net, node, hardware["nodes"][node.name], hw, arrays.get(node.name, {}))
                  for node in net.nodes],
        "edges": edges_of(net, hardware["skip_buffers"]),
        "pipeline": hardware["pipeline"],
    }


def _pattern_params(layer: q.QuantLayer) -> dict:
    p = layer.params
    if layer.pattern in ("nm", "balanced_group"):
        return {"n": p["n"], "m": p["m"]}
    if layer.pattern == "csp":
        return {"chunk": p["chunk"], "density": float(np.sum(layer.lengths) * p["chunk"] / layer.weight.size)}
    if layer.pattern == "dynamic":
        return {"channel_group": p["channel_group"], "spatial_gate": p["spatial"], "channel_gate": p["channel"]}
    if layer.pattern == "unstructured":
        return {"activation_threshold": layer.activation_threshold,
                "density": float(np.count_nonzero(layer.weight) / layer.weight.size)}
    return {}


# ------------------------------------------------------------------------------ fpgaconvnet.json

# cooptim op -> (fpgaConvNet layer type, op_type), after fpgaconvnet-model's
# `tools/layer_enum.to_proto_layer_type` and `models/network/represent.save_all_partitions`.
# ReLU6 and the option-A shortcut's subsampling have no fpgaConvNet layer: they are written as
# ACTIVATION "relu6" and POOLING "subsample" (1 x 1 window, zero channels appended), which
# fpgaConvNet's own builders do not read.
FPGACONVNET_TYPES = {
    "conv": ("CONVOLUTION", "dense"), "dense": ("INNER_PRODUCT", None), "relu": ("RELU", "ReLU"),
    "fused_relu": ("RELU", "ReLU"), "relu6": ("ACTIVATION", "relu6"), "max_pool": ("POOLING", "max"),
    "avg_pool": ("POOLING", "avg"), "global_pool": ("AVERAGE_POOLING", "avg"), "add": ("ELTWISE", "add"),
    "split": ("SPLIT", None), "subsample": ("POOLING", "subsample"),
}


def _hw(shape) -> tuple[int, int, int]:
    return (1, 1, shape[0]) if len(shape) == 1 else tuple(shape)


def _fixed(bits: int, frac: int) -> dict:
    """fpgaConvNet's `fixed_point`: width and binary point (the fractional bits)."""
    return {"width": int(bits), "binary_point": int(frac)}


def window_zero_histogram(layer: q.QuantLayer, x: np.ndarray) -> np.ndarray:
    """(C_in, K_h K_w + 1): per input channel, the fraction of the layer's windows (over the images
    `x`, after its activation threshold, padding included) holding 0, 1, ..., K_h K_w zeros; the
    `channel_sparsity_hist` of fpgaConvNet's sparse convolution (HASS)."""
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = layer.kernel, layer.stride, layer.padding
    x = np.asarray(x, np.int64)
    if layer.activation_threshold > 0:
        x = np.where(np.abs(x) > layer.activation_threshold, x, 0)
    padded = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded == 0, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    zeros = windows.sum(axis=(-2, -1)).reshape(-1, x.shape[-1])  # (windows, C_in)
    return np.stack([np.bincount(z, minlength=kh * kw + 1) / len(z) for z in zeros.T])


def mean_zero_fraction(histogram: np.ndarray) -> float:
    """The mean fraction of a window's values that are zero, over the channels of a
    `window_zero_histogram` (row c: the fraction of windows with 0..K^2 zeros)."""
    return float((histogram @ np.arange(histogram.shape[1])).mean() / (histogram.shape[1] - 1))


def _parameters(net: q.QuantizedGraph, node: q.QuantNode, entry: dict, arith: dict, histogram) -> dict:
    fold = entry["folding"]
    (h_in, w_in, c_in), (h, w, c) = _hw(net.shape(node.inputs[0])), _hw(node.out_shape)
    params = {"batch_size": 1, "rows_in": h_in, "cols_in": w_in, "channels_in": c_in,
              "rows_out": h, "cols_out": w, "channels_out": c}
    data_t = _fixed(node.out_format.bits, node.out_format.frac)
    if node.op in WEIGHTED:
        layer = node.layer
        params.update(coarse_in=fold["coarse_in"], coarse_out=fold["coarse_out"], filters=c, has_bias=1,
                      input_t=_fixed(layer.in_format.bits, layer.in_format.frac), output_t=data_t,
                      weight_t=_fixed(arith["weight_bits"], int(layer.weight_frac.min())),
                      acc_t=_fixed(layer.acc_bits, int(layer.acc_frac.min())), use_uram=False, stream_weights=0)
        if node.op == "conv":
            (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = layer.kernel, layer.stride, layer.padding
            params.update(groups=layer.groups, coarse_group=fold["coarse_group"], fine=fold["fine"],
                          kernel_size=[kh, kw], kernel_rows=kh, kernel_cols=kw, stride=[sh, sw], stride_rows=sh,
                          stride_cols=sw, pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr)
            if histogram is not None:
                params.update(sparsity=[float(v) for v in histogram.reshape(-1)], skip_all_zero_window=True)
        return params
    coarse = fold["coarse_out"]
    params.update(coarse=coarse, coarse_in=fold["coarse_in"], coarse_out=coarse, data_t=data_t)
    if node.op in ("max_pool", "avg_pool", "subsample"):
        k = node.window if node.op != "subsample" else 1
        p = node.padding
        params.update(kernel_size=[k, k], kernel_rows=k, kernel_cols=k, stride=[node.stride] * 2,
                      stride_rows=node.stride, stride_cols=node.stride, pad_top=p, pad_bottom=p, pad_left=p,
                      pad_right=p)
    elif node.op == "global_pool":
        params["acc_t"] = _fixed(32, node.out_format.frac)
    elif node.op == "add":
        params.update(ports_in=len(node.inputs), acc_t=_fixed(arith["data_bits"] + 1, node.out_format.frac))
    elif node.op == "split":
        params["ports_out"] = len(net.readers(node.name))
    return params


def fpgaconvnet_config(net: q.QuantizedGraph, config: dict, histograms: dict[str, np.ndarray]) -> dict:
    """One fpgaConvNet partition in the layout of the current fpgaconvnet-model (its
    `partitions` protobuf message as JSON with proto field names): every node a layer (see
    FPGACONVNET_TYPES), streams named `FROM_TO` with the reading node in `node` ("in" / "out" at
    the ends), the skip buffers as the merge's `buffer_depth` (words per stream), and for
    unstructured (HASS) convs the measured `sparsity` histogram with `skip_all_zero_window`."""
    arith, entries = config["arithmetic"], {e["name"]: e for e in config["nodes"]}
    buffers = {(e["from"], e["to"]): e["buffer_words"] for e in config["edges"]}
    layers = []
    for node in net.nodes:
        entry, kind = entries[node.name], FPGACONVNET_TYPES[node.op]
        fold = entry["folding"]
        readers = net.readers(node.name)
        streams_in = []
        for source in node.inputs:
            depth = buffers[(source, node.name)]
            streams_in.append({"name": "in" if source == INPUT else f"{source}_{node.name}",
                               "coarse": fold["coarse_in"], "node": node.name if source == INPUT else source,
                               "buffer_depth": max(2, math.ceil(depth / fold["coarse_in"]))})
        streams_out = [{"name": f"{node.name}_{r}", "coarse": fold["coarse_out"], "node": r, "buffer_depth": 2}
                       for r in readers] or [{"name": "out", "coarse": fold["coarse_out"], "node": node.name,
                                              "buffer_depth": 2}]
        op_type = "sparse" if node.name in histograms else kind[1]
        layer = {"name": node.name, "onnx_node": node.name, "type": kind[0],
                 **({"op_type": op_type} if op_type else {}),
                 "streams_in": streams_in, "streams_out": streams_out,
                 "parameters": _parameters(net, node, entry, arith, histograms.get(node.name))}
        if node.op in WEIGHTED:
            layer["weights_path"] = f"weights/{c_name(node.name)}_values.mem"
            layer["bias_path"] = f"weights/{c_name(node.name)}_bias.mem"
        layers.append(layer)
    return {"partition": [{"id": 0, "ports": 1, "batch_size": 1, "input_nodes": [INPUT],
                           "output_nodes": [net.output.name], "weights_reloading_factor": 1,
                           "weights_reloading_layer": "None", "layers": layers}]}
