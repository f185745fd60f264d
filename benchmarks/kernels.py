"""Speed of the N:M kernels on the machine it runs on: dense vs N:M, XLA vs Pallas, float vs int8.

    python benchmarks/kernels.py [--batch 8] [--quick]

Matmul shapes are the im2col forms of ResNet-20 (32x32 CIFAR) and ResNet-18 (224x224 ImageNet)
conv layers at the given batch. On CPU, Pallas runs interpreted (one grid step per call here);
on a GPU it compiles. Also: the integer-emulation throughput of a whole ResNet-20 forward
(int8 activations and 2:4 weights, int32 accumulation, requantization by shift, ReLU, residual
adds) in images/s. All figures are ratios against dense XLA measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# This file is named like the `kernels` package it measures; drop its own folder from the path so
# that `import kernels` finds the package, not this script.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import jax
import jax.numpy as jnp
import numpy as np

from kernels import fixed_point as fp
from kernels import nm

LAYERS = {  # name: (positions per image, K = k*k*C_in, N = C_out)
    "resnet20.stage1 3x3 16->16": (32 * 32, 144, 16),
    "resnet20.stage3 3x3 64->64": (8 * 8, 576, 64),
    "resnet18.layer1 3x3 64->64": (56 * 56, 576, 64),
    "resnet18.layer4 3x3 512->512": (7 * 7, 4608, 512),
}


def median_time(fn, *args, repeats=10):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_rows(batch, patterns, repeats):
    rng = np.random.default_rng(0)
    rows = []
    for name, (positions, k, n_out) in LAYERS.items():
        m_rows = positions * batch
        for dtype in ("float32", "int8"):
            if dtype == "int8":
                x = jnp.asarray(rng.integers(-128, 128, (m_rows, k)), jnp.int8)
                w = jnp.asarray(rng.integers(-128, 128, (k, n_out)), jnp.int8)
                acc = jnp.int32
            else:
                x = jnp.asarray(rng.normal(size=(m_rows, k)), jnp.float32)
                w = jnp.asarray(rng.normal(size=(k, n_out)), jnp.float32)
                acc = jnp.float32
            dense = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=acc))
            t_dense = median_time(dense, x, w, repeats=repeats)
            for n, m in patterns:
                mask = nm.nm_mask(jnp.abs(w.astype(jnp.float32)), n, m, 0).astype(w.dtype)
                values, indices = nm.compress(w * mask, n, m)
                xla = jax.jit(lambda x, v, i: nm.sparse_matmul(x, v, i, n, m, impl="xla"))
                pallas = jax.jit(lambda x, v, i: nm.sparse_matmul(x, v, i, n, m, impl="pallas"))
                t_xla = median_time(xla, x, values, indices, repeats=repeats)
                try:
                    t_pallas = median_time(pallas, x, values, indices, repeats=repeats)
                except Exception as e:  # a kernel that does not lower on this backend: say so, go on
                    print(f"{name} {dtype} {n}:{m}: Pallas failed: {type(e).__name__}: {str(e)[:300]}")
                    t_pallas = float("nan")
                rows.append((name, dtype, f"{n}:{m}", f"{m_rows}x{k}x{n_out}", t_dense, t_xla, t_pallas))
    return rows


def resnet20_int_forward(batch, impl):
    """An integer ResNet-20 forward (random 2:4 int8 weights, stem and head dense) as a function
    of the int8 input; returns the int32 logits."""
    rng = np.random.default_rng(1)

    def conv(c_in, c_out, stride, sparse=True):
        w = rng.integers(-128, 128, (3, 3, c_in, c_out)).astype(np.int8)
        if sparse:
            w = w * np.asarray(nm.nm_mask(jnp.abs(jnp.asarray(w, jnp.float32)), 2, 4, 2)).astype(np.int8)
            v, i = nm.compress(w.reshape(-1, c_out), 2, 4)
            return (v, i, 2, 4, (3, 3, c_in, c_out), stride)
        v, i = nm.compress(w.reshape(-1, c_out), 1, 1)  # dense: 1:1
        return (v, i, 1, 1, (3, 3, c_in, c_out), stride)

    stem = conv(3, 16, 1, sparse=False)
    blocks, c_in = [], 16
    for s, c_out in enumerate((16, 32, 64)):
        for b in range(3):
            stride = 2 if s > 0 and b == 0 else 1
            blocks.append((conv(c_in, c_out, stride), conv(c_out, c_out, 1), c_out - c_in, stride))
            c_in = c_out
    head = jnp.asarray(rng.integers(-128, 128, (64, 10)), jnp.int8)
    out8 = fp.Format(8, 0)

    def apply(x, spec, relu=True):
        v, i, n, m, shape, stride = spec
        acc = nm.conv2d(x, v, i, n, m, shape, stride=(stride, stride), padding=((1, 1), (1, 1)), impl=impl)
        y = fp.requantize(acc, 10, out8)  # fixed per-layer shift: a power-of-two scale
        return (jnp.maximum(y, 0) if relu else y).astype(jnp.int8)

    def forward(x):
        x = apply(x, stem)
        for c1, c2, pad, stride in blocks:
            y = apply(apply(x, c1), c2, relu=False).astype(jnp.int32)
            short = x[:, ::stride, ::stride, :].astype(jnp.int32)
            if pad:
                short = jnp.pad(short, ((0, 0), (0, 0), (0, 0), (0, pad)))
            x = jnp.maximum(fp.overflow(y + short, out8), 0).astype(jnp.int8)
        pooled = fp.shift_round(x.astype(jnp.int32).sum(axis=(1, 2)), 6).astype(jnp.int8)  # / 64 positions
        return jnp.dot(pooled, head, preferred_element_type=jnp.int32)

    return jax.jit(forward)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2:4 only, fewer repeats")
    args = parser.parse_args()
    patterns = [(2, 4)] if args.quick else [(2, 4), (1, 4), (2, 8)]
    repeats = 3 if args.quick else 10

    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    table = Table(title=f"N:M matmul, batch {args.batch}, {jax.default_backend()} backend "
                        f"(Pallas {'interpreted' if jax.default_backend() == 'cpu' else 'compiled'}); "
                        f"speed relative to dense XLA, > 1 is faster")
    for col in ("layer", "dtype", "N:M", "M x K x N", "dense XLA ms", "N:M XLA", "N:M Pallas"):
        table.add_column(col, justify="right" if col not in ("layer",) else "left")
    for name, dtype, pattern, shape, t_dense, t_xla, t_pallas in matmul_rows(args.batch, patterns, repeats):
        table.add_row(name, dtype, pattern, shape, f"{t_dense * 1e3:.2f}", f"{t_dense / t_xla:.2f}x",
                      f"{t_dense / t_pallas:.2f}x")
    console.print(table)

    x = jnp.asarray(np.random.default_rng(2).integers(-128, 128, (args.batch, 32, 32, 3)), jnp.int8)
    emu = Table(title="integer emulation of a whole ResNet-20 forward (2:4 weights, int8, int32 accumulators)")
    for col in ("implementation", "ms per batch", "images/s"):
        emu.add_column(col, justify="right")
    outputs = {}
    for impl in ("xla", "pallas"):
        forward = resnet20_int_forward(args.batch, impl)
        try:
            t = median_time(forward, x, repeats=repeats)
        except Exception as e:  # as above
            print(f"ResNet-20 emulation, {impl}: failed: {type(e).__name__}: {str(e)[:300]}")
            continue
        outputs[impl] = np.asarray(forward(x))
        emu.add_row(impl, f"{t * 1e3:.1f}", f"{args.batch / t:,.1f}")
    console.print(emu)
    same = len(outputs) == 2 and np.array_equal(outputs["xla"], outputs["pallas"])
    console.print(f"XLA and Pallas integer logits bit-identical: {same}")


if __name__ == "__main__":
    main()
