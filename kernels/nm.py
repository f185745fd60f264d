"""N:M sparse compute: compress / decompress, sparse matmul and conv, and the BDWP training VJP.

Compressed layout (for a (K, N) weight matrix pruned N:M along axis 0, its input axis):
  values  (K / M * N, N), the weights' dtype: for column c and group g (rows g*M .. g*M + M - 1),
          rows g*N .. g*N + N - 1 hold the group's kept values in increasing row order;
  indices (K / M * N, N), uint8: each value's row inside its group, 0..M-1 (ceil(log2 M) bits in
          hardware; stored one per byte here). A group with fewer than N non-zeros is padded with
          zero values at its lowest zero positions, so every group has exactly N entries.
A conv weight (K_h, K_w, C_in, C_out) is the (K_h * K_w * C_in, C_out) matrix of its im2col form,
so its groups run along C_in within each kernel tap (M must divide C_in).

Integer mode: int8 x int8 products summed exactly in int32, then the accumulator's width applied
once at the end (saturate or wrap to `acc_bits`); bit-exact with `reference.py`. `check_int32`
guarantees the int32 sum itself cannot overflow.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from kernels import backend
from kernels import fixed_point as fp


class NMError(backend.KernelInputError):
    """Inputs that break the N:M contract: shapes, dtypes, N > M, or a broken pattern."""


# ------------------------------------------------------------------------------ masks, layout


def check_nm(n: int, m: int, size: int | None = None, what: str = "axis") -> None:
    if not (isinstance(n, int) and isinstance(m, int)) or n < 1 or m < 1:
        raise NMError(f"N and M must be positive integers, got N={n!r}, M={m!r}")
    if n > m:
        raise NMError(f"N={n} is greater than M={m}: N:M keeps N of every M")
    if m > 256:
        raise NMError(f"M={m} does not fit the uint8 index layout (M <= 256)")
    if size is not None and size % m:
        raise NMError(f"M={m} does not divide the {what} (size {size})")


def group_rank(weight: jax.Array, m: int, axis: int) -> jax.Array:
    """Each weight's magnitude rank inside its group of M along `axis` (0 = largest; ties broken
    by position, lower index first). Same shape as `weight`, int32."""
    if weight.shape[axis] % m:
        raise NMError(f"M={m} does not divide axis {axis} of a {weight.shape} weight")
    moved = jnp.moveaxis(jnp.abs(weight), axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    order = jnp.argsort(-groups, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True).astype(jnp.int32)
    return jnp.moveaxis(rank.reshape(moved.shape), -1, axis)


def nm_mask(weight: jax.Array, n: int, m: int, axis: int) -> jax.Array:
    """The magnitude N:M keep-mask of `weight`: exactly N ones in every group of M along `axis`
    (ties broken by position, lower index kept). Same shape and dtype as `weight`."""
    check_nm(n, m, weight.shape[axis], f"axis {axis} of a {weight.shape} weight")
    return (group_rank(weight, m, axis) < n).astype(weight.dtype)


def compress(w, n: int, m: int, axis: int = 0):
    """Compresses an N:M-sparse matrix (at most N non-zeros per group of M along `axis`).

    Args:
      w: (K, N) for axis=0 or (N, K) for axis=1, any dtype.
    Returns:
      (values, indices) in the module's layout, for the matrix with its pruned axis first.
    Raises:
      NMError: N > M, M not dividing the axis, or a group with more than N non-zeros (checked when
        `w` is concrete).
    """
    if w.ndim != 2:
        raise NMError(f"compress takes a 2-D matrix, got shape {w.shape}")
    w = jnp.asarray(w)
    if axis == 1:
        w = w.T
    elif axis != 0:
        raise NMError(f"axis must be 0 or 1, got {axis}")
    k, cols = w.shape
    check_nm(n, m, k, f"pruned axis of the {w.shape} matrix")
    groups = w.reshape(k // m, m, cols)
    nonzero = groups != 0
    if not isinstance(w, jax.core.Tracer):
        counts = np.asarray(nonzero.sum(axis=1))
        if (counts > n).any():
            g, c = np.argwhere(counts > n)[0]
            raise NMError(f"group {g} of column {c} (rows {g * m}..{g * m + m - 1}) has {counts[g, c]} "
                          f"non-zeros: more than N={n}")
    # Order positions: non-zeros first, then zeros, each by row; keep the first N, sorted by row.
    pos = jnp.arange(m)[None, :, None]
    key = jnp.where(nonzero, pos, pos + m)
    chosen = jnp.sort(jnp.sort(key, axis=1)[:, :n, :] % m, axis=1)  # (K/M, N, cols), increasing rows
    values = jnp.take_along_axis(groups, chosen, axis=1)
    return values.reshape(k // m * n, cols), chosen.astype(jnp.uint8).reshape(k // m * n, cols)


def _expand(values, indices, n: int, m: int):
    """Dense (K, cols) matrix from the compressed layout (a one-hot scatter; used in the kernels)."""
    rows, cols = values.shape
    g = rows // n
    v = values.reshape(g, n, cols)
    i = indices.astype(jnp.int32).reshape(g, n, cols)
    onehot = i[:, :, None, :] == jnp.arange(m, dtype=jnp.int32)[None, None, :, None]
    # exactly one of the N entries lands on each kept position, so the sum is exact in any dtype
    dense = jnp.where(onehot, v[:, :, None, :], jnp.zeros((), values.dtype)).sum(axis=1, dtype=values.dtype)
    return dense.reshape(g * m, cols)


def decompress(values, indices, n: int, m: int):
    """The dense (K, cols) matrix of a compressed one."""
    check_nm(n, m)
    _check_layout(values, indices, n, m)
    return _expand(jnp.asarray(values), jnp.asarray(indices), n, m)


def _check_layout(values, indices, n, m):
    if values.shape != indices.shape or values.ndim != 2:
        raise NMError(f"values {values.shape} and indices {indices.shape} must be equal 2-D shapes")
    if values.shape[0] % n:
        raise NMError(f"values have {values.shape[0]} rows: not a multiple of N={n}")
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise NMError(f"indices must be integers, got {indices.dtype}")
    if not isinstance(indices, jax.core.Tracer):
        idx = np.asarray(indices).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= m):
            raise NMError(f"indices must lie in 0..{m - 1} for M={m}, found {idx.min()}..{idx.max()}")
        grouped = np.sort(idx.reshape(-1, n, idx.shape[1]), axis=1)
        if n > 1 and (np.diff(grouped, axis=1) == 0).any():
            raise NMError("an N:M group lists the same position twice: the indices break the pattern")


# ------------------------------------------------------------------------------ sparse matmul


def _kernel(x_ref, v_ref, i_ref, o_ref, *, n, m, integer, acc_bits, acc_overflow):
    dense = _expand(v_ref[...], i_ref[...], n, m)
    if integer:
        acc = jnp.dot(x_ref[...], dense, preferred_element_type=jnp.int32)
        o_ref[...] = backend.finish_accumulator(acc, acc_bits, acc_overflow)
    else:
        acc = jnp.dot(x_ref[...], dense, preferred_element_type=jnp.float32)
        o_ref[...] = acc.astype(o_ref.dtype)


def _block(size: int, preferred: int | None) -> int:
    if preferred is None or preferred >= size:
        return size
    if size % preferred:
        raise NMError(f"block size {preferred} does not divide the dimension {size}")
    return preferred


def sparse_matmul(x, values, indices, n: int, m: int, *, impl: str | None = None,
                  block: tuple[int | None, int | None] = (None, None), acc_bits: int | None = None,
                  acc_overflow: fp.Overflow = "saturate"):
    """x (M, K) @ W (K, N), W given N:M-compressed along K (`compress(w, n, m, axis=0)`).

    Args:
      x: (M, K) float32 / bfloat16, or int8.
      values, indices: the compressed weight, (K / M * N, N) each.
      impl: "pallas", "xla" or None (see `kernels.backend`).
      block: (rows, cols) of the output block of one Pallas grid step; None = the whole dimension
        (best on CPU, where each grid step costs ~0.3 ms interpreted).
      acc_bits: integer mode: the accumulator's width (<= 32); the exact int32 sum is saturated or
        wrapped to it.
    Returns:
      (M, N): float32 for float inputs (bfloat16 in -> float32 accumulation and output), int32 for
      int8 inputs.
    """
    x, values, indices = jnp.asarray(x), jnp.asarray(values), jnp.asarray(indices)
    check_nm(n, m)
    _check_layout(values, indices, n, m)
    if x.ndim != 2:
        raise NMError(f"x must be (M, K), got shape {x.shape}")
    k = values.shape[0] // n * m
    if x.shape[1] != k:
        raise NMError(f"x has K={x.shape[1]} columns but the compressed weight has K={k} rows "
                      f"({values.shape[0]} values per column at {n}:{m})")
    integer = backend.integer_mode(x, values, NMError)
    if integer:
        backend.check_int32(k, NMError)
    backend.check_acc_bits(acc_bits, NMError)
    out_dtype = jnp.int32 if integer else jnp.float32
    if backend.resolve(impl) == "xla":
        return _sparse_matmul_xla(x, values, indices, n, m, integer, acc_bits, acc_overflow)
    rows, cols = x.shape[0], values.shape[1]
    bm, bn = _block(rows, block[0]), _block(cols, block[1])
    kernel = functools.partial(_kernel, n=n, m=m, integer=integer, acc_bits=acc_bits, acc_overflow=acc_overflow)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((rows, cols), out_dtype),
        grid=(rows // bm, cols // bn),
        in_specs=[pl.BlockSpec((bm, k), lambda i, j: (i, 0)),
                  pl.BlockSpec((values.shape[0], bn), lambda i, j: (0, j)),
                  pl.BlockSpec((values.shape[0], bn), lambda i, j: (0, j))],
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        interpret=backend.interpret(),
    )(x, values, indices)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _sparse_matmul_xla(x, values, indices, n, m, integer, acc_bits, acc_overflow):
    """sparse_matmul's plain-XLA path (one compiled program per shape, not one per operation)."""
    dense = _expand(values, indices, n, m)
    acc = jnp.dot(x, dense, preferred_element_type=jnp.int32 if integer else jnp.float32)
    return backend.finish_accumulator(acc, acc_bits, acc_overflow) if integer else acc


