"""The QONNX hand-over folder (`python -m cooptim.export RUN_DIR --format qonnx --out DIR`) and its
two checks: qonnx's own execution, and hls4ml's compiled C simulation, each against cooptim's
integer emulation, bit for bit.

  model.onnx               the QONNX model (`cooptim.export.qonnx`), cleaned by qonnx (shapes inferred)
  testbench/inputs.npy     the test vectors as the model's float NCHW input (the saturation vector
                           first, then test images), exactly on the input format's grid
  testbench/expected.npy   cooptim's integer output for each vector (int64, in the output format)
  testbench/vectors.json   the formats, labels and predictions, and what hls4ml needs to know
  README.md                what these are and how to run the checks
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from cooptim.export import hls4ml_bridge
from cooptim.export import qonnx as qx
from cooptim.export.common import ExportError
from cooptim.export.vectors import summary
from cooptim.quantize import QuantizedGraph

try:
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model
except ImportError:  # optional: the `qonnx` extra
    ModelWrapper = None


def _require_qonnx() -> None:
    if ModelWrapper is None:
        raise ExportError("the QONNX export needs onnx and qonnx (pip install 'cooptim[qonnx]')")


def write_qonnx_folder(folder: Path, cfg, net: QuantizedGraph, inputs: np.ndarray, trace: dict, labels) -> None:
    """The hand-over folder's files (see the module docstring) into `folder`."""
    _require_qonnx()
    problems = qx.exactness_problems(net, trace)
    for problem in problems:
        warnings.warn(f"QONNX export: {problem}; the model may differ from cooptim's emulation there", stacklevel=2)
    model = cleanup_model(ModelWrapper(qx.qonnx_model(net, weight_bits=cfg.hardware.weight_bits, name=cfg.name))).model
    onnx.checker.check_model(model)
    (folder / "testbench").mkdir()
    onnx.save(model, folder / "model.onnx")
    logits = np.asarray(trace[net.output.name]["output"]).reshape(len(inputs), -1).astype(np.int64)
    np.save(folder / "testbench" / "inputs.npy", qx.to_nchw(inputs, net.input_format))
    np.save(folder / "testbench" / "expected.npy", logits)
    vectors = {
        **summary(labels, logits),
        "input_format": {"bits": net.input_format.bits, "frac": net.input_format.frac},
        "output_format": {"bits": net.output.out_format.bits, "frac": net.output.out_format.frac},
        "rounding": net.rounding, "exactness_problems": problems,
        "hls4ml": {"precision": hls4ml_bridge.exact_precision(net), "unsupported": hls4ml_bridge.unsupported(net)},
    }
    (folder / "testbench" / "vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")
    (folder / "README.md").write_text(_readme(cfg, net, vectors))


def _read(folder: Path):
    _require_qonnx()
    folder = Path(folder)
    if not (folder / "model.onnx").is_file():
        raise ExportError(f"{folder} is not a QONNX export folder: it has no model.onnx")
    vectors = json.loads((folder / "testbench" / "vectors.json").read_text())
    inputs = np.load(folder / "testbench" / "inputs.npy")
    expected = np.load(folder / "testbench" / "expected.npy")
    return onnx.load(folder / "model.onnx"), vectors, inputs, expected


def _compare(got: np.ndarray, expected: np.ndarray, vectors: dict, what: str) -> dict:
    fmt = vectors["output_format"]
    integers = np.rint(np.asarray(got, np.float64) * 2.0 ** fmt["frac"])
    on_grid = bool(np.array_equal(integers, np.asarray(got, np.float64) * 2.0 ** fmt["frac"]))
    integers = integers.astype(np.int64).reshape(expected.shape)
    wrong = [vectors["names"][i] for i in range(len(expected)) if not np.array_equal(integers[i], expected[i])]
    return {"what": what, "vectors": len(expected), "bit_exact": not wrong and on_grid, "mismatched": wrong,
            "max_difference": int(np.abs(integers - expected).max()) if len(expected) else 0}


def check_qonnx(folder: str | Path) -> dict:
    """qonnx's execution of model.onnx on the test vectors against cooptim's expected outputs."""
    model, vectors, inputs, expected = _read(folder)
    wrapper = ModelWrapper(model)
    name_in, name_out = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    got = np.stack([np.asarray(execute_onnx(wrapper, {name_in: inputs[i:i + 1]})[name_out]).reshape(-1)
                    for i in range(len(inputs))])
    return _compare(got, expected, vectors, "qonnx execution")


def check_hls4ml(folder: str | Path, *, optimize: bool = False) -> dict:
    """hls4ml's C simulation of model.onnx (project in FOLDER/hls4ml) against cooptim's outputs
    (built with -O0 unless `optimize`, see `hls4ml_bridge.c_simulation`)."""
    model, vectors, inputs, expected = _read(folder)
    spec = vectors["hls4ml"]
    hls_model = hls4ml_bridge.convert(model, Path(folder) / "hls4ml", spec["precision"], spec["unsupported"])
    outputs = hls4ml_bridge.c_simulation(hls_model, inputs, optimize=optimize)
    return _compare(outputs, expected, vectors, "hls4ml C simulation")


def _readme(cfg, net: QuantizedGraph, vectors: dict) -> str:
    inp, out = vectors["input_format"], vectors["output_format"]
    unsupported = vectors["hls4ml"]["unsupported"]
    hls = ("hls4ml can take it: every type that no Quant sets is "
           f"`{vectors['hls4ml']['precision']}`, wide enough to be exact." if not unsupported else
           "hls4ml cannot take it: " + "; ".join(unsupported) + ".")
    return f"""# {cfg.name}: QONNX hand-over

`model.onnx` is the quantized, pruned {cfg.model.name} as a QONNX model (NCHW, batch 1). It
computes cooptim's fixed-point emulation bit for bit, in floats that are exact fixed-point values;
`Quant` nodes stand where cooptim rounds and saturates (rounding `{net.rounding}`). Pruned weights
are zeros in the initializers.

- input: `{vectors['count']}` test vectors in `testbench/inputs.npy`, float32 NCHW, on the grid
  of the input format ({inp['bits']} bits, {inp['frac']} fractional): the saturation vector first,
  then test images.
- output: `testbench/expected.npy`, cooptim's integers in the output format ({out['bits']} bits,
  {out['frac']} fractional: the model's output times 2**{out['frac']}).

Checks (each compares every vector bit for bit):

```bash
python -c "from cooptim.export import handover; print(handover.check_qonnx('.'))"    # qonnx's execute_onnx
python -c "from cooptim.export import handover; print(handover.check_hls4ml('.'))"   # hls4ml's C simulation (g++)
```

(`python -m cooptim.export RUN_DIR --format qonnx --out DIR --check --hls4ml` exports and runs both;
the hls4ml project is written to `hls4ml/`.)

{hls}
"""
