"""Hardware parameter files for synthesis: `python -m cooptim.export RUN_DIR --out DIR`.

`export(run_dir, out)` quantizes the run's trained network (`cooptim.quantize`), fixes its integer
folding for the configured device (`cost_models.dse.greedy`), and writes one folder, atomically
(everything goes to a temporary sibling folder that is renamed at the end, so a failure leaves no
partial output):

  accelerator.json   the accelerator: device, clock, formats, per-layer shapes, folding, sparsity
                     pattern, fixed-point formats, expected cycles and resources; validated against
                     the shipped JSON Schema (`schema.json`, `SCHEMA_VERSION`)
  fpgaconvnet.json   the network and folding in fpgaConvNet's partition layout (`fpgaconvnet_config`)
  params.h           C++17 constexpr parameters, per layer and as a table for the reference
  weights/           per layer `NAME.h` (constexpr arrays) and `NAME_<array>.mem` (hex, one word per line)
  testbench/         int8 input vectors, the expected output of every layer and the final logits
  README.md          what each file is, the layouts and formats, and how to run the C++ check

`reference_dir()` is the small C++17 reference (`reference/reference.cpp`) that reads only these
files; `build_reference(out)` compiles it with g++ and `run_reference(out)` checks the test vectors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np

import cost_models as cm
from cooptim import nn
from cooptim import quantize as q
from cooptim.config import ConfigError
from cooptim.data import eval_batches
from cooptim.emulate import load_quantized
from cooptim.export.readme import folder_readme
from cooptim.hardware import cost_summary, densities_of, device_of, folding_by_layer, network_of
from cooptim.run import RunError
from kernels import nm as nm_kernels

SCHEMA_VERSION = "1.0"


class ExportError(RuntimeError):
    """An export that cannot be written (names the run folder, the output folder or the layer)."""


def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("schema.json").read_text())


def reference_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath("reference")))


def c_name(name: str) -> str:
    """A layer name as a C identifier and file stem: 'stage1.block2.conv1' -> 'stage1_block2_conv1'."""
    return re.sub(r"\W", "_", name)


# ------------------------------------------------------------------------------ hardware cost


def _hardware(cfg, model, dataset) -> dict:
    """Integer folding and per-layer cost of the trained network on the configured device."""
    descriptions = nn.describe(model, dataset.image_shape)
    gates = nn.measure_gates(model, (x for x, _ in eval_batches(dataset.test, cfg.data.eval_batch_size)))
    net = network_of(model, descriptions, cfg.hardware)
    device = device_of(cfg.hardware)
    result = cm.dse.greedy(net, densities_of(model, net.names, gates), device)
    summary, folding = cost_summary(result.cost), folding_by_layer(net, result.folding)
    layer_dsp, layer_bram18 = np.asarray(result.cost.layer_dsp), np.asarray(result.cost.layer_bram18)
    layers = {name: {"folding": folding[name], "cycles": summary["layer_cycles"][i],
                     "dsp": float(layer_dsp[i]), "bram18": float(layer_bram18[i])}
              for i, name in enumerate(net.names)}
    bottleneck = net.names[int(np.argmax(summary["layer_cycles"]))]
    pipeline = {"throughput": summary["throughput"], "latency_s": summary["latency_s"], "bottleneck": bottleneck,
                **{k: summary[k] for k in ("dsp", "bram18", "lut", "ff", "energy_j", "utilisation")}}
    return {"device": device.name, "clock_mhz": float(device.clock_mhz), "layers": layers, "pipeline": pipeline}


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


# ------------------------------------------------------------------------------ weight arrays


def _arrays(layer: q.QuantLayer) -> dict[str, tuple[np.ndarray, str]]:
    """The layer's arrays in their exported layout: name -> (flat values, C type)."""
    w = layer.weight
    arrays = {"bias": (layer.bias.astype(np.int64), "int32_t"),
              "weight_frac": (layer.weight_frac.astype(np.int64), "int32_t")}
    if layer.pattern in ("nm", "balanced_group"):
        values, indices = nm_kernels.compress(w, layer.params["n"], layer.params["m"])
        arrays["values"] = (np.asarray(values).reshape(-1), "int8_t")
        arrays["indices"] = (np.asarray(indices).reshape(-1), "uint8_t")
    elif layer.pattern == "csp":
        chunk = layer.params["chunk"]
        arrays["values"] = (np.concatenate([w[k, :length * chunk] for k, length in enumerate(layer.lengths)]
                                           + [np.zeros(0, np.int8)]), "int8_t")
        arrays["lengths"] = (layer.lengths.astype(np.int64), "uint8_t")
    else:
        arrays["values"] = (w.reshape(-1), "int8_t")
    if layer.gate is not None:
        g = layer.gate
        if g.spatial_weight is not None:
            arrays["spatial_gate"] = (g.spatial_weight.reshape(-1), "int8_t")
        if g.channel_weight is not None:
            arrays["channel_gate"] = (g.channel_weight.reshape(-1), "int8_t")
            arrays["channel_gate_bias"] = (g.channel_bias.astype(np.int64), "int32_t")
    for array, (values, ctype) in arrays.items():
        bits = _WIDTH[ctype]
        lo, hi = (0, 2**bits - 1) if ctype.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if values.size and (values.min() < lo or values.max() > hi):
            raise ExportError(f"layer {layer.name!r}: its {array} values span {values.min()}..{values.max()}, "
                              f"outside {ctype}")
    return arrays


