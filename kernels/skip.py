"""Structured-skip compute: only the active outputs are computed, from lists of active indices.

Two patterns:

- DPACS (Gao et al., ASPLOS 2023): per sample, a spatial mask over output positions and a channel
  mask over groups of output channels. `skip_matmul` works on the im2col form of a conv:
  x (B, P, K) @ w (K, F) -> (B, P, F), P output positions. Positions are processed in tiles of
  `tile`; only tiles with an active position and only active channel groups are visited, and
  inside a visited tile the inactive positions are masked. Inactive outputs are zero, or keep the
  values of `out` ("leave untouched", through output aliasing).
- CSP (Hanson et al., ISCA 2022, Sec. 3-4): weight row k (an input position of the im2col
  matrix) keeps a prefix of L_k chunks of `chunk` output channels. With rows ordered by
  decreasing L (`cascade_order`), output chunk j needs only the first R_j = #{k : L_k > j} rows:
  `cascade_matmul` visits only those rows' tiles for each chunk, so compute follows the cascade.

The active lists are computed from the masks on the host side of the call and scalar-prefetched
into the Pallas kernel (`PrefetchScalarGridSpec`): the grid's index maps read them to pick blocks,
and padded list entries are skipped with `pl.when`. Integer mode as in `kernels.nm`: int8 x int8
summed exactly in int32, then the accumulator's width.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels import backend


class SkipError(backend.KernelInputError):
    """Inputs that break a skip kernel's contract."""


