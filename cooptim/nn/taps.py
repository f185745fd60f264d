"""Side outputs of a forward pass, through `nnx.capture` (no global state).

A layer taps a value with `tap(layer, kind, value)`; it is kept only while a forward pass runs
under `capture(model, x, kind, ...)`, which returns the logits and, per kind, {layer name: value}.
Outside a capture a tap does nothing, so `model(x)` stays a plain call.

Kinds:
  GateTap        DPACS gates of a dynamically gated layer: (density, spatial, channel), see
                 `gates.GateRecord`
  LayerInput     a sparse layer's input (its shape is what `describe` reads)
  ActivationKept the kept fraction of a thresholded layer input (HASS's search)
"""

from __future__ import annotations

from flax import nnx


class GateTap(nnx.Intermediate):
    pass


class LayerInput(nnx.Intermediate):
    pass


class ActivationKept(nnx.Intermediate):
    pass


def tap(layer: nnx.Module, kind: type[nnx.Intermediate], value) -> None:
    """Records `value` for `layer` when a `capture` of `kind` is active (else nothing)."""
    if hasattr(layer, "__captures__"):  # set by nnx.capture for the duration of the call
        layer.sow(kind, kind.__name__, value, reduce_fn=lambda _, new: new, init_fn=lambda: None)


def capture(model: nnx.Module, x, *kinds: type[nnx.Intermediate]):
    """(logits, {kind: {layer name: value}}) of `model(x)` with the taps of `kinds`."""
    logits, *states = nnx.capture(lambda m, x: m(x), *kinds)(model, x)
    names = {path: node.layer_name for path, node in nnx.iter_graph(model) if hasattr(node, "layer_name")}
    found = {}
    for kind, state in zip(kinds, states):
        by_layer = {}
        for path, value in nnx.to_flat_state(state):
            by_layer[names[tuple(path[:-1])]] = value.get_value() if hasattr(value, "get_value") else value
        found[kind] = by_layer
    return logits, found
