"""The README.md written into every export folder: what each file is, the layouts, how to check."""

from __future__ import annotations


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def _node_table(config: dict) -> str:
    rows = ["| node | op | inputs | out shape | pattern | folding (ci, co, fine) | output format | "
            "expected cycles |", "|---|---|---|---|---|---|---|---|"]
    for node in config["nodes"]:
        f, fmt = node["folding"], node["format"]
        pattern = ""
        if "layer" in node:
            sparsity = node["layer"]["sparsity"]
            extra = {k: v for k, v in sparsity.items() if k != "pattern"}
            pattern = sparsity["pattern"] + (" (" + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()) + ")" if extra else "")
        rows.append(f"| {node['name']} | {node['op']} | {', '.join(node['inputs'])} | {_shape(node['out_shape'])} | "
                    f"{pattern} | {f['coarse_in']}, {f['coarse_out']}, {f['fine']} | "
                    f"{fmt['bits']}b/2^-{fmt['frac']} | {node['expected']['cycles']:,.0f} |")
    return "\n".join(rows)


def _skip_buffers(config: dict) -> str:
    buffers = [e for e in config["edges"] if e["buffer_words"]]
    if not buffers:
        return "The graph has no residual merge: no skip buffer."
    words = sum(e["buffer_words"] for e in buffers)
    return (f"Skip buffers (FIFOs on the shortcut edges into residual adds, so that a block does not stall): "
            f"{len(buffers)}, {words:,} words in all, counted in BRAM in the merge nodes' expected figures.")


