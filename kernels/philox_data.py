"""Sparse batches generated in registers from the Philox stream defined in superpos/rng.py.

Counter layout (see superpos.rng): key = the model's 64-bit seed, counter = (g * n + i, step, 0, 0);
the four output words feed samples b = 4 g + lane. Feature (b, i) is active iff word <= thr_i, and its
value is min(float32(word) * scale_i, ONE_BELOW).

Beyond that plain layout (independent features, a fresh batch every step) the same rng.py layout has
feature sets, symmetric values and finite datasets. They are constexpr switches of the helpers below,
so a kernel compiled without them is the plain one:
- SETS: feature i reads two words of its sample, at features gate_i and src_i (the per-feature tables
  gate/src/lo/hi/off/scale). In a vectorised block the words are recomputed from Philox at the gate and
  src counters (g n + gate_i, ...) rather than gathered from the block: a set's leader may lie outside
  the block's feature chunk (the tiled kernel holds 16 features of hundreds), and the recompute is plain
  arithmetic that compiles on every Triton 3.x and runs in the interpreter. Cost: two Philox calls per
  (group, feature) instead of one. The tiny path knows gate/src at compile time (gate_src_code) and
  indexes its per-feature words directly: no extra Philox, no gather.
- SYMMETRIC: values 2 v - 1 in [-1, 1) (inactive features stay 0).
- DATASET (dataset_size = T): the batch at step t holds dataset samples j = (first + b) mod T with
  first = t B mod T (batch_start); sample j is word j % 4 of counter (j // 4 * n + i, 0, 2, 0). A window
  need not start on a group of four, so each sample draws its own counter (4 Philox calls per group and
  feature instead of 1: the price of the memorization setting, where T is small anyway).

How a kernel calls the general generator (what batch_block does for the plain case):
    x, valid = batch_block_general(seed, t, g0, B, n, cols, mask_c, tab, first, T, BG, SETS, SYMMETRIC, DATASET)
with tab = load_tables(hi_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, cols, mask_c, SETS) (the
model's rows of the (K, n) tables, and the population's (n,) gate/src) loaded once per model and chunk,
and first = batch_start(t, B, T, DATASET) once per step; B is the batch's real size (min(B, T)), T the
dataset size (any value, e.g. 1, without DATASET). TrainData (kernels/buffers.py, built by
superpos.triton_backend.make_data) holds every table: thr (= hi), scale, lo, off, gate, src, and the
switches sets, symmetric, dataset_size. sample_batch_data is the debug entry that checks them.
"""
import triton
import triton.language as tl

from .. import rng
from .specialize import kernel

LANES = tl.constexpr(4)
ONE_BELOW = tl.constexpr(0.99999994)  # largest float32 below 1.0 (exactly representable)
PHILOX_ROUNDS = tl.constexpr(10)  # Philox4x32-10 and its constants: superpos.rng's (tl.philox's too)
PHILOX_M0 = tl.constexpr(rng.PHILOX_M0)
PHILOX_M1 = tl.constexpr(rng.PHILOX_M1)
PHILOX_W0 = tl.constexpr(rng.PHILOX_W0)
PHILOX_W1 = tl.constexpr(rng.PHILOX_W1)


@triton.jit
def philox_words(seed, c0, step):
    """The four uint32 words of counter (c0, step, 0, 0) under the model's seed; c0 is a uint32 block."""
    zero = c0 * 0
    return tl.philox(seed, c0, zero + step.to(tl.uint32), zero, zero)


@triton.jit
def philox_words_at(seed, c0, c1, c2):
    """The four uint32 words of counter (c0, c1, c2, 0); c1, c2 are scalars (c2: the rng.py stream)."""
    zero = c0 * 0
    return tl.philox(seed, c0, zero + c1.to(tl.uint32), zero + c2, zero)


@triton.jit
def philox_words_wide(seed, c0, step):
    """philox_words, bit for bit, with each round's two 32x32-bit products written as 64-bit products:
    ptxas then issues one IMAD.WIDE.U32 per product where tl.philox's umulhi + mul mostly become an
    IMAD.HI.U32 and an IMAD (two issue slots)."""
    return philox_words_wide_at(seed, c0, step, 0)


