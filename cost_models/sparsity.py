"""Hardware sparsity patterns, and how each changes the work an engine does.

Each pattern is a frozen dataclass (plain data) that cooptim's sparsity methods produce and that
the cost model and the exporter read. The cost model sorts them into four kinds of work:

  DENSE         every MAC is done.
  STRUCTURED    a fixed fraction `density` of the reduction is kept in a balanced pattern
                (N:M, Kang's balanced groups, CSP cascades): work scales by the density exactly.
  UNSTRUCTURED  weight and activation zeros anywhere (HASS): a window of K^2 products with j
                non-zeros takes ceil(j / fine) cycles, so the cost is an expectation over windows.
  DYNAMIC       per-input spatial x channel skipping (DPACS): work scales by the expected
                fraction of active positions x channels, plus the gating heads' own work.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, Union

import jax
import jax.numpy as jnp
import numpy as np

DENSE, STRUCTURED, UNSTRUCTURED, DYNAMIC = 0, 1, 2, 3
# fpgaConvNet builds an unstructured (HASS) conv as a dense engine when under this fraction of its
# window products are zero on average (fpgaconvnet-model git source, parser/onnx/parse.py,
# ParseOnnxConvNode.get_hardware): below it, skipping zeros saves too little for the sparse engine.
SPARSE_ENGINE_MIN_ZEROS = 0.1


def _index_bits(m: int) -> int:
    return max(1, math.ceil(math.log2(m)))


@dataclasses.dataclass(frozen=True)
class DensePattern:
    """No sparsity: every weight is stored and every MAC is done."""

    kind: Literal["dense"] = "dense"
    work_kind = DENSE

    @property
    def work_fraction(self) -> float:
        return 1.0

    index_bits_per_value = 0

    def describe(self) -> str:
        return "dense"


@dataclasses.dataclass(frozen=True)
class NMPattern:
    """N:M fine-grained sparsity: N kept weights in every group of M along `axis`.

    Stored as the N kept values of each group plus one index of ceil(log2 M) bits per kept
    value (Zhou et al., ICLR 2021; SAT/BDWP, TCAD 2023).
    """

    n: int
    m: int
    axis: Literal["input", "output"] = "input"
    kind: Literal["nm"] = "nm"
    work_kind = STRUCTURED

    def __post_init__(self):
        if not 1 <= self.n <= self.m:
            raise ValueError(f"N:M pattern needs 1 <= N <= M, got N={self.n}, M={self.m}")

    @property
    def work_fraction(self) -> float:
        # SAT/BDWP: an N:M engine does N of every M MACs along the reduction axis.
        return self.n / self.m

    @property
    def index_bits(self) -> int:
        # Zhou et al. 2021 / NVIDIA 2:4 layout: one position index per kept value.
        return _index_bits(self.m)

    @property
    def index_bits_per_value(self) -> int:
        return self.index_bits

    def describe(self) -> str:
        return f"{self.n}:{self.m} along {self.axis}"


@dataclasses.dataclass(frozen=True)
class BalancedGroupPattern:
    """Kang (TCSVT 2019): every group of `group` weights that meet the activations fetched together
    keeps exactly `keep`; `group` is the engine's input parallelism."""

    keep: int
    group: int
    kind: Literal["balanced_group"] = "balanced_group"
    work_kind = STRUCTURED

    def __post_init__(self):
        if not 1 <= self.keep <= self.group:
            raise ValueError(f"balanced groups need 1 <= keep <= group, got {self.keep}/{self.group}")

    @property
    def work_fraction(self) -> float:
        # Kang 2019, Sec. III: each PE does `keep` MACs per fetch of `group` activations.
        return self.keep / self.group

    @property
    def index_bits_per_value(self) -> int:
        return _index_bits(self.group)

    def describe(self) -> str:
        return f"{self.keep}/{self.group} balanced groups"