_WIDTH = {"int8_t": 8, "uint8_t": 8, "int32_t": 32}


def _mem(values: np.ndarray, ctype: str) -> str:
    """One two's-complement hex word per line ($readmemh)."""
    bits = _WIDTH[ctype]
    digits = bits // 4
    mask = (1 << bits) - 1
    return "".join(f"{int(v) & mask:0{digits}x}\n" for v in np.asarray(values).reshape(-1))


def _c_array(name: str, values: np.ndarray, ctype: str) -> str:
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    if not flat:
        return f"constexpr {ctype} {name}[1] = {{0}};  // empty (no entries)\n"
    return f"constexpr {ctype} {name}[{len(flat)}] = {{\n{_wrap(', '.join(map(str, flat)))}\n}};\n"


def _wrap(body: str, width: int = 100) -> str:
    out, line = [], ""
    for token in body.split(", "):
        if len(line) + len(token) + 2 > width:
            out.append("    " + line.rstrip())
            line = ""
        line += token + ", "
    out.append("    " + line.rstrip().rstrip(","))
    return "\n".join(out)


def _layer_header(layer: q.QuantLayer, arrays: dict) -> str:
    name = c_name(layer.name)
    text = [f"// {layer.name}: {layer.pattern} weights in the layout of README.md. Generated by cooptim.export.",
            "#pragma once", "#include <cstdint>", "", f"namespace cooptim::weights::{name} {{", ""]
    for array, (values, ctype) in arrays.items():
        text.append(_c_array(f"k_{array}", values, ctype))
    text.append(f"}}  // namespace cooptim::weights::{name}\n")
    return "\n".join(text)


def _weights_table(net: q.QuantizedNetwork, all_arrays: list[dict]) -> str:
    text = ["// Pointers to every layer's arrays, in layer order (the reference reads this table).",
            "// Generated by cooptim.export.", "#pragma once", "#include <cstdint>", ""]
    for layer in net.layers:
        text.append(f'#include "{c_name(layer.name)}.h"')
    text += ["", "namespace cooptim {", "",
             "struct LayerData {",
             "  const int8_t* values;",
             "  const uint8_t* indices;            // N:M / balanced-group only",
             "  const uint8_t* lengths;            // CSP only",
             "  const int32_t* bias;",
             "  const int32_t* weight_frac;",
             "  const int8_t* spatial_gate;        // dynamic only",
             "  const int8_t* channel_gate;        // dynamic only",
             "  const int32_t* channel_gate_bias;  // dynamic only",
             "};", "",
             f"constexpr LayerData kLayerData[{len(net.layers)}] = {{"]
    for layer, arrays in zip(net.layers, all_arrays):
        ns = f"weights::{c_name(layer.name)}::k_"
        ref = lambda a: f"{ns}{a}" if a in arrays else "nullptr"
        text.append(f"    {{{ref('values')}, {ref('indices')}, {ref('lengths')}, {ref('bias')}, {ref('weight_frac')}, "
                    f"{ref('spatial_gate')}, {ref('channel_gate')}, {ref('channel_gate_bias')}}},")
    text += ["};", "", "}  // namespace cooptim", ""]
    return "\n".join(text)