@triton.jit
def philox_words_wide_at(seed, c0, c1, STREAM: tl.constexpr):
    """philox_words_wide at counter (c0, c1, STREAM, 0)."""
    k0 = seed.to(tl.uint32)
    k1 = (seed >> 32).to(tl.uint32)
    zero = c0 * 0
    c1 = zero + c1.to(tl.uint32)
    c2 = zero + STREAM
    c3 = zero
    for r in tl.static_range(PHILOX_ROUNDS):
        if r == 0:
            # the first product of the counter as a 32-bit high/low pair: as a 64-bit product of a counter
            # that steps along the caller's loop, LLVM widens that loop to 64 bits and carries the product
            # as a 64-bit sum, which costs ptxas an add of a zero high word in the next round
            hi0 = tl.umulhi(c0, PHILOX_M0)
            lo0 = c0 * PHILOX_M0
        else:
            p0 = c0.to(tl.uint64) * PHILOX_M0
            hi0 = (p0 >> 32).to(tl.uint32)
            lo0 = p0.to(tl.uint32)
        p1 = c2.to(tl.uint64) * PHILOX_M1
        c0, c1, c2, c3 = ((p1 >> 32).to(tl.uint32) ^ c1 ^ k0, p1.to(tl.uint32), hi0 ^ c3 ^ k1, lo0)
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
def load_thresholds(thr_ptr, scale_ptr, offs_n, mask_n):
    """Per-feature data constants: thr (uint32, stored as int32 bits) and scale (float32)."""
    thr = tl.load(thr_ptr + offs_n, mask=mask_n, other=0).to(tl.uint32, bitcast=True)
    scale = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
    return thr, scale


STREAM_DATASET = tl.constexpr(2)  # rng.STREAM_DATASET: the third counter word of dataset samples


@triton.jit
def tables_to_feature(u, v, lo, hi, off, scale, ANTI: tl.constexpr, SYMMETRIC: tl.constexpr):
    """rng.py's tables: feature active iff lo <= u <= hi (u: the gate word), value from the src word v.
    ANTI=False: lo = off = 0 is known (no anticorrelated set), the compare and the subtraction go."""
    if ANTI:
        val = tl.minimum((v - off).to(tl.float32) * scale, ONE_BELOW)
        active = (u >= lo) & (u <= hi)
    else:
        val = tl.minimum(v.to(tl.float32) * scale, ONE_BELOW)
        active = u <= hi
    if SYMMETRIC:
        val = 2.0 * val - 1.0  # 2 val is exact: one rounding, with or without FMA contraction
    return tl.where(active, val, 0.0)


@triton.jit
def batch_start(t, B, T, DATASET: tl.constexpr):
    """First dataset sample of step t's batch, (t B) mod T (int64); 0 for the stream."""
    if DATASET:
        first = (t.to(tl.int64) * B) % T
    else:
        first = t.to(tl.int64) * 0
    return first


@triton.jit
def dataset_word(seed, j, feat, n, WIDE: tl.constexpr):
    """The word of dataset sample j (int64, any shape) at feature feat (broadcasting with j): lane j % 4
    of counter (j // 4 * n + feat, 0, 2, 0)."""
    c0 = ((j // LANES) * n + feat).to(tl.uint32)
    zero = c0 * 0
    if WIDE:
        w0, w1, w2, w3 = philox_words_wide_at(seed, c0, zero, STREAM_DATASET)
    else:
        w0, w1, w2, w3 = philox_words_at(seed, c0, zero, STREAM_DATASET)
    lane = j % LANES
    return tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))


@triton.jit
def group_words(seed, t, g, feat, n, first, T, DATASET: tl.constexpr):
    """The four [BG, C] word blocks (lane 0..3) of samples b = 4 g + lane (g: [BG]) at feature columns
    feat ([C] or [BG, C]): the stream's counter (g n + feat, t, 0, 0), or the dataset samples
    (first + b) mod T."""
    if DATASET:
        b = g.to(tl.int64) * LANES
        r0 = dataset_word(seed, ((first + b) % T)[:, None], feat, n, False)
        r1 = dataset_word(seed, ((first + b + 1) % T)[:, None], feat, n, False)
        r2 = dataset_word(seed, ((first + b + 2) % T)[:, None], feat, n, False)
        r3 = dataset_word(seed, ((first + b + 3) % T)[:, None], feat, n, False)
    else:
        r0, r1, r2, r3 = philox_words(seed, (g[:, None] * n + feat).to(tl.uint32), t)
    return r0, r1, r2, r3