def active_list(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, G) bool -> (indices (B, G) int32 of the active entries first, in increasing order, the
    rest padded with the last active one; counts (B,) int32)."""
    mask = jnp.asarray(mask, bool)
    order = jnp.argsort(~mask, axis=1, stable=True).astype(jnp.int32)
    counts = mask.sum(axis=1).astype(jnp.int32)
    slot = jnp.arange(mask.shape[1])[None, :]
    last = jnp.take_along_axis(order, jnp.maximum(counts - 1, 0)[:, None], axis=1)
    return jnp.where(slot < counts[:, None], order, last), counts


def _skip_kernel(tiles, tcount, groups, gcount, x_ref, w_ref, s_ref, base_ref, o_ref, *, integer,
                 acc_bits, acc_overflow):
    b, t, g = pl.program_id(0), pl.program_id(1), pl.program_id(2)

    @pl.when((t < tcount[b]) & (g < gcount[b]))
    def _():
        if integer:
            acc = jnp.dot(x_ref[0], w_ref[...], preferred_element_type=jnp.int32)
            acc = backend.finish_accumulator(acc, acc_bits, acc_overflow)
        else:
            acc = jnp.dot(x_ref[0], w_ref[...], preferred_element_type=jnp.float32)
        o_ref[0] = jnp.where(s_ref[0] != 0, acc.astype(o_ref.dtype), o_ref[0])


def skip_matmul(x, w, *, spatial_mask=None, channel_mask=None, group: int = 1, tile: int | None = None,
                out=None, impl: str | None = None, acc_bits: int | None = None,
                acc_overflow: str = "saturate"):
    """x (B, P, K) @ w (K, F) computed only at active positions x active channel groups.

    Args:
      spatial_mask: (B, P) bool, active output positions (None: all).
      channel_mask: (B, F / group) bool, active groups of `group` output channels (None: all).
      tile: positions per tile (divides P; None: P).
      out: (B, P, F) values for the inactive outputs ("untouched"); None: zeros.
    Returns:
      (B, P, F): float32 for float inputs, int32 for int8 inputs.
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    if x.ndim != 3 or w.ndim != 2 or x.shape[2] != w.shape[0]:
        raise SkipError(f"x must be (B, P, K) and w (K, F) with the same K, got {x.shape} and {w.shape}")
    b, p, k = x.shape
    f = w.shape[1]
    integer = backend.integer_mode(x, w, SkipError)
    if integer:
        backend.check_int32(k, SkipError)
    backend.check_acc_bits(acc_bits, SkipError)
    if f % group:
        raise SkipError(f"channel group {group} does not divide the {f} output channels")
    tile = p if tile is None else tile
    if p % tile:
        raise SkipError(f"tile {tile} does not divide the {p} positions")
    if spatial_mask is not None and np.shape(spatial_mask) != (b, p):
        raise SkipError(f"spatial_mask must be (B, P) = {(b, p)}, got {np.shape(spatial_mask)}")
    if channel_mask is not None and np.shape(channel_mask) != (b, f // group):
        raise SkipError(f"channel_mask must be (B, F / group) = {(b, f // group)}, got {np.shape(channel_mask)}")
    if out is not None and np.shape(out) != (b, p, f):
        raise SkipError(f"out must be (B, P, F) = {(b, p, f)}, got {np.shape(out)}")
    out_dtype = jnp.int32 if integer else jnp.float32

    if backend.resolve(impl, scalar_prefetch=True) == "xla":
        return _skip_xla(x, w, spatial_mask, channel_mask, out, group, integer, acc_bits, acc_overflow)

    spatial = jnp.ones((b, p), bool) if spatial_mask is None else jnp.asarray(spatial_mask, bool)
    channel = jnp.ones((b, f // group), bool) if channel_mask is None else jnp.asarray(channel_mask, bool)
    base = jnp.zeros((b, p, f), out_dtype) if out is None else jnp.asarray(out, out_dtype)

    tiles, tcount = active_list(spatial.reshape(b, p // tile, tile).any(-1))
    groups, gcount = active_list(channel)
    kernel = functools.partial(_skip_kernel, integer=integer, acc_bits=acc_bits, acc_overflow=acc_overflow)
    spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=4,
        grid=(b, p // tile, f // group),
        in_specs=[
            pl.BlockSpec((1, tile, k), lambda i, t, g, ts, tc, gs, gc: (i, ts[i, t], 0)),
            pl.BlockSpec((k, group), lambda i, t, g, ts, tc, gs, gc: (0, gs[i, g])),
            pl.BlockSpec((1, tile, 1), lambda i, t, g, ts, tc, gs, gc: (i, ts[i, t], 0)),
            pl.BlockSpec((1, tile, group), lambda i, t, g, ts, tc, gs, gc: (i, ts[i, t], gs[i, g])),
        ],
        out_specs=pl.BlockSpec((1, tile, group), lambda i, t, g, ts, tc, gs, gc: (i, ts[i, t], gs[i, g])),
    )
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((b, p, f), out_dtype),
        grid_spec=spec,
        input_output_aliases={7: 0},  # the base buffer (after 4 scalar lists, x, w, mask) is the output
        interpret=backend.interpret(),
    )(tiles, tcount, groups, gcount, x, w, spatial.astype(jnp.int32)[..., None], base)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _skip_xla(x, w, spatial, channel, base, group, integer, acc_bits, acc_overflow):
    """skip_matmul's plain-XLA path (one compiled program per shape, not one per operation); a
    mask or `base` of None: everything active, zeros."""
    out_dtype = jnp.int32 if integer else jnp.float32
    y = jnp.einsum("bpk,kf->bpf", x, w, preferred_element_type=out_dtype)
    if integer:
        y = backend.finish_accumulator(y, acc_bits, acc_overflow)
    if spatial is None and channel is None:
        return y
    b, p, f = y.shape
    spatial = jnp.ones((b, p), bool) if spatial is None else jnp.asarray(spatial, bool)
    channel = jnp.ones((b, f // group), bool) if channel is None else jnp.asarray(channel, bool)
    active = spatial[:, :, None] & jnp.repeat(channel, group, axis=1)[:, None, :]
    return jnp.where(active, y, jnp.zeros_like(y) if base is None else jnp.asarray(base, out_dtype))


# ------------------------------------------------------------------------------ CSP cascades


def cascade_order(lengths) -> np.ndarray:
    """The row permutation that orders rows by decreasing cascade length (stable)."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def cascade_mask(lengths, chunks: int, chunk: int) -> np.ndarray:
    """(K, chunks * chunk) 0/1 mask: row k keeps its first L_k chunks."""
    lengths = np.asarray(lengths)
    return (np.arange(chunks)[None, :] < lengths[:, None]).repeat(chunk, axis=1).astype(np.float32)


def _cascade_kernel(rows_tiles, x_ref, w_ref, o_ref, *, integer, acc_bits, acc_overflow, n_tiles):
    j, kt = pl.program_id(0), pl.program_id(1)
    acc_dtype = jnp.int32 if integer else jnp.float32

    @pl.when(kt == 0)
    def _():
        o_ref[...] = jnp.zeros(o_ref.shape, o_ref.dtype)

    @pl.when(kt < rows_tiles[j])
    def _():
        o_ref[...] += jnp.dot(x_ref[...], w_ref[...], preferred_element_type=acc_dtype)

    if integer and acc_bits is not None:
        @pl.when(kt == n_tiles - 1)
        def _():
            o_ref[...] = backend.finish_accumulator(o_ref[...], acc_bits, acc_overflow)


def cascade_matmul(x, w, lengths, chunk: int, *, tile_k: int | None = None, impl: str | None = None,
                   acc_bits: int | None = None, acc_overflow: str = "saturate"):
    """x (M, K) @ w (K, F) for a CSP-pruned w whose rows are ordered by decreasing length.

    Args:
      w: (K, F) with w[k, c] == 0 for every chunk c // chunk >= lengths[k].
      lengths: (K,) ints, non-increasing (see `cascade_order`).
      chunk: output channels per chunk (divides F).
      tile_k: rows per tile (divides K; None: K).
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise SkipError(f"x must be (M, K) and w (K, F) with the same K, got {x.shape} and {w.shape}")
    k, f = w.shape
    if f % chunk:
        raise SkipError(f"chunk {chunk} does not divide the {f} output channels")
    chunks = f // chunk
    integer = backend.integer_mode(x, w, SkipError)
    if integer:
        backend.check_int32(k, SkipError)
    backend.check_acc_bits(acc_bits, SkipError)
    lengths = np.asarray(lengths)
    if lengths.shape != (k,):
        raise SkipError(f"lengths must have one entry per row ({k}), got shape {lengths.shape}")
    if lengths.min(initial=0) < 0 or lengths.max(initial=0) > chunks:
        raise SkipError(f"cascade lengths must lie in 0..{chunks}")
    if (np.diff(lengths) > 0).any():
        raise SkipError("rows must be ordered by decreasing cascade length; permute them with cascade_order()")
    if not isinstance(w, jax.core.Tracer):
        outside = np.asarray(w) * (1 - cascade_mask(lengths, chunks, chunk)) != 0
        if outside.any():
            row, col = np.argwhere(outside)[0]
            raise SkipError(f"w[{row}, {col}] is non-zero beyond row {row}'s cascade length "
                            f"{lengths[row]}: the weights break the cascade")
    out_dtype = jnp.int32 if integer else jnp.float32
    if backend.resolve(impl, scalar_prefetch=True) == "xla":
        y = jnp.dot(x, w, preferred_element_type=out_dtype)
        return backend.finish_accumulator(y, acc_bits, acc_overflow) if integer else y
    tile_k = k if tile_k is None else tile_k
    if k % tile_k:
        raise SkipError(f"tile_k {tile_k} does not divide K={k}")
    rows = (lengths[:, None] > np.arange(chunks)[None, :]).sum(0)  # R_j per chunk
    rows_tiles = jnp.asarray(-(-rows // tile_k), jnp.int32)
    n_tiles = k // tile_k
    kernel = functools.partial(_cascade_kernel, integer=integer, acc_bits=acc_bits,
                               acc_overflow=acc_overflow, n_tiles=n_tiles)
    spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(chunks, n_tiles),
        # tiles past R_j are skipped; their index is clamped so no block is fetched out of range
        in_specs=[pl.BlockSpec((x.shape[0], tile_k), lambda j, t, r: (0, jnp.minimum(t, jnp.maximum(r[j] - 1, 0)))),
                  pl.BlockSpec((tile_k, chunk), lambda j, t, r: (jnp.minimum(t, jnp.maximum(r[j] - 1, 0)), j))],
        out_specs=pl.BlockSpec((x.shape[0], chunk), lambda j, t, r: (0, j)),
    )
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((x.shape[0], f), out_dtype),
                          grid_spec=spec, interpret=backend.interpret())(rows_tiles, x, w)