@dataclasses.dataclass(frozen=True)
class CSPPattern:
    """CSP (Hanson et al., ISCA 2022): each weight row (one input position of the K^2 x C_in
    reduction) keeps a prefix of its output-channel chunks, `chunk` channels each; stored as the
    kept values in order plus one length counter per row (no indices). `kept`: the fraction of
    weights kept (the cascades' total length), its work fraction.

    `lengths`: the measured cascade length (kept chunks, 0..C_out / chunk) of every weight row, in
    the row order of the weight (tap-major, then input channel), or None. Given, the engine pays the
    imbalance of the rows it runs in lockstep, the longest cascade among them (`cascade_work`);
    without them every row is taken to keep `kept` (no imbalance). A tuple, so the pattern stays
    frozen, hashable data."""

    chunk: int
    kept: float = 1.0
    lengths: tuple | None = None
    kind: Literal["csp"] = "csp"
    work_kind = STRUCTURED
    index_bits_per_value = 0

    def __post_init__(self):
        if not 0.0 < self.kept <= 1.0:
            raise ValueError(f"CSPPattern.kept must be in (0, 1], got {self.kept}")
        if self.chunk < 1:
            raise ValueError(f"CSPPattern.chunk must be at least 1, got {self.chunk}")

    @property
    def work_fraction(self) -> float:
        return self.kept

    def counter_bits(self, out_channels: int) -> int:
        """Bits of a row's length counter: 0..out_channels / chunk kept chunks."""
        return _index_bits(out_channels // self.chunk + 1)

    def describe(self) -> str:
        measured = f", measured cascades of {len(self.lengths)} rows" if self.lengths else ""
        return f"CSP cascade, chunks of {self.chunk} channels, {self.kept:.0%} kept" + measured


@dataclasses.dataclass(frozen=True)
class DynamicPattern:
    """DPACS (ASPLOS 2023): per-input spatial and channel-group masks predicted by gating heads.

    `channel_group` channels share one mask bit; `precompute_channel_mask` means the mask is known
    before the block's weights are fetched, so pruned groups' weights are never loaded.
    `spatial_gate_window`: the spatial gate's window, None for the layer's own (what cooptim's
    gates are, `cooptim.nn.gates`); DPACS's paper uses a 1 x 1 conv, (1, 1).
    """

    spatial: bool = True
    channel: bool = True
    channel_group: int = 1
    precompute_channel_mask: bool = True
    spatial_gate_window: tuple[int, int] | None = None
    kind: Literal["dynamic"] = "dynamic"
    work_kind = DYNAMIC
    index_bits_per_value = 0

    def gate_macs(self, c_in: int, c_out: int, out_positions: int, window: tuple[int, int]) -> tuple[float, float, int]:
        """The gating heads' multiply-accumulates per image, as built: (spatial, channel, the spatial
        gate's taps). The spatial head is a conv of the gate window over C_in to one channel at
        each of the layer's output positions; the channel head a (C_in, C_out / channel_group)
        matrix on the input's channel means (their H x W x C_in additions not counted)."""
        kh, kw = self.spatial_gate_window or window
        spatial = out_positions * kh * kw * c_in if self.spatial else 0.0
        channel = c_in * c_out / self.channel_group if self.channel else 0.0
        return float(spatial), float(channel), kh * kw

    def describe(self) -> str:
        parts = [p for p, on in (("spatial", self.spatial), ("channel", self.channel)) if on]
        return "dynamic " + " x ".join(parts)


@dataclasses.dataclass(frozen=True)
class UnstructuredPattern:
    """HASS (FPL 2024): unstructured weight and activation zeros, exploited by a sparse dot-product
    unit that feeds only non-zero products to its `fine` multipliers; all-zero windows are skipped.

    `histograms`: measured statistics of a trained network, or None. Row c is input channel c's
    distribution of non-zero products per window, j = 0..K^2 (each row sums to 1). Given, they
    replace the Binomial(K^2, weight x activation density) model: the channels are dealt to the
    engine's input streams and the slowest stream sets the layer's rate
    (`stream_window_cycles`). A tuple of tuples, so that the pattern stays frozen, hashable data."""

    skip_zero_windows: bool = True
    histograms: tuple | None = None
    kind: Literal["unstructured"] = "unstructured"
    work_kind = UNSTRUCTURED
    index_bits_per_value = 0

    def describe(self) -> str:
        measured = f", measured histograms of {len(self.histograms)} channels" if self.histograms else ""
        return "unstructured (weights x activations)" + measured


Pattern = Union[DensePattern, NMPattern, BalancedGroupPattern, CSPPattern, DynamicPattern,
                UnstructuredPattern]


@functools.lru_cache(maxsize=None)
def _log_comb(trials: int, kmax: int) -> np.ndarray:
    """log C(trials, j) for j = 0..kmax (-inf past trials), computed once per window size."""
    row = np.full(kmax + 1, -np.inf)
    row[: trials + 1] = [math.lgamma(trials + 1) - math.lgamma(i + 1) - math.lgamma(trials - i + 1)
                         for i in range(trials + 1)]
    return row


def binomial_pmf(n, p: jax.Array, xp=jnp) -> jax.Array:
    """P[X = j], j = 0..max(n), for X ~ Binomial(n, p); exact and differentiable in p.

    Args:
      n: number of trials: a static int, or a NumPy int array broadcastable with p (one window
        size per layer); entries past each n are 0.
      p: success probability, any shape.
      xp: the array namespace: jax.numpy (traceable), or numpy for concrete inputs (no JAX
        dispatch or compilation; float64).
    Returns:
      shape broadcast(p, n).shape + (max(n) + 1,).
    """
    n = np.asarray(n)
    kmax = int(n.max())
    j = np.arange(kmax + 1)
    sizes, where = np.unique(n, return_inverse=True)
    log_comb = np.stack([_log_comb(int(size), kmax) for size in sizes])[where.reshape(n.shape)]
    p = xp.asarray(p)[..., None]
    trials = n[..., None]
    # In log space: C(n, j) alone overflows float32 from n ~ 130 (C(144, 72) ~ 1e42), so the
    # product C(n, j) p^j (1-p)^(n-j) is formed as exp(log C + (j-1) log p + (n-j-1) log(1-p))
    # times one p and one (1-p) kept outside the log: at p = 0 (or 1) the derivative is then the
    # true one-sided derivative (d/dp P[X = 1] = n at p = 0), not 0. The where()s make p = 0 or 1
    # exact (0^0 = 1) with finite gradients (the "double where": the log never sees a zero).
    q = 1.0 - p
    log_p = xp.log(xp.where(p > 0, p, 1.0))
    log_q = xp.log1p(-xp.where(q > 0, p, 0.0))  # log(1 - p), accurate for small p
    rest = np.maximum(trials - j, 0)
    p_term = xp.where(j <= 1, 0.0, xp.where(p > 0, (j - 1) * log_p, -np.inf))
    q_term = xp.where(rest <= 1, 0.0, xp.where(q > 0, (rest - 1) * log_q, -np.inf))
    core = xp.exp(xp.asarray(log_comb, log_p.dtype) + p_term + q_term)
    return core * xp.where(j >= 1, p, 1.0) * xp.where(rest >= 1, q, 1.0)


def expected_lane_max(n, p: jax.Array, lanes: int) -> jax.Array:
    """E[max of `lanes` independent Binomial(n, p)]: the work of a PE array's fetch when its `lanes`
    each skip the zeros among their n weights and all wait for the fullest (Kang, TCSVT 2019:
    unstructured sparsity leaves the lanes unequally loaded).

    E[max] = sum_{k >= 1} P[max >= k] = sum_{k=1}^{n} (1 - F(k-1)^lanes), F the Binomial CDF;
    exact and differentiable in p. `n`: a static int or a NumPy int array broadcastable with p.
    """
    pmf = binomial_pmf(n, p)
    cdf = jnp.clip(jnp.cumsum(pmf, axis=-1), 0.0, 1.0)[..., :-1]  # F(0) .. F(max n - 1)
    k = np.arange(1, int(np.max(n)) + 1)
    below = k <= np.asarray(n)[..., None]  # the terms k = 1 .. n of each entry
    # F^lanes in log space (F can be ~1e-30 for a large window at a high density)
    all_below = jnp.exp(lanes * jnp.log(jnp.where(cdf > 0, cdf, 1.0)))
    all_below = jnp.where(cdf > 0, all_below, 0.0)
    return jnp.where(below, 1.0 - all_below, 0.0).sum(-1)


def soft_ceil(y: jax.Array, max_value: int, temperature: float | None, xp=jnp) -> jax.Array:
    """ceil(y) for 0 <= y <= max_value; with a temperature, a smooth version that tends to it.

    ceil(y) = #{k >= 0 : k < y} = sum_k 1[y > k]; each step becomes a sigmoid of width
    `temperature`, shifted by 1/100 so that exact integers y (j / fine) round as ceil does.
    """
    if temperature is None:
        return xp.ceil(y - 1e-6)
    k = np.arange(max_value + 1)
    return jax.nn.sigmoid((y[..., None] - k - 0.01) / temperature).sum(-1)


def stream_window_cycles(histograms: np.ndarray, streams, fine, skip_zero_windows: bool = True) -> np.ndarray:
    """The slowest input stream's expected cycles per window, from per-channel histograms.

    HASS (FPL 2024) and fpgaConvNet's sparse convolution (fpgaconvnet-model's git source,
    `ConvolutionSparseLayer.get_interleaving("opt")` and `latency`): channel c's windows cost
    E_c = sum_j ceil(j / fine) H[c, j] cycles on average (0 for an all-zero window if skipped,
    else 1). The channels, slowest first, are dealt to the `streams` input streams row by row,
    every other row in reverse (a snake, so each stream gets a mix of slow and fast channels); a
    stream's cost per window is the mean of its channels', and the engine waits for the slowest.

    Args:
      histograms: (C, K^2 + 1), C a multiple of every `streams`.
      streams, fine: concrete integers, broadcast together (one entry per design).
    Returns:
      the max over streams of the expected cycles per window, float64, broadcast shape.
    """
    histograms = np.asarray(histograms, np.float64)
    channels, bins = histograms.shape
    streams, fine = np.broadcast_arrays(np.asarray(streams, np.int64), np.asarray(fine, np.int64))
    nonzeros = np.arange(bins)
    out = np.empty(streams.shape, np.float64)
    for (s, f) in set(zip(streams.ravel().tolist(), fine.ravel().tolist())):
        cycles = np.ceil(nonzeros / f)
        if not skip_zero_windows:
            cycles[0] = 1.0
        per_channel = histograms @ cycles
        order = np.argsort(-per_channel, kind="stable").reshape(channels // s, s)
        order[1::2] = order[1::2, ::-1]
        out[(streams == s) & (fine == f)] = per_channel[order].mean(axis=0).max()
    return out


def cascade_work(lengths: np.ndarray, chunks: int, taps: int, streams, fine) -> np.ndarray:
    """The fraction of a dense engine's cycles a CSP engine takes, from measured cascade lengths.

    The engine multiplies `streams` input channels x `fine` window taps at a time (fpgaConvNet's
    dataflow: stream s carries channels s, s + streams, ...; the fine multipliers take the window's
    taps in turn). Each row streams its cascade's weights to the output lanes, counted by its
    length (Hanson et al., ISCA 2022), and rows run in lockstep wait for the longest of them: a
    group costs max(L) / chunks of its dense cycles. Returns the mean over groups.

    Args:
      lengths: (taps x channels,) ints in 0..chunks, tap-major (the weight's row order).
      streams, fine: concrete integers, broadcast together (one entry per design).
    """
    lengths = np.asarray(lengths, np.float64).reshape(taps, -1)
    channels = lengths.shape[1]
    streams, fine = np.broadcast_arrays(np.asarray(streams, np.int64), np.asarray(fine, np.int64))
    out = np.empty(streams.shape, np.float64)
    for (s, f) in set(zip(streams.ravel().tolist(), fine.ravel().tolist())):
        padded = np.zeros((-(-taps // f) * f, -(-channels // s) * s))
        padded[:taps, :channels] = lengths
        groups = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // s, s).max(axis=(1, 3))
        out[(streams == s) & (fine == f)] = groups.mean() / chunks
    return out


def expected_cascade_work(lengths: np.ndarray, chunks: int, rows_together, xp=jnp):
    """`cascade_work` when the folding is traced: the expected longest of `rows_together` cascades
    drawn independently from the measured lengths, E[max] = sum_l (1 - P[L <= l]^n), over chunks.
    Differentiable in `rows_together` (a float)."""
    cdf = np.cumsum(np.bincount(np.asarray(lengths, np.int64), minlength=chunks + 1))[:chunks] / len(lengths)
    n = xp.asarray(rows_together)[..., None]
    return (1.0 - xp.exp(n * np.log(np.maximum(cdf, 1e-30)))).sum(-1) / chunks


def expected_window_cycles(window, density: jax.Array, fine: jax.Array,
                           temperature: float | None = None, skip_zero_windows=True, xp=jnp) -> jax.Array:
    """Expected cycles of a sparse dot-product unit with `fine` multipliers over one window.

    HASS (FPL 2024), Sec. III: a window of `window` (= K^2) products with j non-zeros takes
    ceil(j / fine) cycles; with non-zero probability `density` (weight x activation density) per
    product, j ~ Binomial(window, density), so E = sum_j ceil(j / fine) * P[j]. Computed exactly,
    not by sampling. A window with no non-zero costs 0 cycles if skipped, else 1.

    `window` and `skip_zero_windows` may be NumPy arrays (one entry per layer) broadcastable with
    `density` and `fine`; `xp` as in `binomial_pmf` (numpy only with temperature None).
    """
    pmf = binomial_pmf(window, density, xp)
    kmax = int(np.max(window))
    j = np.arange(kmax + 1)
    cycles = soft_ceil(j / xp.asarray(fine)[..., None], kmax, temperature, xp)
    cycles = xp.where((j == 0) & ~np.asarray(skip_zero_windows)[..., None], 1.0, cycles)
    return (pmf * cycles).sum(-1)
