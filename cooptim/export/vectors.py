"""The test vectors of an export: a vector chosen to saturate the accumulators and the residual
adds, then test images, with every node's expected output."""

from __future__ import annotations

import numpy as np

from cooptim import quantize as q
from cost_models.graph import INPUT


def saturated_total(trace: dict) -> int:
    return sum(int(info["saturated"]) for info in trace.values())


def saturation_vector(net: q.QuantizedGraph) -> np.ndarray:
    """An input chosen to overflow: among all-max, all-min, checkerboards and, for the conv that
    reads the input, its weight signs at full scale, the one that saturates the most values
    (accumulators, residual adds and ReLU6 clips together)."""
    fmt = net.input_format
    h, w, c = net.input_shape
    lo, hi = fmt.min_int, fmt.max_int
    board = (np.indices((h, w)).sum(0) % 2).astype(bool)[..., None].repeat(c, -1)
    candidates = [np.full((h, w, c), hi), np.full((h, w, c), lo), np.where(board, hi, lo), np.where(board, lo, hi)]
    first = next((n.layer for n in net.nodes if n.inputs == (INPUT,) and n.op == "conv" and n.layer.groups == 1),
                 None)
    if first is not None:
        # the sign pattern of one output channel's kernel, tiled at the kernel's period, so that every
        # window aligned with the tiling reaches that channel's largest possible sum
        strongest = np.argsort(-np.abs(first.weight.astype(np.int64)).sum(axis=0))[:4]
        for channel in strongest:
            signs = np.sign(first.weight[:, channel].astype(np.int64)).reshape(*first.kernel, c)
            tiled = np.tile(signs, (h // first.kernel[0] + 1, w // first.kernel[1] + 1, 1))[:h, :w]
            candidates += [np.where(tiled >= 0, hi, lo), np.where(tiled >= 0, lo, hi)]
    batch = np.stack(candidates).astype(np.int8)
    per_vector = [saturated_total(net.forward(v[None])[1]) for v in batch]
    return batch[int(np.argmax(per_vector))]


def test_vectors(net: q.QuantizedGraph, images: np.ndarray) -> tuple[np.ndarray, dict]:
    """(B, H, W, C) int8 inputs: the saturation vector first, then `images` quantized; and the
    trace ({node: {"output", "saturated", ...}})."""
    x = np.concatenate([saturation_vector(net)[None], net.quantize_input(images)]).astype(np.int8)
    _, trace = net.forward(x)
    return x, trace


def summary(labels, logits: np.ndarray) -> dict:
    """What every export says of its vectors: their count and names (the saturation vector, then
    the test images), the images' labels and the integer network's predictions."""
    count = len(logits)
    return {"count": int(count), "names": ["saturation"] + [f"test[{i}]" for i in range(count - 1)],
            "labels": [None] + [int(v) for v in labels], "predictions": [int(v) for v in logits.argmax(1)]}
