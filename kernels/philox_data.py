"""Sparse batches generated in registers from the Philox stream defined in superpos/rng.py.

Counter layout (see superpos.rng): key = the model's 64-bit seed, counter = (g * n + i, step, 0, 0);
the four output words feed samples b = 4 g + lane. Feature (b, i) is active iff word <= thr_i, and its
value is min(float32(word) * scale_i, ONE_BELOW).
"""
import triton
import triton.language as tl

LANES = tl.constexpr(4)
ONE_BELOW = tl.constexpr(0.99999994)  # largest float32 below 1.0 (exactly representable)


@triton.jit
def philox_words(seed, c0, step):
    """The four uint32 words of counter (c0, step, 0, 0) under the model's seed; c0 is a uint32 block."""
    zero = c0 * 0
    return tl.philox(seed, c0, zero + step.to(tl.uint32), zero, zero)


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
def _sample_batch_kernel(seed_ptr, thr_ptr, scale_ptr, out_ptr, step, n, B,
                         BG: tl.constexpr, NP: tl.constexpr):
    """Debug path: writes the (B, n) batch model `pid` sees at `step` (out is (K, B, n))."""
    k = tl.program_id(0)
    g = tl.program_id(1) * BG + tl.arange(0, BG)  # [BG] sample groups
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < n
    seed = tl.load(seed_ptr + k)
    thr, scale = load_thresholds(thr_ptr + k * n, scale_ptr + k * n, offs_n, mask_n)
    c0 = (g[:, None] * n + offs_n[None, :]).to(tl.uint32)  # [BG, NP]
    r0, r1, r2, r3 = philox_words(seed, c0, step)
    out = out_ptr + k * B * n
    _store_lane(out, r0, 0, g, offs_n, mask_n, thr, scale, n, B)
    _store_lane(out, r1, 1, g, offs_n, mask_n, thr, scale, n, B)
    _store_lane(out, r2, 2, g, offs_n, mask_n, thr, scale, n, B)
    _store_lane(out, r3, 3, g, offs_n, mask_n, thr, scale, n, B)


@triton.jit
def _store_lane(out, r, lane, g, offs_n, mask_n, thr, scale, n, B):
    b = g * LANES + lane  # [BG] sample index of this lane
    m = (b[:, None] < B) & mask_n[None, :]
    tl.store(out + b[:, None] * n + offs_n[None, :], word_to_feature(r, thr[None, :], scale[None, :]), mask=m)


def sample_batch(seed, thr, scale, step: int, batch_size: int, out=None):
    """Launcher: (K, B, n) float32 batch. seed (K,) int64; thr (K, n) int32 bits of uint32; scale (K, n) f32."""
    import torch
    K, n = thr.shape
    if out is None:
        out = torch.empty((K, batch_size, n), dtype=torch.float32, device=thr.device)
    groups = triton.cdiv(batch_size, 4)
    BG = min(64, triton.next_power_of_2(groups))
    grid = (K, triton.cdiv(groups, BG))
    _sample_batch_kernel[grid](seed, thr, scale, out, step, n, batch_size, BG=BG,
                               NP=max(2, triton.next_power_of_2(n)))
    return out