def folder_readme(config: dict, vectors: dict) -> str:
    a, p = config["arithmetic"], config["pipeline"]
    return f"""# Accelerator export: `{config['run']}` ({config['model']}) for the {config['device']} at {config['clock_mhz']:g} MHz

Written by `python -m cooptim.export`, schema version {config['schema_version']}. The files are
self-contained: a synthesis flow, or the C++ reference below, needs nothing else.
Modelled pipeline: {p['throughput']:,.0f} images/s, latency {p['latency_s'] * 1e6:.1f} us, bottleneck
`{p['bottleneck']}`, {p['dsp']:.0f} DSP, {p['bram18']:.0f} BRAM18, {p['lut']:,.0f} LUT.

{_node_table(config)}

{_skip_buffers(config)}

## Files

| file | what it is |
|---|---|
| `accelerator.json` | The whole accelerator as a graph. Device, clock and arithmetic; `nodes` in topological order, each with its op, inputs, shapes, output format, folding and expected cycles, DSP and BRAM (a conv / dense node also with kernel, stride, padding, groups, fused ReLU, sparsity pattern, per-channel weight and accumulator scales and weight files; a pool with its window); `edges`, the streams, each with its format and the depth of its skip buffer; the pipeline's throughput, latency and resources. Its JSON Schema is `cooptim/export/schema.json` in the package. |
| `fpgaconvnet.json` | The same graph and folding as one fpgaConvNet partition (the current fpgaconvnet-model's `partitions` protobuf message as JSON with proto field names); see "fpgaConvNet mapping". |
| `params.h` | C++17: per node a namespace of `constexpr int64_t` values (`conv1::kCoarseIn`, ...), and the tables `cooptim::kNodes` and `cooptim::kEdges` the reference reads. |
| `weights/NAME.h` | C++17 `constexpr` arrays of one conv / dense node (`cooptim::weights::NAME::k_values`, ...). |
| `weights/NAME_ARRAY.mem` | The same arrays as hex: one two's-complement word per line (2 digits for 8-bit, 8 for 32-bit), for `$readmemh`. |
| `weights/weights.h` | Includes every weighted node's header and the table `cooptim::kNodeData` of pointers to its arrays (null for other nodes). |
| `testbench/input.mem` | {vectors['count']} input images, int8, each H x W x C in NHWC order. Vector 0 is chosen to saturate accumulators and residual adds; the others are test images. |
| `testbench/NAME.mem` | The expected output of node NAME for every vector (8-bit words; 32-bit for the last node, the logits). |
| `testbench/vectors.json` | The vectors' names, labels and predictions, and how many values saturated per node (accumulators, residual adds, ReLU6). |

## Arithmetic

A value with format (bits, frac) is the integer q (two's complement, `bits` wide) standing for q x 2^-frac.
Activations are {a['data_bits']}-bit, weights {a['weight_bits']}-bit with one power-of-two scale
{'per output channel' if a['weight_scale'] == 'per_channel' else 'per layer'}, accumulators {a['acc_bits']}-bit.
For output channel c of a conv or dense node:

    acc = saturate(sum of x * w over the kept weights, acc_bits)       (0 where a dynamic gate is off)
    acc = saturate(acc + bias[c], acc_bits)                            (bias at scale 2^-(in_frac + weight_frac[c]))
    acc = max(acc, 0)                                                  (if a ReLU is fused)
    out = saturate(shift_round(acc, in_frac + weight_frac[c] - out_frac), out_bits)

`shift_round(v, s)` is {a['rounding']} rounding of v / 2^s: `half_up` = floor(v / 2^s + 1/2), `half_even`
rounds ties to even, `floor` truncates towards minus infinity; a negative s shifts left. The other nodes:

- `relu`: max(x, 0); `fused_relu`: the input itself (its producer applied the ReLU to its accumulator);
  `relu6`: min(max(x, 0), 6 in the format); `split`: the input itself, to every reader.
- `max_pool`: the window maximum (padding at the format's minimum); `avg_pool`: shift_round(window sum,
  log2(window size)) with zero padding (windows of 2^k values).
- `global_pool`: shift_round(sum over H x W x round(2^16 / (H W)), 16), a fixed-point reciprocal.
- `add`: each input shifted to the output format (shift_round(x, in_frac - out_frac)), summed and
  saturated to its bits; the input formats are the edges' formats.
- `subsample` (option-A shortcut): every stride-th row and column, zero channels appended.

A dense node reads its input flattened in NHWC order. Batch norm is folded into the preceding conv. The
last node keeps acc_bits at one common scale, so its outputs are comparable logits.

## Weight layouts

Every weight matrix is a node's im2col matrix W (K rows, C_out columns). Its rows are kernel taps (row,
then column) outermost and input channels fastest; a dense node's rows are its inputs. A grouped conv's
rows are one group's (K = taps x C_in / groups); output channel c belongs to group c / (C_out / groups)
and reads that group's input channels.

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

`fpgaconvnet.json` is one partition (`id` 0, `batch_size` 1, no weight reloading) in the layout of the
current fpgaconvnet-model (its `fpgaconvnet.proto`), one layer per node in topological order:
conv -> `CONVOLUTION` (op_type `dense`, or `sparse` for an unstructured (HASS) layer, with its measured
per-channel window-zero histogram in `sparsity` and `skip_all_zero_window`), dense -> `INNER_PRODUCT`,
relu -> `RELU`, max / average pooling -> `POOLING` (op_type `max` / `avg`), global pooling ->
`AVERAGE_POOLING`, add -> `ELTWISE` (op_type `add`), split -> `SPLIT`. ReLU6 (`ACTIVATION`, op_type
`relu6`) and the option-A subsampling (`POOLING`, op_type `subsample`) have no fpgaConvNet layer.
Streams are named `FROM_TO` (`in` / `out` at the ends) with the node at their other end; a residual
merge's shortcut stream carries its skip buffer as `buffer_depth` (words per stream). Fixed-point types
are `{{width, binary_point}}`; per-channel weight scales and the N:M, CSP and DPACS patterns have no field
in that format: they are in `accelerator.json`.

## Checking the files with the C++ reference

The reference ships in the package (`cooptim/export/reference/reference.cpp`) and reads only this
folder:

    g++ -std=c++17 -O2 -I . -o reference $(python -c "import cooptim.export as e; print(e.reference_dir())")/reference.cpp
    ./reference .

It runs the graph (one buffer per edge) for every vector, recomputes every node, writes `testbench/reference_NAME.mem` and exits 0 when all of
them are bit-exact. `python -m cooptim.export RUN --out DIR --check` does the same in one step.
"""
