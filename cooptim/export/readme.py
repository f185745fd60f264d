"""The README.md written into every export folder: what each file is, the layouts, how to check."""

from __future__ import annotations


def _layer_table(config: dict) -> str:
    rows = ["| layer | type | in -> out (pooled) | pattern | folding (ci, co, fine) | input / output format | "
            "weight frac | expected cycles |", "|---|---|---|---|---|---|---|---|"]
    for layer in config["layers"]:
        f, fmt = layer["folding"], layer["formats"]
        fracs = fmt["weight"]["frac"]
        pattern = layer["sparsity"]["pattern"]
        extra = {k: v for k, v in layer["sparsity"].items() if k != "pattern"}
        if extra:
            pattern += " (" + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in extra.items()) + ")"
        rows.append(
            f"| {layer['name']} | {layer['type']} | {'x'.join(map(str, layer['in_shape']))} -> "
            f"{'x'.join(map(str, layer['out_shape']))} ({'x'.join(map(str, layer['pooled_shape']))}) | {pattern} | "
            f"{f['coarse_in']}, {f['coarse_out']}, {f['fine']} | "
            f"{fmt['input']['bits']}b/2^-{fmt['input']['frac']} -> {fmt['output']['bits']}b/2^-{fmt['output']['frac']} | "
            f"{min(fracs)}..{max(fracs)} | {layer['expected']['cycles']:,.0f} |")
    return "\n".join(rows)


