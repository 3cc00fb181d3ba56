"""The one random stream: Philox4x32-10, its key and counter layout, sparse batches and init.

Counter layout (the single place it is defined; the Triton kernels follow it, tests check both):

    key      = (seed & 0xFFFFFFFF, seed >> 32)            # the model's 64-bit seed, 0 <= seed < 2**63
    DATA     : counter = (g * n + i, step, 0, 0)          # feature i of sample group g at `step`
               the 4 output words feed samples b = 4*g + lane, lane = 0..3
    DATASET  : counter = (q * n + i, 0, 2, 0)             # feature i of dataset samples j = 4*q + lane
               (finite datasets, ``dataset_size = T``; the third word 2 keeps it apart from every step)
    INIT     : counter = (j * n + i, 0, 1, 0)             # entry W[j, i] of the initial weights
    INIT_DEC : counter = (j * n + i, 0, 1, 1)             # entry W_dec[i, j] of an untied decoder

This is exactly what Triton's ``tl.philox(seed, c0, c1, c2, c3)`` computes (and, for c2 = c3 = 0,
``tl.randint4x(seed, c0 + (c1 << 32))``).

Data: every sample draws ONE 32-bit word r_i per feature (one word, not two, halves the RNG cost, which
dominates for tiny models). Four per-feature tables turn the words of one sample into its values; for
a feature in no set they are the identity (gate = src = i, lo = off = 0):

    u = r[gate_i]                          # the word that decides whether feature i is active
    active  iff  lo_i <= u <= hi_i         # hi_i is stored inclusive (T - 1): 2**32 does not fit in 32 bits
    value   = min(float32(r[src_i] - off_i) * scale_i, 1 - 2^-24)      (float32 product, then clamp)
    x_i     = value if active else 0;  value_range = "symmetric": x_i = 2 value - 1 if active else 0

with ``T_i = clamp(round(p_i 2^32), 1, 2^32)`` from feature i's density p_i:
- independent feature i: gate = src = i, [lo, hi] = [0, T_i - 1], off = 0, scale = float32(1 / T_i);
  the value is r / T_i, uniform on [0, 1) given r < T_i (the layout of the single family before sets).
- correlated set S with leader l = min(S) (its lowest-index member; members share one p, validated):
  every member has gate = l and [lo, hi] = [0, T_l - 1], so the set is active iff r_l < T_l and all
  members' masks are identical. The leader's value is r_l / T_l (src = l, scale 1 / T_l); every other
  member's value is its own word, src = i, off = 0, scale = 2^-32: uniform and independent of the leader's.
- anticorrelated set S = (s_1 < s_2 < ... < s_k) with leader l = s_1: every member has gate = src = l.
  With cumulative thresholds C_0 = 0, C_j = min(C_{j-1} + T_{s_j}, 2^32) (each member keeps its own
  T, so its density is exactly its independent one), member s_j is active iff C_{j-1} <= r_l < C_j:
  [lo, hi] = [C_{j-1}, C_j - 1], off = C_{j-1}, scale = float32(1 / (C_j - C_{j-1})); its value is
  (r_l - C_{j-1}) / (C_j - C_{j-1}). At most one member is active; the set is active with probability
  sum T / 2^32 (sum p <= 1 is validated). The other members' words are unused.
- symmetric values: ``2 value - 1`` in float32. 2 value is exact, so the one rounding of the subtraction
  is the same with or without FMA contraction; the values lie in [-1, 1). Inactive features stay 0.
  A kernel needs per feature only (gate, src, lo, hi, off, scale): a gather of two of the sample's words.

Finite datasets (``dataset_size = T``): sample j of a model's dataset is a pure function of (seed, j):
the DATASET counter above, word lane j % 4 of group q = j // 4, then the same tables. The batch at step
t is samples ``(t B + b) mod T`` for b < B, or the whole dataset (samples 0..T-1, batch size T) when
T <= B; a batch therefore repeats exactly when t B wraps modulo T. Since q n + i must fit in 32 bits,
ceil(T / 4) n <= 2^32 (validated).

Init: ``W[j, i] = float32(std * sqrt(-2 ln u1) cos(2 pi u2))`` (Box-Muller in float64 on the CPU), with
``u1 = (r0 + 1) 2^-32``, ``u2 = r1 2^-32`` and ``std = sqrt(2 / (n + m))``; b = 0. An untied model's
encoder W (m, n) is exactly that; its decoder ``W_dec[i, j]`` (n, m) is the same formula on the INIT_DEC
counter (so it is independent of W and the tied init is unchanged), and b_hidden = 0.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

try:  # numba makes CPU batch generation ~30x faster than tensor ops; optional (absent on GPU machines)
    import numba
except ImportError:  # pragma: no cover - exercised where numba is missing
    numba = None

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
STREAM_DATA = 0
STREAM_INIT = 1
STREAM_DATASET = 2
LANES = 4  # Philox4x32 returns four words: four samples per counter
ONE_BELOW = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # largest float32 < 1


def split_seed(seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) int64 seeds -> key words (k0, k1) as int64 tensors holding uint32 values."""
    seed = seed.to(torch.int64)
    return seed & MASK32, (seed >> 32) & MASK32


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # 32x32 -> 64-bit product without int64 overflow: split b into 16-bit halves.
    b_lo, b_hi = b & 0xFFFF, b >> 16
    p_lo, p_hi = a * b_lo, a * b_hi  # each < 2**48
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & MASK32
    return hi, lo


