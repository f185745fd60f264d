"""Hardware parameter files for synthesis: `python -m cooptim.export RUN_DIR --out DIR`.

`export(run_dir, out)` quantizes the run's trained network (`cooptim.quantize`), fixes its integer
folding for the configured device (`cost_models.dse.greedy`), and writes one folder, atomically
(everything goes to a temporary sibling folder that is renamed at the end, so a failure leaves no
partial output):

  accelerator.json   the accelerator as a graph: device, clock, arithmetic; every node (conv, dense,
                     pools, activations, residual adds, splits) with its shapes, folding, formats,
                     expected cycles and resources, and for conv / dense its sparsity pattern and
                     weight files; every edge (stream) with its format and skip-buffer depth;
                     validated against the shipped JSON Schema (`schema.json`, `SCHEMA_VERSION`)
  fpgaconvnet.json   the same graph and folding in the current fpgaConvNet partition layout
  params.h           C++17 constexpr parameters per node, and the node and edge tables
  weights/           per conv / dense node `NAME.h` (constexpr arrays) and `NAME_<array>.mem` (hex)
  testbench/         int8 input vectors, the expected output of every node and the final logits
  README.md          what each file is, the layouts and formats, and how to run the C++ check

`reference_dir()` is the small C++17 reference (`reference/reference.cpp`), a graph interpreter
with one buffer per edge that reads only these files; `build_reference(out)` compiles it with g++ and `run_reference(out)` checks the test vectors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np

from cooptim import folders, nn
from cooptim import quantize as q
from cooptim.config import ConfigError
from cooptim.data import eval_batches
from cooptim.emulate import load_quantized_graph
from cooptim.export.cfiles import _arrays, _layer_header, _mem, _weights_table, params_header
from cooptim.export import handover
from cooptim.export.common import SCHEMA_VERSION, ExportError, c_name
from cooptim.export.layouts import accelerator_config, fpgaconvnet_config, mean_zero_fraction, window_zero_histogram
from cooptim.export.readme import folder_readme
from cooptim.export.vectors import saturation_vector, test_vectors
from cooptim.export.vectors import summary as vectors_summary
from cooptim.hardware import cost_summary, densities_of, design, device_of, folding_by_layer, memory_plan, network_of
from cooptim.run import RunError
from cost_models.graph import INPUT
from cost_models.sparsity import SPARSE_ENGINE_MIN_ZEROS

__all__ = ["SCHEMA_VERSION", "ExportError", "accelerator_config", "build_reference", "c_name", "export",
           "export_model", "export_qonnx", "fpgaconvnet_config", "params_header", "reference_dir", "run_reference",
           "saturation_vector", "schema", "test_vectors", "validate"]


def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("schema.json").read_text())


def reference_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath("reference")))


# ------------------------------------------------------------------------------ hardware cost


def _hardware(cfg, model, dataset) -> dict:
    """Integer folding and per-node cost of the trained network's graph on the configured device:
    the same DSE, densities and figures as the trainer's report (`hardware.hardware_report`)."""
    gates, activations = nn.measure_activity(model, (x for x, _ in eval_batches(dataset.test, cfg.data.eval_batch_size)))
    histograms = nn.measure_window_histograms(model, (x for x, _ in eval_batches(dataset.test,
                                                                                  cfg.data.eval_batch_size)))
    graph = nn.graph_of(model, dataset.image_shape)
    net = network_of(model, graph, cfg.hardware, histograms=histograms, cascades=True)
    device = device_of(cfg.hardware)
    result = design(net, densities_of(model, net.names, gates, activations=activations), cfg.hardware, device)
    summary, folding = cost_summary(result.cost), folding_by_layer(net, result.folding)
    layer_dsp, layer_bram18 = np.asarray(result.cost.layer_dsp), np.asarray(result.cost.layer_bram18)
    plan = memory_plan(net, result)
    nodes = {name: {"folding": folding[name], "cycles": summary["layer_cycles"][i],
                    "dsp": float(layer_dsp[i]), "bram18": float(layer_bram18[i]),
                    **({"weights_memory": plan[name]} if name in plan else {})}
             for i, name in enumerate(net.names)}
    bottleneck = net.names[int(np.argmax(summary["layer_cycles"]))]
    pipeline = {"throughput": summary["throughput"], "latency_s": summary["latency_s"], "bottleneck": bottleneck,
                **{k: summary[k] for k in ("dsp", "bram18", "lut", "ff", "energy_j", "utilisation")},
                "memory": cfg.hardware.memory, "uram": summary["uram"]}
    return {"device": device.name, "clock_mhz": float(device.clock_mhz), "nodes": nodes, "pipeline": pipeline,
            "skip_buffers": graph.skip_buffers()}