# ------------------------------------------------------------------------------ params.h


_PATTERN_ENUM = {"dense": "kDense", "unstructured": "kUnstructured", "nm": "kNM",
                 "balanced_group": "kBalancedGroup", "csp": "kCSP", "dynamic": "kDynamic"}
_ROUNDING_ENUM = {"half_up": "kHalfUp", "half_even": "kHalfEven", "floor": "kFloor"}


def _layer_values(layer: q.QuantLayer, config: dict) -> dict:
    if layer.kind == "conv":
        (in_h, in_w, in_c), (out_h, out_w, out_c) = layer.in_shape, layer.out_shape
    else:
        in_h = in_w = out_h = out_w = 1
        in_c, out_c = layer.in_shape[0], layer.out_shape[0]
    p, g = layer.params, layer.gate
    folding = config["folding"]
    return {
        "in_h": in_h, "in_w": in_w, "in_c": in_c, "out_h": out_h, "out_w": out_w, "out_c": out_c,
        "kernel_h": layer.kernel[0], "kernel_w": layer.kernel[1],
        "stride_h": layer.stride[0], "stride_w": layer.stride[1],
        "pad_top": layer.padding[0][0], "pad_bottom": layer.padding[0][1],
        "pad_left": layer.padding[1][0], "pad_right": layer.padding[1][1],
        "n": p.get("n", 0), "m": p.get("m", 0), "chunk": p.get("chunk", 0),
        "channel_group": g.group if g else 0,
        "spatial_gate": int(bool(g is not None and g.spatial_weight is not None)),
        "channel_gate": int(bool(g is not None and g.channel_weight is not None)),
        "spatial_gate_bias": g.spatial_bias if g else 0,
        "activation_threshold": layer.activation_threshold,
        "in_frac": layer.in_format.frac, "out_bits": layer.out_format.bits, "out_frac": layer.out_format.frac,
        "acc_bits": layer.acc_bits, "relu": int(layer.relu), "pool_size": layer.pool_size,
        "coarse_in": folding["coarse_in"], "coarse_out": folding["coarse_out"], "fine": folding["fine"],
        "expected_cycles": int(round(config["expected"]["cycles"])),
    }


_FIELDS = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "kernel_h", "kernel_w", "stride_h", "stride_w",
           "pad_top", "pad_bottom", "pad_left", "pad_right", "n", "m", "chunk", "channel_group", "spatial_gate",
           "channel_gate", "spatial_gate_bias", "activation_threshold", "in_frac", "out_bits", "out_frac",
           "acc_bits", "relu", "pool_size", "coarse_in", "coarse_out", "fine", "expected_cycles")