def philox4x32_torch(c0, c1, c2, c3, k0, k1, rounds: int = 10):
    """Philox4x32 on int64 tensors holding uint32 values (any device, broadcasting)."""
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def data_thresholds(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature probabilities (float64) -> (T - 1 as int64, float32 1/T): the data's two constants."""
    p = torch.as_tensor(p, dtype=torch.float64)
    t = torch.clamp(torch.round(p * 2.0**32), 1.0, 2.0**32)
    return (t - 1).to(torch.int64), (1.0 / t).to(torch.float32)


class DataTables(NamedTuple):
    """The per-feature tables of the layout above: gate, src (n,) int64 shared by the population;
    lo, hi (inclusive), off (K, n) int64 holding uint32 values; scale (K, n) float32."""

    gate: torch.Tensor
    src: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    off: torch.Tensor
    scale: torch.Tensor


def data_tables(p, correlated_sets=(), anticorrelated_sets=()) -> DataTables:
    """Tables for densities p (K, n) and disjoint sets of feature indices (sorted members, validated)."""
    hi, scale = data_thresholds(p)
    K, n = hi.shape
    gate = torch.arange(n, dtype=torch.int64)
    src = gate.clone()
    lo = torch.zeros_like(hi)
    off = torch.zeros_like(hi)
    for members in correlated_sets:
        leader, rest = members[0], list(members[1:])
        gate[rest] = leader
        hi[:, rest] = hi[:, [leader]]
        scale[:, rest] = 2.0**-32
    for members in anticorrelated_sets:
        width = hi[:, list(members)] + 1  # (K, k): each member's own T
        upper = torch.clamp(torch.cumsum(width, dim=1), max=2**32)  # C_j
        lower = torch.cat([torch.zeros_like(upper[:, :1]), upper[:, :-1]], dim=1)
        gate[list(members)] = members[0]
        src[list(members)] = members[0]
        lo[:, list(members)] = lower
        off[:, list(members)] = lower
        hi[:, list(members)] = upper - 1
        scale[:, list(members)] = (1.0 / (upper - lower).to(torch.float64)).to(torch.float32)
    return DataTables(gate, src, lo, hi, off, scale)


def sample_indices(step: int, batch_size: int, dataset_size: int | None):
    """Which samples make the batch at `step`: (indices (S,) int64, counter word c1, stream word c2).

    The stream: samples 0..B-1 of the step's own counters. A finite dataset of T samples: samples
    (step B + b) mod T, b < B, of the DATASET counters, or all T of them when T <= B.
    """
    if dataset_size is None:
        return np.arange(batch_size, dtype=np.int64), step & MASK32, STREAM_DATA
    if dataset_size <= batch_size:
        return np.arange(dataset_size, dtype=np.int64), 0, STREAM_DATASET
    first = (step * batch_size) % dataset_size
    return (first + np.arange(batch_size, dtype=np.int64)) % dataset_size, 0, STREAM_DATASET


def _philox_groups(seed, groups, n, c1, c2, c3=0):
    """(K, G, LANES, n) words: lane `lane` of counter (g n + i, c1, c2, c3) for each group g of `groups`."""
    K, dev = seed.shape[0], seed.device
    k0, k1 = (k.view(K, 1, 1) for k in split_seed(seed))
    c0 = (groups.to(dev).view(1, -1, 1) * n + torch.arange(n, device=dev).view(1, 1, n)) & MASK32
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    words = philox4x32_torch(c0.expand(K, -1, n), zero + c1, zero + c2, zero + c3, k0, k1)
    return torch.stack(words, dim=2)


def _is_identity(tab: DataTables) -> bool:
    """No sets: every feature's value depends on its own word only."""
    return bool((tab.gate == torch.arange(tab.gate.shape[0])).all() and (tab.src == tab.gate).all())


def _tables_to_batch(r: torch.Tensor, tab: DataTables, symmetric: bool) -> torch.Tensor:
    """Words (K, S, n) -> values (K, S, n) by the tables (the identity tables skip the gathers)."""
    K, S, n = r.shape
    identity = _is_identity(tab)
    view = lambda t: t.to(r.device).view(K, 1, n)  # noqa: E731
    u = r if identity else r[:, :, tab.gate.to(r.device)]
    v = r if identity else r[:, :, tab.src.to(r.device)]
    val = torch.clamp_max((v - view(tab.off)).to(torch.float32) * view(tab.scale), ONE_BELOW)
    if symmetric:
        val = 2.0 * val - 1.0
    active = (u >= view(tab.lo)) & (u <= view(tab.hi))
    return torch.where(active, val, torch.zeros((), dtype=torch.float32, device=r.device))


def _sample_batch_torch(seed, tab: DataTables, idx: np.ndarray, c1: int, c2: int, symmetric: bool):
    n = tab.gate.shape[0]
    idx = torch.from_numpy(idx)
    groups, inverse = torch.unique(idx // LANES, return_inverse=True)
    words = _philox_groups(seed, groups, n, c1, c2)  # [K, G, LANES, n]
    dev = words.device
    r = words[:, inverse.to(dev), (idx % LANES).to(dev)]  # [K, S, n]
    return _tables_to_batch(r, tab, symmetric)


if numba is not None:

    @numba.njit(cache=True, inline="always")
    def _philox_nb(c0, c1, c2, c3, k0, k1):
        for _ in range(10):
            p0 = np.uint64(PHILOX_M0) * np.uint64(c0)
            p1 = np.uint64(PHILOX_M1) * np.uint64(c2)
            hi0, lo0 = np.uint32(p0 >> np.uint64(32)), np.uint32(p0 & np.uint64(MASK32))
            hi1, lo1 = np.uint32(p1 >> np.uint64(32)), np.uint32(p1 & np.uint64(MASK32))
            c0, c1, c2, c3 = np.uint32(hi1 ^ c1 ^ k0), lo1, np.uint32(hi0 ^ c3 ^ k1), lo0
            k0 = np.uint32(k0 + np.uint32(PHILOX_W0))
            k1 = np.uint32(k1 + np.uint32(PHILOX_W1))
        return c0, c1, c2, c3

    @numba.njit(cache=True, inline="always")
    def _word_to_value(w_gate, w_src, lo, hi, off, scale, symmetric):
        if lo <= w_gate and w_gate <= hi:
            v = min(np.float32(w_src - off) * scale, np.float32(ONE_BELOW))
            return np.float32(2.0) * v - np.float32(1.0) if symmetric else v
        return np.float32(0.0)

    @numba.njit(cache=True, parallel=True)
    def _sample_batch_nb(out, seed, groups, rows, c1, c2, gate, src, lo, hi, off, scale, symmetric, identity):
        """out[k, rows[q, lane], :] = the sample of lane `lane` of group groups[q] (rows < 0: not drawn).

        With identity tables a feature's value needs only its own word: no scratch array.
        """
        K, S, n = out.shape
        G = groups.shape[0]
        for kq in numba.prange(K * G):
            k, q = kq // G, kq % G
            s = np.uint64(seed[k])
            k0, k1 = np.uint32(s & np.uint64(MASK32)), np.uint32(s >> np.uint64(32))
            if identity:  # (two separate loops: a branch inside one keeps numba from keeping r in registers)
                for i in range(n):
                    r = _philox_nb(np.uint32(groups[q] * n + i), np.uint32(c1), np.uint32(c2), np.uint32(0), k0, k1)
                    for lane in range(LANES):
                        b = rows[q, lane]
                        if b >= 0:
                            x = np.int64(r[lane])
                            out[k, b, i] = _word_to_value(x, x, lo[k, i], hi[k, i], off[k, i], scale[k, i], symmetric)
            else:
                w = np.empty((n, LANES), dtype=np.int64)
                for i in range(n):
                    r = _philox_nb(np.uint32(groups[q] * n + i), np.uint32(c1), np.uint32(c2), np.uint32(0), k0, k1)
                    for lane in range(LANES):
                        w[i, lane] = r[lane]
                for lane in range(LANES):
                    b = rows[q, lane]
                    if b >= 0:
                        for i in range(n):
                            out[k, b, i] = _word_to_value(w[gate[i], lane], w[src[i], lane], lo[k, i], hi[k, i],
                                                          off[k, i], scale[k, i], symmetric)


def _numba_sampler(seed, tab: DataTables, symmetric: bool):
    """(idx, c1, c2) -> (K, len(idx), n) batch: the tables as NumPy arrays once, the draw per call."""
    K, n = tab.lo.shape
    as_np = lambda t: t.cpu().numpy()  # noqa: E731
    fixed = (as_np(tab.gate), as_np(tab.src), as_np(tab.lo), as_np(tab.hi), as_np(tab.off), as_np(tab.scale),
             bool(symmetric), _is_identity(tab))
    seed = as_np(seed).astype(np.int64)

    def draw(idx: np.ndarray, c1: int, c2: int):
        groups, inverse = np.unique(idx // LANES, return_inverse=True)
        rows = np.full((len(groups), LANES), -1, dtype=np.int64)  # each (group, lane) is drawn at most once
        rows[inverse.reshape(-1), idx % LANES] = np.arange(len(idx))
        out = np.empty((K, len(idx), n), dtype=np.float32)
        _sample_batch_nb(out, seed, groups.astype(np.int64), rows, int(c1), int(c2), *fixed)
        return torch.from_numpy(out)
    return draw


def batch_sampler(seed: torch.Tensor, p: torch.Tensor, batch_size: int, device=None, use_numba: bool | None = None,
                  correlated_sets=(), anticorrelated_sets=(), symmetric: bool = False,
                  dataset_size: int | None = None):
    """step -> sample_batch_raw(seed, p, step, batch_size, ...): the data tables built once, for a loop
    over steps (the reference trainer); the batches are the same bits."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    tab = data_tables(p, correlated_sets, anticorrelated_sets)
    if use_numba is None:
        use_numba = numba is not None and device.type == "cpu"
    if use_numba:
        numba_draw = _numba_sampler(seed, tab, symmetric)
    else:
        seed = seed.to(device)

    def draw(step: int) -> torch.Tensor:
        if not 0 <= step < 2**32:
            raise ValueError(f"step must be in [0, 2**32), got {step}")
        idx, c1, c2 = sample_indices(int(step), batch_size, dataset_size)
        if use_numba:
            return numba_draw(idx, c1, c2).to(device)
        return _sample_batch_torch(seed, tab, idx, c1, c2, symmetric)
    return draw


def sample_batch_raw(seed: torch.Tensor, p: torch.Tensor, step: int, batch_size: int,
                     device=None, use_numba: bool | None = None, correlated_sets=(), anticorrelated_sets=(),
                     symmetric: bool = False, dataset_size: int | None = None) -> torch.Tensor:
    """(K, S, n) float32 batch for seeds (K,) and probabilities p (K, n) at `step`.

    S = batch_size, or dataset_size when a finite dataset is smaller than the batch.
    """
    return batch_sampler(seed, p, batch_size, device, use_numba, correlated_sets, anticorrelated_sets, symmetric,
                         dataset_size)(step)


def _normal_init(seed: torch.Tensor, n: int, m: int, c3: int) -> torch.Tensor:
    """(K, m, n) float32: entry [j, i] from INIT counter (j n + i, 0, 1, c3), Box-Muller in float64."""
    seed = seed.cpu().to(torch.int64)
    K = seed.shape[0]
    k0, k1 = (k.view(K, 1) for k in split_seed(seed))
    c0 = torch.arange(m * n, dtype=torch.int64).view(1, m * n).expand(K, m * n)
    zero = torch.zeros((), dtype=torch.int64)
    r0, r1, _, _ = philox4x32_torch(c0, zero, zero + STREAM_INIT, zero + c3, k0, k1)
    u1 = (r0.to(torch.float64) + 1.0) * 2.0**-32
    u2 = r1.to(torch.float64) * 2.0**-32
    std = math.sqrt(2.0 / (n + m))
    w = std * torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return w.to(torch.float32).view(K, m, n)


def init_weights(seed: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial (W (K, m, n), b (K, n)) from the seeds alone, computed on the CPU in float64."""
    return _normal_init(seed, n, m, 0), torch.zeros(seed.shape[0], n, dtype=torch.float32)


def init_untied(seed: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An untied model's extra initial parameters: (W_dec (K, n, m) from INIT_DEC, b_hidden (K, m) = 0)."""
    W_dec = _normal_init(seed, n, m, 1).transpose(1, 2).contiguous()
    return W_dec, torch.zeros(seed.shape[0], m, dtype=torch.float32)
