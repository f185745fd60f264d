"""The two descriptions of an exported accelerator: `accelerator.json` (cooptim's schema) and
`fpgaconvnet.json` (fpgaConvNet's partition layout)."""

from __future__ import annotations

import numpy as np

from cooptim import quantize as q
from cooptim.export.common import SCHEMA_VERSION, c_name


# ------------------------------------------------------------------------------ accelerator.json


def _format(bits, frac) -> dict:
    return {"bits": int(bits), "frac": int(frac)}


def accelerator_config(cfg, net: q.QuantizedNetwork, hardware: dict, arrays: list[dict]) -> dict:
    """accelerator.json; `arrays`: each layer's exported arrays (`_arrays`), for the file names."""
    hw = cfg.hardware
    layers = []
    for layer, layer_arrays in zip(net.layers, arrays):
        cost = hardware["layers"][layer.name]
        entry = {
            "name": layer.name, "c_name": c_name(layer.name), "type": layer.kind,
            "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape),
            "pooled_shape": list(layer.final_shape),
            "kernel": list(layer.kernel), "stride": list(layer.stride), "padding": [list(p) for p in layer.padding],
            "relu": layer.relu, "pool": {"type": layer.pool or "none", "size": layer.pool_size},
            "folding": cost["folding"],
            "sparsity": {"pattern": layer.pattern, **_pattern_params(layer)},
            "formats": {
                "input": _format(layer.in_format.bits, layer.in_format.frac),
                "weight": {"bits": hw.weight_bits, "frac": [int(f) for f in layer.weight_frac]},
                "accumulator": {"bits": layer.acc_bits, "frac": [int(f) for f in layer.acc_frac]},
                "output": _format(layer.out_format.bits, layer.out_format.frac),
            },
            "weights": {"rows": int(layer.weight.shape[0]), "nonzero": int(np.count_nonzero(layer.weight)),
                        "files": sorted(f"weights/{c_name(layer.name)}_{a}.mem" for a in layer_arrays)},
            "expected": {"cycles": cost["cycles"], "dsp": cost["dsp"], "bram18": cost["bram18"]},
        }
        layers.append(entry)
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
        "input": {"shape": list(net.input_shape), "format": _format(net.input_format.bits, net.input_format.frac)},
        "layers": layers,
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


def fpgaconvnet_config(net: q.QuantizedNetwork, config: dict) -> dict:
    """One fpgaConvNet partition (its `partitions` protobuf message, JSON with proto field names).

    Each conv / dense layer -> a CONVOLUTION / INNER_PRODUCT layer with its folding (coarse_in,
    coarse_out, coarse_group, fine) and widths; each ReLU -> RELU; each pooling -> AVERAGE_POOLING
    or POOLING (max). Streams are named `<from>_<to>`. Sparsity has no field in that format: it is
    in accelerator.json.
    """
    arith = config["arithmetic"]
    nodes = []
    for layer, entry in zip(net.layers, config["layers"]):
        fold = entry["folding"]
        shape_in = layer.in_shape if layer.kind == "conv" else (1, 1, layer.in_shape[0])
        shape_out = layer.out_shape if layer.kind == "conv" else (1, 1, layer.out_shape[0])
        base = c_name(layer.name)
        params = {"batch_size": 1, "rows_in": shape_in[0], "cols_in": shape_in[1], "channels_in": shape_in[2],
                  "rows_out": shape_out[0], "cols_out": shape_out[1], "channels_out": shape_out[2],
                  "coarse_in": fold["coarse_in"], "coarse_out": fold["coarse_out"],
                  "coarse_group": fold["coarse_group"], "groups": 1, "fine": fold["fine"],
                  "filters": shape_out[2], "kernel_size": list(layer.kernel), "stride": list(layer.stride),
                  "pad_top": layer.padding[0][0], "pad_bottom": layer.padding[0][1],
                  "pad_left": layer.padding[1][0], "pad_right": layer.padding[1][1],
                  "data_width": arith["data_bits"], "weight_width": arith["weight_bits"],
                  "acc_width": layer.acc_bits, "input_width": layer.in_format.bits,
                  "output_width": layer.out_format.bits, "has_bias": 1, "biases_width": layer.acc_bits}
        if layer.kind == "dense":
            for key in ("kernel_size", "stride", "pad_top", "pad_bottom", "pad_left", "pad_right"):
                params.pop(key)
        nodes.append((base, "CONVOLUTION" if layer.kind == "conv" else "INNER_PRODUCT", params,
                      fold["coarse_in"], fold["coarse_out"]))
        h, w, c = shape_out
        simple = {"batch_size": 1, "rows_in": h, "cols_in": w, "channels_in": c, "coarse": fold["coarse_out"],
                  "data_width": arith["data_bits"]}
        if layer.relu:
            nodes.append((f"{base}_relu", "RELU", {**simple, "rows_out": h, "cols_out": w, "channels_out": c},
                          fold["coarse_out"], fold["coarse_out"]))
        if layer.pool:
            k = layer.pool_size
            pool_params = {**simple, "rows_out": h // k, "cols_out": w // k, "channels_out": c,
                           "kernel_size": [k, k], "stride": [k, k],
                           "pad_top": 0, "pad_bottom": 0, "pad_left": 0, "pad_right": 0}
            nodes.append((f"{base}_pool", "AVERAGE_POOLING" if layer.pool == "avg" else "POOLING", pool_params,
                          fold["coarse_out"], fold["coarse_out"]))
    layers = []
    for i, (name, kind, params, coarse_in, coarse_out) in enumerate(nodes):
        prev = nodes[i - 1][0] if i else None
        nxt = nodes[i + 1][0] if i + 1 < len(nodes) else None
        layers.append({
            "name": name, "type": kind,
            "streams_in": [{"name": f"{prev}_{name}" if prev else "in", "coarse": coarse_in}],
            "streams_out": [{"name": f"{name}_{nxt}" if nxt else "out", "coarse": coarse_out}],
            "parameters": params, "node_in": prev or name, "node_out": nxt or name,
            **({"weights_path": f"weights/{name}_values.mem", "bias_path": f"weights/{name}_bias.mem"}
               if kind in ("CONVOLUTION", "INNER_PRODUCT") else {}),
        })
    return {"partition": [{"id": 0, "ports": 1, "batch_size": 1, "input_node": nodes[0][0],
                           "output_node": nodes[-1][0], "weights_reloading_factor": 1,
                           "weights_reloading_layer": nodes[0][0], "layers": layers}]}
