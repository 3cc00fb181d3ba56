"""Sparse batches generated in registers from the Philox stream defined in superpos/rng.py.

Counter layout (see superpos.rng): key = the model's 64-bit seed, counter = (g * n + i, step, 0, 0);
the four output words feed samples b = 4 g + lane. Feature (b, i) is active iff word <= thr_i, and its
value is min(float32(word) * scale_i, ONE_BELOW).
"""
import triton
import triton.language as tl

from .specialize import kernel

LANES = tl.constexpr(4)
ONE_BELOW = tl.constexpr(0.99999994)  # largest float32 below 1.0 (exactly representable)
PHILOX_ROUNDS = tl.constexpr(10)  # Philox4x32-10 and its constants, as superpos.rng and tl.philox
PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)


@triton.jit
def philox_words(seed, c0, step):
    """The four uint32 words of counter (c0, step, 0, 0) under the model's seed; c0 is a uint32 block."""
    zero = c0 * 0
    return tl.philox(seed, c0, zero + step.to(tl.uint32), zero, zero)


@triton.jit
def philox_words_wide(seed, c0, step):
    """philox_words, bit for bit, with each round's two 32x32-bit products written as 64-bit products:
    ptxas then issues one IMAD.WIDE.U32 per product where tl.philox's umulhi + mul mostly become an
    IMAD.HI.U32 and an IMAD (two issue slots)."""
    k0 = seed.to(tl.uint32)
    k1 = (seed >> 32).to(tl.uint32)
    zero = c0 * 0
    c1 = zero + step.to(tl.uint32)
    c2 = zero
    c3 = zero
    for _ in tl.static_range(PHILOX_ROUNDS):
        p0 = c0.to(tl.uint64) * PHILOX_M0
        p1 = c2.to(tl.uint64) * PHILOX_M1
        c0, c1, c2, c3 = ((p1 >> 32).to(tl.uint32) ^ c1 ^ k0, p1.to(tl.uint32),
                          (p0 >> 32).to(tl.uint32) ^ c3 ^ k1, p0.to(tl.uint32))
        k0 = k0 + PHILOX_W0
        k1 = k1 + PHILOX_W1
    return c0, c1, c2, c3


@triton.jit
def interleave_lanes(r0, r1, r2, r3):
    """Four [BG, C] lane blocks -> one [4 BG, C] block whose row 4 g + lane is lane's row g: rows are then
    consecutive samples b = 4 g + lane, and one tl.dot covers all four lanes."""
    r = tl.join(tl.join(r0, r1), tl.join(r2, r3))  # [BG, C, 2, 2]: r[g, c, i, j] = lane i + 2 j
    BG: tl.constexpr = r0.shape[0]
    C: tl.constexpr = r0.shape[1]
    return tl.reshape(tl.permute(r, (0, 3, 2, 1)), (BG * 4, C))


@triton.jit
def word_to_feature(word, thr, scale):
    """One word -> a feature value: 0 with probability 1 - p, else Uniform[0, 1)."""
    val = tl.minimum(word.to(tl.float32) * scale, ONE_BELOW)
    return tl.where(word <= thr, val, 0.0)


@triton.jit
def load_thresholds(thr_ptr, scale_ptr, offs_n, mask_n):
    """Per-feature data constants: thr (uint32, stored as int32 bits) and scale (float32)."""
    thr = tl.load(thr_ptr + offs_n, mask=mask_n, other=0).to(tl.uint32, bitcast=True)
    scale = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
    return thr, scale


@triton.jit
def batch_block(seed, step, g0, B, n, cols, mask_c, thr_ptr, scale_ptr, BG: tl.constexpr):
    """Features [4 BG, C] of samples 4 g0 .. 4 (g0 + BG) - 1 (consecutive rows) and features `cols` at
    `step`, zero for samples >= B and masked features; also returns that validity mask."""
    thr, scale = load_thresholds(thr_ptr, scale_ptr, cols, mask_c)
    g = g0 + tl.arange(0, BG)  # [BG] Philox counter groups
    r = interleave_lanes(*philox_words(seed, (g[:, None] * n + cols[None, :]).to(tl.uint32), step))
    b = g0 * LANES + tl.arange(0, BG * LANES)  # [4 BG] sample index of each row
    valid = (b < B)[:, None] & mask_c[None, :]
    return tl.where(valid, word_to_feature(r, thr[None, :], scale[None, :]), 0.0), valid


@kernel
def _sample_batch_kernel(seed_ptr, thr_ptr, scale_ptr, out_ptr, step, n, B,
                         BG: tl.constexpr, NC: tl.constexpr):
    """Debug path: writes the block (4 BG samples x NC features) of the (B, n) batch that model
    program_id(0) sees at `step` (out is (K, B, n)), with the tiled kernel's own generator."""
    k = tl.program_id(0).to(tl.int64)
    g0 = tl.program_id(1) * BG
    cols = tl.program_id(2) * NC + tl.arange(0, NC)
    mask_c = cols < n
    x, valid = batch_block(tl.load(seed_ptr + k), step, g0, B, n, cols, mask_c, thr_ptr + k * n, scale_ptr + k * n, BG)
    b = g0 * LANES + tl.arange(0, BG * LANES)
    tl.store(out_ptr + k * B * n + b[:, None] * n + cols[None, :], x, mask=valid)


def sample_batch(seed, thr, scale, step: int, batch_size: int, out=None):
    """Launcher: (K, B, n) float32 batch. seed (K,) int64; thr (K, n) int32 bits of uint32; scale (K, n) f32."""
    import torch
    K, n = thr.shape
    if out is None:
        out = torch.empty((K, batch_size, n), dtype=torch.float32, device=thr.device)
    groups = triton.cdiv(batch_size, 4)
    BG, NC = min(16, triton.next_power_of_2(groups)), min(64, triton.next_power_of_2(n))
    grid = (K, triton.cdiv(groups, BG), triton.cdiv(n, NC))
    _sample_batch_kernel[grid](seed, thr, scale, out, step, n, batch_size, BG=BG, NC=NC)
    return out