def params_header(net: q.QuantizedNetwork, config: dict) -> str:
    h, w, c = net.input_shape
    lines = [f"// Accelerator parameters of run '{config['run']}' ({config['model']}) for the {config['device']} "
             f"at {config['clock_mhz']:g} MHz.",
             f"// Generated by cooptim.export, accelerator.json schema {SCHEMA_VERSION}. Formats: an integer q "
             "of a format with frac f is q * 2^-f.",
             "#pragma once", "#include <cstdint>", "", "namespace cooptim {", "",
             "enum class Kind { kConv, kDense };",
             "enum class Pattern { kDense, kUnstructured, kNM, kBalancedGroup, kCSP, kDynamic };",
             "enum class Pool { kNone, kAvg, kMax };",
             "enum class Rounding { kHalfUp, kHalfEven, kFloor };", "",
             "struct LayerParams {", "  const char* name;", "  Kind kind;", "  Pattern pattern;", "  Pool pool;"]
    lines += [f"  int64_t {f};" for f in _FIELDS]
    lines += ["};", "",
              f"constexpr Rounding kRounding = Rounding::{_ROUNDING_ENUM[config['arithmetic']['rounding']]};",
              f"constexpr int kInputH = {h}, kInputW = {w}, kInputC = {c};",
              f"constexpr int kInputBits = {net.input_format.bits}, kInputFrac = {net.input_format.frac};",
              f"constexpr int kNumLayers = {len(net.layers)};",
              f"constexpr int kNumClasses = {net.layers[-1].out_shape[-1]};",
              f"constexpr double kClockMHz = {config['clock_mhz']:g};",
              f"constexpr double kExpectedThroughput = {config['pipeline']['throughput']:.6g};  // images/s", ""]
    table = []
    for layer, entry in zip(net.layers, config["layers"]):
        values = _layer_values(layer, entry)
        name = c_name(layer.name)
        lines.append(f"namespace {name} {{  // {layer.name}: {layer.kind}, {layer.pattern}")
        for f in _FIELDS:
            camel = "k" + "".join(part.capitalize() for part in f.split("_"))
            lines.append(f"constexpr int64_t {camel} = {values[f]};")
        lines.append(f"}}  // namespace {name}\n")
        pool = {"avg": "Pool::kAvg", "max": "Pool::kMax", None: "Pool::kNone"}[layer.pool]
        kind = "Kind::kConv" if layer.kind == "conv" else "Kind::kDense"
        table.append(f'    {{"{name}", {kind}, Pattern::{_PATTERN_ENUM[layer.pattern]}, {pool}, '
                     + ", ".join(str(values[f]) for f in _FIELDS) + "},")
    lines += [f"constexpr LayerParams kLayers[kNumLayers] = {{"] + table + ["};", "", "}  // namespace cooptim", ""]
    return "\n".join(lines)


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


# ------------------------------------------------------------------------------ test vectors