def folder_readme(config: dict, vectors: dict) -> str:
    a, p = config["arithmetic"], config["pipeline"]
    return f"""# Accelerator export: `{config['run']}` ({config['model']}) for the {config['device']} at {config['clock_mhz']:g} MHz

Written by `python -m cooptim.export`, schema version {config['schema_version']}. The files are
self-contained: a synthesis flow, or the C++ reference below, needs nothing else.
Modelled pipeline: {p['throughput']:,.0f} images/s, latency {p['latency_s'] * 1e6:.1f} us, bottleneck
`{p['bottleneck']}`, {p['dsp']:.0f} DSP, {p['bram18']:.0f} BRAM18, {p['lut']:,.0f} LUT.

{_layer_table(config)}

## Files

| file | what it is |
|---|---|
| `accelerator.json` | The whole accelerator. Device, clock and arithmetic; per layer: type, shapes, stride, padding, ReLU, pooling, folding, sparsity pattern and its parameters, fixed-point formats (weight and accumulator scales per output channel), weight files, expected cycles, DSP and BRAM; the pipeline's throughput, latency and resources. Its JSON Schema is `cooptim/export/schema.json` in the package. |
| `fpgaconvnet.json` | The same network and folding as one fpgaConvNet partition (its `partitions` protobuf message as JSON with proto field names); see "fpgaConvNet mapping". |
| `params.h` | C++17: per layer a namespace of `constexpr int64_t` values (`conv1::kCoarseIn`, ...), and the table `cooptim::kLayers` the reference reads. |
| `weights/NAME.h` | C++17 `constexpr` arrays of one layer (`cooptim::weights::NAME::k_values`, ...). |
| `weights/NAME_ARRAY.mem` | The same arrays as hex: one two's-complement word per line (2 digits for 8-bit, 8 for 32-bit), for `$readmemh`. |
| `weights/weights.h` | Includes every layer's header and the table `cooptim::kLayerData` of pointers to its arrays. |
| `testbench/input.mem` | {vectors['count']} input images, int8, each H x W x C in NHWC order. Vector 0 is chosen to saturate accumulators; the others are test images. |
| `testbench/NAME.mem` | The expected output of layer NAME for every vector, after ReLU, requantization and pooling (8-bit words; 32-bit for the last layer, the logits). |
| `testbench/vectors.json` | The vectors' names, labels and predictions, and how many accumulator values saturated per layer. |

## Arithmetic

A value with format (bits, frac) is the integer q (two's complement, `bits` wide) standing for q x 2^-frac.
Activations are {a['data_bits']}-bit, weights {a['weight_bits']}-bit with one power-of-two scale
{'per output channel' if a['weight_scale'] == 'per_channel' else 'per layer'}, accumulators {a['acc_bits']}-bit.
For output channel c of a layer:

    acc = saturate(sum of x * w over the kept weights, acc_bits)       (0 where a dynamic gate is off)
    acc = saturate(acc + bias[c], acc_bits)                            (bias at scale 2^-(in_frac + weight_frac[c]))
    acc = max(acc, 0)                                                  (if the layer has a ReLU)
    out = saturate(shift_round(acc, in_frac + weight_frac[c] - out_frac), out_bits)

`shift_round(v, s)` is {a['rounding']} rounding of v / 2^s: `half_up` = floor(v / 2^s + 1/2), `half_even`
rounds ties to even, `floor` truncates towards minus infinity. The shift is never negative. Average pooling
is `shift_round(window sum, log2(window size))`; max pooling is the maximum. A dense layer after a conv reads
its input flattened in NHWC order. The last layer keeps acc_bits at one common scale, so its outputs are
comparable logits.

## Weight layouts

Every weight matrix is a layer's im2col matrix W (K rows, C_out columns). Its rows are kernel taps (row,
then column) outermost and input channels fastest; a dense layer's rows are its inputs.

- `dense`, `unstructured`, `dynamic`: `values` is W row-major (K x C_out), with pruned weights stored as 0.
  An unstructured layer's `activation_threshold` zeroes inputs with |x| <= threshold (HASS).
- `nm` and `balanced_group` (N kept of every M along the rows): `values` and `indices` are each
  (K / M x N) x C_out, row-major. In column c, entries g x N .. g x N + N - 1 are group g's kept weights
  (in increasing row order) and their rows within the group (0..M-1, one byte each). Kang's balanced
  groups are N = keep, M = group.
- `csp` (cascading structured pruning): `lengths[k]` counts the kept chunks of row k (chunks of `chunk`
  output channels, a prefix of the row). `values` holds row 0's first lengths[0] x chunk weights, then
  row 1's, and so on. Output channel c sums over the rows with c / chunk < lengths[k].
- `dynamic` (DPACS): `spatial_gate` (K values, in row order) and the bias `spatial_gate_bias` (in `params.h`)
  turn output position p on when window(p) . spatial_gate + spatial_gate_bias > 0. `channel_gate`
  (C_in x G, G = C_out / channel_group) and `channel_gate_bias` (G) turn group g on when
  (sum over H, W of the input) . channel_gate[:, g] + channel_gate_bias[g] x H x W > 0. The channel
  mask is computed from the layer's input before any weight is read. Off outputs skip the product:
  acc = 0, then the bias.

`bias` and `weight_frac` are int32 per output channel.

## fpgaConvNet mapping

`fpgaconvnet.json` has one partition (`id` 0, `batch_size` 1, no weight reloading). The layers appear in
pipeline order:

- each conv or dense layer becomes a `CONVOLUTION` or `INNER_PRODUCT` layer. Its `parameters` carry rows/cols/
  channels in and out, `filters`, `kernel_size`, `stride`, the pads, the folding (`coarse_in`, `coarse_out`,
  `coarse_group`, `fine`) and the widths (`data_width`, `weight_width`, `acc_width`, `input_width`,
  `output_width`, `biases_width`);
- a ReLU becomes `RELU` and a pooling `AVERAGE_POOLING` or `POOLING`, each with `coarse` = the producer's
  `coarse_out`.

Streams are named `FROM_TO`, with `in` and `out` at the ends. `weights_path` and `bias_path` point at
the `.mem` files. fpgaConvNet's format has no sparsity or fixed-point scale fields: those are in
`accelerator.json`.

## Checking the files with the C++ reference

The reference ships in the package (`cooptim/export/reference/reference.cpp`) and reads only this
folder:

    g++ -std=c++17 -O2 -I . -o reference $(python -c "import cooptim.export as e; print(e.reference_dir())")/reference.cpp
    ./reference .

It recomputes every layer for every vector, writes `testbench/reference_NAME.mem` and exits 0 when all of
them are bit-exact. `python -m cooptim.export RUN --out DIR --check` does the same in one step.
"""
