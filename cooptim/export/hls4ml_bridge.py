"""The QONNX model handed to hls4ml, and hls4ml's C simulation checked against cooptim.

hls4ml's ONNX route (`convert_from_onnx_model`) reads QONNX after qonnx's cleaning and its
channels-last conversion. Every `Quant` of cooptim's model becomes an hls4ml type equal to the
cooptim format it stands for: data_bits wide with `frac` fractional bits, FLOOR as AP_TRN (cooptim's
half_up is the bias's half step plus a floor, see `qonnx`), ROUND as AP_RND_CONV, saturating. Every
other type (accumulators, biases, the pools' and identity convs' results) is one wide default,
`exact_precision(net)`, that holds every intermediate value of cooptim's arithmetic exactly, so
hls4ml rounds exactly where cooptim does and nowhere else.

DPACS's run-time gates are built from convs, ReLUs and a subtraction (see `qonnx._gate_masks`),
which hls4ml has. It has no layer for a HASS threshold on an input that can be negative;
`unsupported(net)` names those nodes before anything is built.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cooptim.export.common import ExportError
from cooptim.export.qonnx import non_negative
from cooptim.quantize import QuantizedGraph

if TYPE_CHECKING:
    import onnx

try:
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model
except ImportError:  # optional: the `hls4ml` extra
    hls4ml = None


def available() -> bool:
    return hls4ml is not None


def unsupported(net: QuantizedGraph) -> list[str]:
    """The nodes hls4ml has no layer for, each with why."""
    problems = []
    for node in net.nodes:
        layer = node.layer
        if layer is not None and layer.activation_threshold > 0 and not non_negative(net, node.inputs[0]):
            problems.append(f"node {node.name!r}: a HASS threshold on an input that can be negative "
                            f"(hls4ml's ThresholdedReLU covers inputs after a ReLU)")
    return problems


def exact_precision(net: QuantizedGraph) -> str:
    """One ap_fixed type that holds every intermediate of `net`'s arithmetic exactly: the finest
    step of any accumulator (input frac + the layer's finest weight frac, one bit more for the
    rounding half step) and the widest integer part (acc_bits at the coarsest accumulator scale)."""
    frac, integer = net.input_format.frac, net.input_format.bits - net.input_format.frac
    for node in net.nodes:
        fmt = node.out_format
        frac, integer = max(frac, fmt.frac + 1), max(integer, fmt.bits - fmt.frac)
        if node.layer is not None:
            acc_frac = node.layer.acc_frac
            frac = max(frac, int(acc_frac.max()) + 1)
            integer = max(integer, node.layer.acc_bits - int(acc_frac.min()))
            for gate_frac, largest in _gate_logits(node.layer):
                frac = max(frac, gate_frac)
                integer = max(integer, int(largest).bit_length() - gate_frac + 1, gate_frac + 2)
    integer += 2  # the sums of residual adds before they saturate
    return f"fixed<{integer + frac},{integer}>"


def _gate_logits(layer) -> list[tuple[int, int]]:
    """A DPACS layer's gate logits as (frac, bound on |logit| in units of 2**-frac): their step is
    the input's times the gate weights', and 1 / step is a weight of the model (`_gate_masks`)."""
    gate, in_format = layer.gate, layer.in_format
    if gate is None:
        return []
    largest_input = 2 ** (in_format.bits - 1)
    logits = []
    if gate.spatial_weight is not None:
        bound = int(np.abs(gate.spatial_weight.astype(np.int64)).sum()) * largest_input + abs(int(gate.spatial_bias))
        logits.append((in_format.frac + gate.spatial_frac, bound))
    if gate.channel_weight is not None:
        h, w, _ = layer.in_shape
        per_channel = np.abs(gate.channel_weight.astype(np.int64)).max(axis=1)
        bound = (int(per_channel.sum()) * largest_input + int(np.abs(gate.channel_bias).max())) * h * w
        logits.append((in_format.frac + gate.channel_frac, max(bound, h * w * largest_input)))
    return logits


def prepared(model: onnx.ModelProto):
    """The QONNX model as hls4ml reads it: cleaned, channels last."""
    if not available():
        raise ExportError("the hls4ml hand-over needs hls4ml and qonnx (pip install 'cooptim[hls4ml]')")
    wrapper = cleanup_model(ModelWrapper(model))
    return cleanup_model(wrapper.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True)))


def convert(model: onnx.ModelProto, output_dir: str | Path, precision: str, problems: list[str] = ()):
    """The hls4ml model (Vitis backend, io_parallel) of a QONNX `model` from `qonnx_model`, with
    `precision` (`exact_precision`) as every type that no Quant sets, written to `output_dir`;
    `problems` (`unsupported`) refuse it first. hls4ml's console output is kept out of ours."""
    if problems:
        raise ExportError("hls4ml cannot take this network: " + "; ".join(problems))
    wrapper = prepared(model)
    with contextlib.redirect_stdout(io.StringIO()):
        config = hls4ml.utils.config_from_onnx_model(wrapper, granularity="name", backend="Vitis",
                                                     default_precision=precision)
        return hls4ml.converters.convert_from_onnx_model(wrapper, output_dir=str(output_dir), io_type="io_parallel",
                                                         backend="Vitis", hls_config=config)


def c_simulation(hls_model, inputs_nchw: np.ndarray, *, optimize: bool = False) -> np.ndarray:
    """hls4ml's compiled C simulation (g++ only) on the QONNX model's NCHW float inputs; the
    outputs as floats, one row per input. It is built with -O0 unless `optimize` (hls4ml's own
    -O3): the same arithmetic (ap_fixed's results do not depend on it), 3x faster to build on the
    static digits CNN, and g++ -O3 ran over 15 minutes on the DPACS one's gates."""
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        try:
            if optimize:
                hls_model.compile()
            else:  # what compile() does, with the build script's -O3 replaced
                hls_model.write()
                script = Path(hls_model.config.get_output_dir()) / "build_lib.sh"
                script.write_text(script.read_text().replace("-O3", "-O0"))
                hls_model._compile()
        except Exception as e:  # hls4ml raises a bare Exception when g++ fails, and prints g++'s output
            raise ExportError(f"hls4ml's C simulation did not compile ({e}):\n{console.getvalue()[-3000:]}") from None
        outputs = hls_model.predict(np.ascontiguousarray(inputs_nchw.transpose(0, 2, 3, 1)))
    return np.asarray(outputs, np.float64).reshape(len(inputs_nchw), -1)