def saturation_vector(net: q.QuantizedNetwork) -> np.ndarray:
    """An input chosen to overflow the accumulators: among all-max, all-min, checkerboards and the
    first layer's weight signs at full scale, the one that saturates the most accumulator values."""
    fmt = net.input_format
    h, w, c = net.input_shape
    lo, hi = fmt.min_int, fmt.max_int
    board = (np.indices((h, w)).sum(0) % 2).astype(bool)[..., None].repeat(c, -1)
    first = net.layers[0]
    candidates = [np.full((h, w, c), hi), np.full((h, w, c), lo), np.where(board, hi, lo), np.where(board, lo, hi)]
    if first.kind == "conv":
        # the sign pattern of one output channel's kernel, tiled at the kernel's period, so that every
        # window aligned with the tiling reaches that channel's largest possible sum
        strongest = np.argsort(-np.abs(first.weight.astype(np.int64)).sum(axis=0))[:4]
        for channel in strongest:
            signs = np.sign(first.weight[:, channel].astype(np.int64)).reshape(*first.kernel, c)
            tiled = np.tile(signs, (h // first.kernel[0] + 1, w // first.kernel[1] + 1, 1))[:h, :w]
            candidates += [np.where(tiled >= 0, hi, lo), np.where(tiled >= 0, lo, hi)]
    batch = np.stack(candidates).astype(np.int8)
    per_vector = [sum(t["saturated"] for t in net.forward(v[None])[1]) for v in batch]
    return batch[int(np.argmax(per_vector))]


def test_vectors(net: q.QuantizedNetwork, images: np.ndarray) -> tuple[np.ndarray, list]:
    """(B, H, W, C) int8 inputs: the saturation vector first, then `images` quantized; and the trace."""
    x = np.concatenate([saturation_vector(net)[None], net.quantize_input(images)]).astype(np.int8)
    _, trace = net.forward(x)
    return x, trace


# ------------------------------------------------------------------------------ the folder


def export(run_dir: str | Path, out: str | Path, *, force: bool = False, vectors: int = 8) -> Path:
    """Writes the hardware parameter files of a trained run to `out` (see the module docstring).

    Raises ExportError (an existing `out` without force, a run folder without a checkpoint) and
    `cooptim.quantize.QuantizationError` (formats); in every case nothing is left at `out`.
    """
    _check_out(Path(out), force)
    try:
        cfg, model, dataset, net = load_quantized(run_dir)
    except (RunError, ConfigError) as e:
        raise ExportError(str(e)) from None
    return export_model(cfg, model, dataset, net, out, force=force, vectors=vectors)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass --force to replace it")


def export_model(cfg, model, dataset, net: q.QuantizedNetwork, out: str | Path, *, force: bool = False,
                 vectors: int = 8) -> Path:
    """`export` for a model in memory: its config, model, dataset and `quantize.calibrate` result."""
    out = Path(out)
    _check_out(out, force)
    hardware = _hardware(cfg, model, dataset)
    arrays = [_arrays(layer) for layer in net.layers]
    config = accelerator_config(cfg, net, hardware, arrays)
    validate(config)
    images, labels = dataset.test.get(np.arange(min(vectors, len(dataset.test))))
    inputs, trace = test_vectors(net, images)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(tmp, net, config, arrays, inputs, trace, labels)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def validate(config: dict) -> None:
    """accelerator.json against the shipped schema; an ExportError names the failing path."""
    try:
        jsonschema.validate(config, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<root>"
        raise ExportError(f"accelerator.json does not match schema {SCHEMA_VERSION} at {where}: {e.message}") from None


def _write(folder: Path, net, config, arrays, inputs, trace, labels) -> None:
    (folder / "weights").mkdir()
    (folder / "testbench").mkdir()
    (folder / "accelerator.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "fpgaconvnet.json").write_text(json.dumps(fpgaconvnet_config(net, config), indent=2) + "\n")
    (folder / "params.h").write_text(params_header(net, config))
    for layer, layer_arrays in zip(net.layers, arrays):
        name = c_name(layer.name)
        (folder / "weights" / f"{name}.h").write_text(_layer_header(layer, layer_arrays))
        for array, (values, ctype) in layer_arrays.items():
            (folder / "weights" / f"{name}_{array}.mem").write_text(_mem(values, ctype))
    (folder / "weights" / "weights.h").write_text(_weights_table(net, arrays))
    (folder / "testbench" / "input.mem").write_text(_mem(inputs, "int8_t"))
    for layer, info in zip(net.layers, trace):
        ctype = "int8_t" if layer.out_format.bits <= 8 else "int32_t"
        (folder / "testbench" / f"{c_name(layer.name)}.mem").write_text(_mem(info["output"], ctype))
    vectors = {"count": int(len(inputs)), "input_shape": list(net.input_shape),
               "names": ["saturation"] + [f"test[{i}]" for i in range(len(inputs) - 1)],
               "labels": [None] + [int(v) for v in labels],
               "predictions": [int(v) for v in trace[-1]["output"].argmax(1)],
               "saturated_accumulators": {layer.name: int(info["saturated"]) for layer, info in zip(net.layers, trace)},
               "outputs": {layer.name: f"testbench/{c_name(layer.name)}.mem" for layer in net.layers}}
    (folder / "testbench" / "vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")
    (folder / "README.md").write_text(folder_readme(config, vectors))


# ------------------------------------------------------------------------------ the C++ check


def build_reference(folder: str | Path, compiler: str = "g++") -> Path:
    """Compiles the C++17 reference against an export folder; returns the executable's path."""
    folder = Path(folder)
    exe = folder / "reference"
    source = reference_dir() / "reference.cpp"
    cmd = [compiler, "-std=c++17", "-O2", "-Wall", "-Wextra", "-I", str(folder), "-o", str(exe), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise ExportError(f"{compiler} could not compile the reference for {folder}:\n{done.stderr[-3000:]}")
    return exe


def run_reference(folder: str | Path, exe: str | Path | None = None) -> subprocess.CompletedProcess:
    """Runs the compiled reference on the folder's test vectors (exit status 0: bit-exact)."""
    folder = Path(folder)
    exe = Path(exe) if exe else folder / "reference"
    return subprocess.run([str(exe.resolve()), str(folder)], capture_output=True, text=True)