@triton.jit
def load_tables(hi_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, cols, mask_c, SETS: tl.constexpr):
    """One model's data tables at feature columns `cols` ([C]): (hi, scale, lo, off, gate, src).
    hi/lo/off hold uint32 bits in int32; gate/src are the population's (n,) int32 tables. Without SETS
    only hi and scale are loaded (lo = off = 0, gate = src = cols)."""
    hi, scale = load_thresholds(hi_ptr, scale_ptr, cols, mask_c)
    if SETS:
        lo = tl.load(lo_ptr + cols, mask=mask_c, other=0).to(tl.uint32, bitcast=True)
        off = tl.load(off_ptr + cols, mask=mask_c, other=0).to(tl.uint32, bitcast=True)
        gate = tl.load(gate_ptr + cols, mask=mask_c, other=0)
        src = tl.load(src_ptr + cols, mask=mask_c, other=0)
    else:
        lo = hi * 0
        off = lo
        gate = cols
        src = cols
    return hi, scale, lo, off, gate, src


@triton.jit
def group_features(seed, t, g, cols, n, tab, first, T, SETS: tl.constexpr, SYMMETRIC: tl.constexpr,
                   DATASET: tl.constexpr):
    """The four [BG, C] feature blocks (lane 0..3) of samples 4 g + lane at features `cols` ([C]), by
    rng.py's tables `tab` (load_tables). SETS: the gate and src words are recomputed at their counters."""
    hi, scale, lo, off, gate, src = tab
    if SETS:
        u0, u1, u2, u3 = group_words(seed, t, g, gate[None, :], n, first, T, DATASET)
        v0, v1, v2, v3 = group_words(seed, t, g, src[None, :], n, first, T, DATASET)
    else:
        u0, u1, u2, u3 = group_words(seed, t, g, cols[None, :], n, first, T, DATASET)
        v0, v1, v2, v3 = u0, u1, u2, u3
    lo, hi, off, scale = lo[None, :], hi[None, :], off[None, :], scale[None, :]
    return (tables_to_feature(u0, v0, lo, hi, off, scale, SETS, SYMMETRIC),
            tables_to_feature(u1, v1, lo, hi, off, scale, SETS, SYMMETRIC),
            tables_to_feature(u2, v2, lo, hi, off, scale, SETS, SYMMETRIC),
            tables_to_feature(u3, v3, lo, hi, off, scale, SETS, SYMMETRIC))


@triton.jit
def batch_block_general(seed, step, g0, B, n, cols, mask_c, tab, first, T, BG: tl.constexpr,
                        SETS: tl.constexpr, SYMMETRIC: tl.constexpr, DATASET: tl.constexpr):
    """batch_block with every data option: features [4 BG, C] of batch rows 4 g0 .. 4 (g0 + BG) - 1 and
    features `cols`, zero for rows >= B (the batch's real size) and masked features; and that mask."""
    g = g0 + tl.arange(0, BG)  # [BG] groups of four batch rows
    x = interleave_lanes(*group_features(seed, step, g, cols, n, tab, first, T, SETS, SYMMETRIC, DATASET))
    b = g0 * LANES + tl.arange(0, BG * LANES)  # [4 BG] batch row of each block row
    valid = (b < B)[:, None] & mask_c[None, :]
    return tl.where(valid, x, 0.0), valid


@triton.jit
def word_to_feature(word, thr, scale):
    """One word -> a feature value: 0 with probability 1 - p, else Uniform[0, 1) (the plain tables)."""
    val = tl.minimum(word.to(tl.float32) * scale, ONE_BELOW)
    return tl.where(word <= thr, val, 0.0)


@triton.jit
def batch_block(seed, step, g0, B, n, cols, mask_c, thr_ptr, scale_ptr, BG: tl.constexpr):
    """Features [4 BG, C] of samples 4 g0 .. 4 (g0 + BG) - 1 (consecutive rows) and features `cols` at
    `step`, zero for samples >= B and masked features; also returns that validity mask. The plain data
    only (the tiled kernel's generator as it was compiled and costed; batch_block_general has every
    option: delegating this to it made the tiled kernels' predictions 4-6% slower)."""
    thr, scale = load_thresholds(thr_ptr, scale_ptr, cols, mask_c)
    g = g0 + tl.arange(0, BG)  # [BG] Philox counter groups
    r = interleave_lanes(*philox_words(seed, (g[:, None] * n + cols[None, :]).to(tl.uint32), step))
    b = g0 * LANES + tl.arange(0, BG * LANES)  # [4 BG] sample index of each row
    valid = (b < B)[:, None] & mask_c[None, :]
    return tl.where(valid, word_to_feature(r, thr[None, :], scale[None, :]), 0.0), valid