# ------------------------------------------------------------------------------ conv


def im2col(x, kernel: tuple[int, int], stride=(1, 1), padding=((0, 0), (0, 0))):
    """(B, H, W, C) -> (B * H_out * W_out, K_h * K_w * C) patches, taps outermost, channels fastest
    (the row order of an HWIO weight reshaped to a matrix). Works for any dtype, exactly."""
    static = (tuple(kernel), tuple(stride), tuple(map(tuple, padding)))
    return _im2col(x, *static), (x.shape[0], *_out_size(x.shape, *static))


def _out_size(shape, kernel, stride, padding) -> tuple[int, int]:
    return tuple((size + sum(pad) - k) // s + 1 for size, k, s, pad in zip(shape[1:3], kernel, stride, padding))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _im2col(x, kernel, stride, padding):
    # one compiled program per shape: outside jit, each of the K_h x K_w strided slices would be
    # dispatched (and compiled) on its own
    b, _, _, c = x.shape
    (kh, kw), (ho, wo) = kernel, _out_size(x.shape, kernel, stride, padding)
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    taps = [xp[:, i:i + stride[0] * (ho - 1) + 1:stride[0], j:j + stride[1] * (wo - 1) + 1:stride[1], :]
            for i in range(kh) for j in range(kw)]
    return jnp.concatenate(taps, axis=-1).reshape(b * ho * wo, kh * kw * c)


def conv2d(x, values, indices, n: int, m: int, kernel_shape: tuple[int, int, int, int], *,
           stride=(1, 1), padding=((0, 0), (0, 0)), **matmul_kwargs):
    """NHWC conv with an N:M-compressed HWIO weight (compress of w.reshape(-1, C_out), axis 0).

    Args:
      x: (B, H, W, C_in).
      kernel_shape: (K_h, K_w, C_in, C_out) of the dense weight.
    Returns:
      (B, H_out, W_out, C_out).
    """
    kh, kw, c_in, c_out = kernel_shape
    if x.ndim != 4 or x.shape[-1] != c_in:
        raise NMError(f"x must be (B, H, W, {c_in}) for a {kernel_shape} kernel, got {x.shape}")
    if c_in % m:
        raise NMError(f"M={m} does not divide C_in={c_in}: conv groups run along input channels")
    if values.shape[1] != c_out:
        raise NMError(f"the compressed weight has {values.shape[1]} columns, expected C_out={c_out}")
    cols, (b, ho, wo) = im2col(x, (kh, kw), stride, padding)
    y = sparse_matmul(cols, values, indices, n, m, **matmul_kwargs)
    return y.reshape(b, ho, wo, c_out)


# ------------------------------------------------------------------------------ BDWP training


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def bdwp_matmul(x, w, n: int, m: int, backward_source: Literal["dense", "forward", "same"] = "dense",
                weight_grad: Literal["dense", "masked"] = "dense", impl: str | None = None):
    """y = x @ (w * forward_mask), trained with SAT's bidirectional weight pruning (BDWP).

    Fang et al., TCAD 2023, Sec. III-A: the forward pass uses W pruned N:M along its input axis
    (axis 0 of the (K, N) weight, the reduction axis of x @ W); the input-gradient pass
    dX = dY @ W^T uses W pruned N:M along ITS reduction axis, the output axis of W (axis 1), so both
    matmuls are N:M sparse. Both masks are recomputed from the weights every call.

    Args:
      x: (B, K) float. w: (K, N) float, dense (the masks are applied here).
      backward_source: where the backward mask's magnitudes come from: "dense" W (SAT's
        description), or the forward-pruned W ("forward", as Bi-Mask, Zhang et al. ICML 2023, does;
        then the backward weight is pruned twice). "same" is ordinary unidirectional N:M training:
        the backward pass uses the transpose of the forward weight (dense along W's output axis),
        so the VJP is the exact gradient of the forward function at a fixed mask.
      weight_grad: dW = x^T dY in full ("dense": SR-STE-style updates reach every weight) or masked
        by the forward mask ("masked").
    """
    return _bdwp_forward(x, w, n, m, impl)[0]


def _bdwp_forward(x, w, n, m, impl):
    mask_f = nm_mask(w, n, m, axis=0)
    values, indices = compress(w * mask_f, n, m, axis=0)
    return sparse_matmul(x, values, indices, n, m, impl=impl), mask_f


def backward_weight(w, mask_f, n, m, backward_source="dense"):
    """The weight the input-gradient pass multiplies by: N:M along W's output axis (axis 1)."""
    if backward_source == "same":
        return w * mask_f
    source = w if backward_source == "dense" else w * mask_f
    return source * nm_mask(source, n, m, axis=1)


def _bdwp_fwd(x, w, n, m, backward_source, weight_grad, impl):
    y, mask_f = _bdwp_forward(x, w, n, m, impl)
    return y, (x, w, mask_f)


def _bdwp_bwd(n, m, backward_source, weight_grad, impl, residuals, g):
    x, w, mask_f = residuals
    w_b = backward_weight(w, mask_f, n, m, backward_source)
    if backward_source == "same":  # W^T is dense along its rows: a dense matmul
        dx = jnp.dot(g, w_b.T, preferred_element_type=jnp.float32).astype(x.dtype)
    else:
        values, indices = compress(w_b, n, m, axis=1)  # W_b^T (N, K) compressed along its rows
        dx = sparse_matmul(g, values, indices, n, m, impl=impl).astype(x.dtype)
    dw = jnp.dot(x.T, g, preferred_element_type=jnp.float32).astype(w.dtype)
    if weight_grad == "masked":
        dw = dw * mask_f
    return dx, dw


bdwp_matmul.defvjp(_bdwp_fwd, _bdwp_bwd)
