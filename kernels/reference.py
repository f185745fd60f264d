"""The golden model: obviously-correct NumPy loops for every kernel, in float and integer arithmetic.

Slow and plain on purpose. Integer results use Python / int64 arithmetic, so they are exact; the
kernels are tested bit for bit against them.
"""

from __future__ import annotations

import numpy as np


def saturate(v: int, bits: int) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return min(max(v, lo), hi)


def wrap(v: int, bits: int) -> int:
    lo = -(1 << (bits - 1))
    return ((v - lo) % (1 << bits)) + lo


def nm_compress(w: np.ndarray, n: int, m: int):
    """Compress a (K, N) matrix N:M along axis 0: for every column and group of M rows, the
    positions of the non-zeros (in increasing order, padded with the lowest zero positions) and
    their values. Returns values and indices of shape (K / M * N, N)."""
    k, cols = w.shape
    values = np.zeros((k // m * n, cols), w.dtype)
    indices = np.zeros((k // m * n, cols), np.uint8)
    for c in range(cols):
        for g in range(k // m):
            group = w[g * m:(g + 1) * m, c]
            nonzero = [i for i in range(m) if group[i] != 0]
            assert len(nonzero) <= n, "more than N non-zeros in a group"
            zeros = [i for i in range(m) if group[i] == 0]
            kept = sorted(nonzero + zeros[: n - len(nonzero)])
            for j, i in enumerate(kept):
                values[g * n + j, c] = group[i]
                indices[g * n + j, c] = i
    return values, indices


def nm_decompress(values: np.ndarray, indices: np.ndarray, n: int, m: int) -> np.ndarray:
    rows, cols = values.shape
    w = np.zeros((rows // n * m, cols), values.dtype)
    for c in range(cols):
        for r in range(rows):
            g = r // n
            w[g * m + int(indices[r, c]), c] = values[r, c]
    return w


def matmul_int(x: np.ndarray, w: np.ndarray, acc_bits: int = 32, overflow: str = "saturate") -> np.ndarray:
    """Integer matmul: exact sums of products, then the accumulator's saturation or wrap."""
    m_, k = x.shape
    n = w.shape[1]
    out = np.zeros((m_, n), np.int64)
    for i in range(m_):
        for j in range(n):
            total = 0
            for t in range(k):
                total += int(x[i, t]) * int(w[t, j])
            out[i, j] = saturate(total, acc_bits) if overflow == "saturate" else wrap(total, acc_bits)
    return out


def sparse_matmul_int(x, values, indices, n, m, acc_bits=32, overflow="saturate") -> np.ndarray:
    """x (M, K) @ the N:M-compressed (K, N) matrix, reading values and indices directly."""
    rows, cols = values.shape
    out = np.zeros((x.shape[0], cols), np.int64)
    for i in range(x.shape[0]):
        for c in range(cols):
            total = 0
            for r in range(rows):
                k = (r // n) * m + int(indices[r, c])
                total += int(x[i, k]) * int(values[r, c])
            out[i, c] = saturate(total, acc_bits) if overflow == "saturate" else wrap(total, acc_bits)
    return out


def sparse_matmul_float(x, values, indices, n, m) -> np.ndarray:
    rows, cols = values.shape
    out = np.zeros((x.shape[0], cols), np.float64)
    for i in range(x.shape[0]):
        for c in range(cols):
            for r in range(rows):
                out[i, c] += float(x[i, (r // n) * m + int(indices[r, c])]) * float(values[r, c])
    return out


def conv2d(x: np.ndarray, w: np.ndarray, stride=(1, 1), padding=((0, 0), (0, 0)), integer=False,
           acc_bits=32, overflow="saturate") -> np.ndarray:
    """NHWC x HWIO convolution by loops over every output and tap."""
    b, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    (pt, pb), (pl, pr) = padding
    xp = np.zeros((b, h + pt + pb, wd + pl + pr, c), x.dtype)
    xp[:, pt:pt + h, pl:pl + wd] = x
    ho = (h + pt + pb - kh) // stride[0] + 1
    wo = (wd + pl + pr - kw) // stride[1] + 1
    out = np.zeros((b, ho, wo, f), np.int64 if integer else np.float64)
    for n_ in range(b):
        for i in range(ho):
            for j in range(wo):
                patch = xp[n_, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw, :]
                for o in range(f):
                    if integer:
                        total = int((patch.astype(np.int64) * w[..., o].astype(np.int64)).sum())
                        out[n_, i, j, o] = (saturate(total, acc_bits) if overflow == "saturate"
                                            else wrap(total, acc_bits))
                    else:
                        out[n_, i, j, o] = float((patch.astype(np.float64) * w[..., o]).sum())
    return out


def shift_round(v: int, shift: int, rounding: str = "half_up") -> int:
    """Exact rounding of v / 2**shift with Python integers."""
    if shift <= 0:
        return v << -shift
    floor, rem = v >> shift, v & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    if rounding == "floor":
        return floor
    if rounding == "half_up":
        return floor + (rem >= half)
    return floor + (rem > half or (rem == half and floor % 2 == 1))


def requantize(acc: np.ndarray, shift: int, bits: int, rounding="half_up", overflow="saturate") -> np.ndarray:
    out = np.zeros(acc.shape, np.int64)
    for idx in np.ndindex(acc.shape):
        v = shift_round(int(acc[idx]), shift, rounding)
        out[idx] = saturate(v, bits) if overflow == "saturate" else wrap(v, bits)
    return out


def skip_matmul(x, w, spatial_mask, channel_mask, group, base, integer=False, acc_bits=32,
                overflow="saturate") -> np.ndarray:
    """DPACS skipping: for each sample, position and output channel, the dot product if both the
    position and the channel's group are active, else the base value."""
    b, p, k = x.shape
    f = w.shape[1]
    out = np.array(base, np.int64 if integer else np.float64)
    for n_ in range(b):
        for i in range(p):
            if not spatial_mask[n_, i]:
                continue
            for c in range(f):
                if not channel_mask[n_, c // group]:
                    continue
                if integer:
                    total = sum(int(x[n_, i, t]) * int(w[t, c]) for t in range(k))
                    out[n_, i, c] = saturate(total, acc_bits) if overflow == "saturate" else wrap(total, acc_bits)
                else:
                    out[n_, i, c] = sum(float(x[n_, i, t]) * float(w[t, c]) for t in range(k))
    return out


def cascade_matmul_int(x, w, lengths, chunk, acc_bits=32, overflow="saturate") -> np.ndarray:
    """CSP: output channel c sums only over the rows whose cascade reaches c's chunk."""
    out = np.zeros((x.shape[0], w.shape[1]), np.int64)
    for i in range(x.shape[0]):
        for c in range(w.shape[1]):
            total = sum(int(x[i, r]) * int(w[r, c]) for r in range(w.shape[0]) if c // chunk < lengths[r])
            out[i, c] = saturate(total, acc_bits) if overflow == "saturate" else wrap(total, acc_bits)
    return out