# --- The tiny path's per-feature form (n <= 5, unrolled): gate/src known at compile time ----------------
def gate_src_code(gate, src, anti) -> int:
    """Pack the tiny path's compile-time tables (n <= 5): feature i's byte is gate | src << 3 | anti << 6."""
    code = 0
    for i, (g, s, a) in enumerate(zip(gate, src, anti)):
        code |= (int(g) | int(s) << 3 | int(bool(a)) << 6) << (8 * i)
    return code


@triton.jit
def tiny_features(words, lo, hi, off, scale, N: tl.constexpr, GATE_SRC: tl.constexpr, SYMMETRIC: tl.constexpr):
    """One sample's N features (a tuple of [BG] blocks) from its N words (tuple) and the tables as scalar
    tuples; GATE_SRC = gate_src_code(...) picks each feature's words at compile time."""
    x = ()
    for i in tl.static_range(N):  # feature i's byte of GATE_SRC: gate | src << 3 | anticorrelated << 6
        x = x + (tables_to_feature(words[(GATE_SRC >> (8 * i)) & 7], words[(GATE_SRC >> (8 * i + 3)) & 7],
                                   lo[i], hi[i], off[i], scale[i], (GATE_SRC >> (8 * i + 6)) & 1 == 1, SYMMETRIC),)
    return x


@kernel
def _sample_batch_kernel(seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, out_ptr, step, n, B, T,
                         BG: tl.constexpr, NC: tl.constexpr, SETS: tl.constexpr, SYMMETRIC: tl.constexpr,
                         DATASET: tl.constexpr):
    """Debug path: writes the block (4 BG samples x NC features) of the (B, n) batch that model
    program_id(0) sees at `step` (out is (K, B, n), B the batch's real size), with the vectorised
    generators: the tiled kernel's batch_block for the plain data, batch_block_general (the block path's,
    and the tiled kernel's to be) with any option."""
    k = tl.program_id(0).to(tl.int64)
    g0 = tl.program_id(1) * BG
    cols = tl.program_id(2) * NC + tl.arange(0, NC)
    mask_c = cols < n
    if SETS or SYMMETRIC or DATASET:
        tab = load_tables(thr_ptr + k * n, scale_ptr + k * n, lo_ptr + k * n, off_ptr + k * n, gate_ptr, src_ptr,
                          cols, mask_c, SETS)
        x, valid = batch_block_general(tl.load(seed_ptr + k), step, g0, B, n, cols, mask_c, tab,
                                       batch_start(step, B, T, DATASET), T, BG, SETS, SYMMETRIC, DATASET)
    else:  # the plain data: the tiled kernel's own batch_block
        x, valid = batch_block(tl.load(seed_ptr + k), step, g0, B, n, cols, mask_c, thr_ptr + k * n,
                               scale_ptr + k * n, BG)
    b = g0 * LANES + tl.arange(0, BG * LANES)
    tl.store(out_ptr + k * B * n + b[:, None] * n + cols[None, :], x, mask=valid)


def sample_batch(seed, thr, scale, step: int, batch_size: int, out=None):
    """Launcher: (K, B, n) float32 plain batch (independent features, the stream). seed (K,) int64;
    thr (K, n) int32 bits of uint32; scale (K, n) f32."""
    return _launch_sample_batch(seed, thr, scale, (thr, thr, thr, thr), step, batch_size, None, False, False, out)


def sample_batch_data(data, step: int, out=None):
    """Launcher: the (K, S, n) batch of a TrainData (superpos.triton_backend.make_data), every data option
    included; S = data.batch_size (the batch's real size)."""
    return _launch_sample_batch(data.seed, data.thr, data.scale, (data.lo, data.off, data.gate, data.src), step,
                                data.batch_size, data.dataset_size, data.sets, data.symmetric, out)


def _launch_sample_batch(seed, thr, scale, tables, step, batch_size, dataset_size, sets, symmetric, out):
    import torch
    K, n = thr.shape
    if out is None:
        out = torch.empty((K, batch_size, n), dtype=torch.float32, device=thr.device)
    groups = triton.cdiv(batch_size, 4)
    BG, NC = min(16, triton.next_power_of_2(groups)), min(64, triton.next_power_of_2(n))
    grid = (K, triton.cdiv(groups, BG), triton.cdiv(n, NC))
    _sample_batch_kernel[grid](seed, thr, scale, *tables, out, step, n, batch_size, dataset_size or 1, BG=BG, NC=NC,
                               SETS=sets, SYMMETRIC=symmetric, DATASET=dataset_size is not None)
    return out