# ------------------------------------------------------------------------------ the folder


def export(run_dir: str | Path, out: str | Path, *, force: bool = False, vectors: int = 8) -> Path:
    """Writes the hardware parameter files of a trained run to `out` (see the module docstring).

    Raises ExportError (an existing `out` without force, a run folder without a checkpoint),
    `cooptim.folders.FolderError` (an `out` that cooptim did not make, or that holds the run, or
    that another process is writing) and `cooptim.quantize.QuantizationError` (formats); in every
    case nothing is left at `out`.
    """
    cfg, model, dataset, net = _quantized_run(run_dir, out, force)
    return export_model(cfg, model, dataset, net, out, force=force, vectors=vectors, protect=(Path(run_dir),))


def export_qonnx(run_dir: str | Path, out: str | Path, *, force: bool = False, vectors: int = 8) -> Path:
    """Writes the trained run's quantized network as QONNX to `out`, atomically (see
    `cooptim.export.qonnx` for the model, `handover.write_qonnx_folder` for the folder)."""
    cfg, model, dataset, net = _quantized_run(run_dir, out, force)
    images, labels = dataset.test.get(np.arange(min(vectors, len(dataset.test))))
    inputs, trace = test_vectors(net, images)
    return _write_atomically(Path(out), force, (Path(run_dir),),
                             lambda folder: handover.write_qonnx_folder(folder, cfg, net, inputs, trace, labels))


def _quantized_run(run_dir, out, force: bool):
    """(config, model, dataset, quantized graph) of a run, after `out` was found writable."""
    _check_out(Path(out), force, protect=(Path(run_dir),))
    try:
        return load_quantized_graph(run_dir)
    except (RunError, ConfigError) as e:
        raise ExportError(str(e)) from None


