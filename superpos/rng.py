"""The one random stream: Philox4x32-10, its key and counter layout, sparse batches and init.

Counter layout (the single place it is defined; the Triton kernels follow it, tests check both):

    key      = (seed & 0xFFFFFFFF, seed >> 32)            # the model's 64-bit seed, 0 <= seed < 2**63
    DATA     : counter = (g * n + i, step, 0, 0)          # feature i of sample group g at `step`
               the 4 output words feed samples b = 4*g + lane, lane = 0..3
    INIT     : counter = (j * n + i, 0, 1, 0)             # entry W[j, i] of the initial weights

This is exactly what Triton's ``tl.philox(seed, c0, c1, c2, c3)`` computes (and, for c2 = c3 = 0,
``tl.randint4x(seed, c0 + (c1 << 32))``).

Data: word r (uint32) makes feature (b, i) active iff ``r < T_i`` with ``T_i = clamp(round(p_i 2^32), 1, 2^32)``;
its value is ``min(float32(r) * float32(1 / T_i), 1 - 2^-24)``, i.e. r / T_i, uniform on [0, 1) given r < T_i.
One 32-bit word per feature (not two) halves the RNG cost, which dominates for tiny models.

Init: ``W[j, i] = float32(std * sqrt(-2 ln u1) cos(2 pi u2))`` (Box-Muller in float64 on the CPU), with
``u1 = (r0 + 1) 2^-32``, ``u2 = r1 2^-32`` and ``std = sqrt(2 / (n + m))``; b = 0.
"""
from __future__ import annotations

import math

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


def _words_to_batch(r: torch.Tensor, thr: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    val = torch.clamp_max(r.to(torch.float32) * scale, ONE_BELOW)
    return torch.where(r <= thr, val, torch.zeros((), dtype=torch.float32, device=r.device))


def _sample_batch_torch(seed, thr, scale, step: int, batch_size: int) -> torch.Tensor:
    K, n = thr.shape
    groups = -(-batch_size // LANES)
    dev = thr.device
    k0, k1 = (k.view(K, 1, 1) for k in split_seed(seed.to(dev)))
    c0 = (torch.arange(groups, device=dev).view(1, groups, 1) * n + torch.arange(n, device=dev).view(1, 1, n))
    c0 = c0.expand(K, groups, n)
    zero = torch.zeros((), dtype=torch.int64, device=dev)
    words = philox4x32_torch(c0, zero + (step & MASK32), zero + STREAM_DATA, zero, k0, k1)
    r = torch.stack(words, dim=2).reshape(K, groups * LANES, n)[:, :batch_size]  # b = 4 g + lane
    return _words_to_batch(r, thr.view(K, 1, n), scale.view(K, 1, n))


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

    @numba.njit(cache=True, parallel=True)
    def _sample_batch_nb(out, seed, thr, scale, step):
        K, B, n = out.shape
        groups = (B + LANES - 1) // LANES
        one_below = np.float32(ONE_BELOW)
        zero = np.float32(0.0)
        for kg in numba.prange(K * groups):
            k, g = kg // groups, kg % groups
            s = np.uint64(seed[k])
            k0, k1 = np.uint32(s & np.uint64(MASK32)), np.uint32(s >> np.uint64(32))
            for i in range(n):
                w = _philox_nb(np.uint32(g * n + i), np.uint32(step), np.uint32(STREAM_DATA), np.uint32(0), k0, k1)
                for lane in range(LANES):
                    b = g * LANES + lane
                    if b < B:
                        r = w[lane]
                        v = min(np.float32(r) * scale[k, i], one_below)
                        out[k, b, i] = v if np.int64(r) <= thr[k, i] else zero


def sample_batch_raw(seed: torch.Tensor, p: torch.Tensor, step: int, batch_size: int,
                     device=None, use_numba: bool | None = None) -> torch.Tensor:
    """(K, B, n) float32 batch for seeds (K,) and probabilities p (K, n) at `step`."""
    if not 0 <= step < 2**32:
        raise ValueError(f"step must be in [0, 2**32), got {step}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    thr, scale = data_thresholds(p)
    if use_numba is None:
        use_numba = numba is not None and device.type == "cpu"
    if use_numba:
        K, n = thr.shape
        out = np.empty((K, batch_size, n), dtype=np.float32)
        _sample_batch_nb(out, seed.cpu().numpy().astype(np.int64), thr.cpu().numpy(),
                         scale.cpu().numpy(), int(step))
        return torch.from_numpy(out).to(device)
    return _sample_batch_torch(seed.to(device), thr.to(device), scale.to(device), int(step), batch_size)


def init_weights(seed: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial (W (K, m, n), b (K, n)) from the seeds alone, computed on the CPU in float64."""
    seed = seed.cpu().to(torch.int64)
    K = seed.shape[0]
    k0, k1 = (k.view(K, 1) for k in split_seed(seed))
    c0 = torch.arange(m * n, dtype=torch.int64).view(1, m * n).expand(K, m * n)
    zero = torch.zeros((), dtype=torch.int64)
    r0, r1, _, _ = philox4x32_torch(c0, zero, zero + STREAM_INIT, zero, k0, k1)
    u1 = (r0.to(torch.float64) + 1.0) * 2.0**-32
    u2 = r1.to(torch.float64) * 2.0**-32
    std = math.sqrt(2.0 / (n + m))
    w = std * torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return w.to(torch.float32).view(K, m, n), torch.zeros(K, n, dtype=torch.float32)