def _write_atomically(out: Path, force: bool, protect: tuple[Path, ...], write) -> Path:
    """`write(folder)` into a temporary sibling of `out`, renamed to `out` when it is complete."""
    with folders.Lock(out, "export folder"):
        _check_out(out, force, protect)  # again, under the lock
        for stale in _stale_temporaries(out):  # no other writer can be using them now
            shutil.rmtree(stale, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            folders.mark(tmp, "export")
            write(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; an export is an ordinary folder
            folders.replace(out, "export", protect=(*protect, Path.cwd()))
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def _check_out(out: Path, force: bool, protect: tuple[Path, ...] = ()) -> None:
    """Refuses, before any work, an output folder that cannot be written or replaced."""
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass --force to replace it")
    if force:
        folders.check_replaceable(out, "export", protect=(*protect, Path.cwd()))
    parent = next((p for p in (out.absolute(), *out.absolute().parents) if p.exists()), None)
    if parent is not None and parent != out.absolute() and not (parent.is_dir() and os.access(parent, os.W_OK)):
        raise ExportError(f"cannot write {out}: {parent} is not a writable folder")


def _stale_temporaries(out: Path) -> list[Path]:
    """Temporary folders of earlier exports to `out` that were killed before they finished."""
    return [p for p in out.parent.glob(f".{out.name}.*") if p.is_dir() and folders.kind_of(p) == "export"]


def export_model(cfg, model, dataset, net: q.QuantizedGraph, out: str | Path, *, force: bool = False,
                 vectors: int = 8, protect: tuple[Path, ...] = ()) -> Path:
    """`export` for a model in memory: its config, model, dataset and `quantize.calibrate` result."""
    out = Path(out)
    _check_out(out, force, protect)
    hardware = _hardware(cfg, model, dataset)
    arrays = {layer.name: _arrays(layer) for layer in net.layers}
    config = accelerator_config(cfg, net, hardware, arrays)
    validate(config)
    images, labels = dataset.test.get(np.arange(min(vectors, len(dataset.test))))
    inputs, trace = test_vectors(net, images)
    histograms = _sparsity_histograms(net, inputs, trace)
    return _write_atomically(out, force, protect,
                             lambda folder: _write(folder, net, config, arrays, inputs, trace, labels, histograms))


def validate(config: dict) -> None:
    """accelerator.json against the shipped schema; an ExportError names the failing path."""
    try:
        jsonschema.validate(config, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<root>"
        raise ExportError(f"accelerator.json does not match schema {SCHEMA_VERSION} at {where}: {e.message}") from None


def _sparsity_histograms(net: q.QuantizedGraph, inputs: np.ndarray, trace: dict) -> dict:
    """For each unstructured (HASS) conv, its input windows' zero histogram over the test images
    (vector 0, the saturation vector, left out unless it is the only one), for fpgaconvnet.json.
    A conv whose windows hold under `SPARSE_ENGINE_MIN_ZEROS` zeros on average is left out: it is
    written as a dense conv, the engine fpgaConvNet's parser would build for it anyway."""
    histograms = {}
    for node in net.nodes:
        if node.op == "conv" and node.layer.pattern == "unstructured":
            source = node.inputs[0]
            x = inputs if source == INPUT else trace[source]["output"]
            histogram = window_zero_histogram(node.layer, x[1:] if len(x) > 1 else x)
            if mean_zero_fraction(histogram) >= SPARSE_ENGINE_MIN_ZEROS:
                histograms[node.name] = histogram
    return histograms


def _write(folder: Path, net, config, arrays, inputs, trace, labels, histograms) -> None:
    (folder / "weights").mkdir()
    (folder / "testbench").mkdir()
    (folder / "accelerator.json").write_text(json.dumps(config, indent=2) + "\n")
    fpgaconvnet = fpgaconvnet_config(net, config, histograms)
    (folder / "fpgaconvnet.json").write_text(json.dumps(fpgaconvnet, indent=2) + "\n")
    (folder / "params.h").write_text(params_header(net, config))
    for layer in net.layers:
        name = c_name(layer.name)
        (folder / "weights" / f"{name}.h").write_text(_layer_header(layer, arrays[layer.name]))
        for array, (values, ctype) in arrays[layer.name].items():
            (folder / "weights" / f"{name}_{array}.mem").write_text(_mem(values, ctype))
    (folder / "weights" / "weights.h").write_text(_weights_table(net, arrays))
    (folder / "testbench" / "input.mem").write_text(_mem(inputs, "int8_t"))
    for node in net.nodes:
        ctype = "int8_t" if node.out_format.bits <= 8 else "int32_t"
        (folder / "testbench" / f"{c_name(node.name)}.mem").write_text(_mem(trace[node.name]["output"], ctype))
    logits = trace[net.output.name]["output"].reshape(len(inputs), -1)
    vectors = {**vectors_summary(labels, logits), "input_shape": list(net.input_shape),
               "saturated": {node.name: int(trace[node.name]["saturated"]) for node in net.nodes
                             if node.layer is not None or node.op in ("add", "relu6")},
               "outputs": {node.name: f"testbench/{c_name(node.name)}.mem" for node in net.nodes}}
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
