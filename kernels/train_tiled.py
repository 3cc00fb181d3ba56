"""Fused training of larger models (n in the hundreds, m <= 64) with tl.dot tiles.

A step's batch is cut into slices of 4 BG samples (a slice is one tile). The gradient and loss of each
slice are summed from zero in an order set by the shape alone and written once to per-slice scratch; the
update then adds the slices in order and applies AdamW. Where a slice is computed does not change a bit,
so two launch modes give identical results:
    fused: one program per model runs every slice and the update, for many steps per launch;
    split: per step, one program per (model, slice) for the gradients, then one per (model, n-chunk) for
           the update.
Fused keeps a model on one SM across steps; split fills the GPU when there are too few models for the
SMs (uniform: 64 models on 132 SMs; configs.use_split decides).

Per slice, over n-chunks of NC features (x is drawn once, in pass 1, through _tile_x, the one call site of
the data, and kept in a global scratch tile [4 BG, n] that passes 2 and 3 read back: 100 KB at n=400, in
L2. Holding it in registers would take 64-128 a thread. Keeping it instead of drawing it in each pass took
uniform from 485 to 465 ms per 1,000 steps (ieee), 312 -> 262 (tf32x3), 171 -> 152 (tf32), geometry
786 -> 754, 527 -> 442, 267 -> 245, predicted by the cost model, H100 SXM; but the H200 measured that scratch
missing L2 where the resident programs hold more than ~14 MB of it, which the model does not price, so
kernel_config x_kept=False - x drawn again in passes 2 and 3, no scratch - is there for a GPU to time):
    pass 1  a  = x W^T, h = a (or ReLU(a): the privileged basis, HRELU)            h stays in registers
    pass 2  z  = h W + b, gz, gh = gz W^T (in registers), pW = h^T gz, pb = sum gz   (written once)
    pass 3  pW += gh^T x          (gh masked by a > 0 with HRELU; pW read back once per slice per chunk)
Untied models (TIED=False: encoder W, hidden bias b_hidden, decoder W_dec (n, m)) take the same passes:
pass 1 adds b_hidden, pass 2 reads the decoder tile D^T [MP, NC] = W_dec[cols, :]^T (strided: W_dec is
row-major n x m) and writes h^T gz to dW_dec's partial (held transposed, [m, n] like W's), pass 3 writes
gh^T x to W's partial without reading it back, and db_hidden = sum gh is one more [m] partial per slice.
Hopper's tf32x3 for the plain model (GZ_KEPT) keeps gz beside x and takes both dW products after pass 2,
64 features a trip, transposed so that they are wgmmas (_wide_dw): predicted uniform 229 -> 188 ms.
Precisions: ieee (tl.dot on CUDA-core FMA), tf32 (tensor cores, ~1e-3 products) and tf32x3 (near fp32
on tensor cores; before 36bee5c it missed the GPU test's float32 bar where sums cancel, today's passes it
with TF32 mmas emulated, bench/README.md: every operand split ONCE into a tf32 high part and remainder by _split, three tf32
products per _dot, added to the running sum in FADD: 9% faster by the cost model than Triton's own "tf32x3", which splits inside each dot).
W and the AdamW moments live in global memory (20 m n bytes per model, L2-resident at these sizes); the
ieee path also keeps W's mirror WT (n, m), written by the update beside W: the FMA tl.dot takes its
operands from unswizzled shared memory, where W's [MP, NC] tile transposed (features contiguous, the
axis pass 1 and gh contract) costs 8-way bank conflicts and WT's [NC, MP] tile none (uniform ieee
604 -> 424 ms per 1,000 steps predicted with conflicts counted, superpos.bench.bank_conflicts).
"""
import triton
import triton.language as tl

from .adamw import adamw_update, load_step_constants
from .philox_data import LANES, batch_block, batch_block_general, batch_start, load_tables
from .specialize import LAUNCH_LOCK, kernel
from .train_small import log_loss


@triton.jit
def _chunk_masks(c, offs_c, n, mask_m):
    """Columns of the n-chunk starting at c, their mask, and the [MP, NC] weight-tile mask."""
    cols = c + offs_c
    mask_c = cols < n
    return cols, mask_c, mask_m[:, None] & mask_c[None, :]


@triton.jit
def _tile_x(draw, cols, mask_c, BG: tl.constexpr, SETS: tl.constexpr, SYMMETRIC: tl.constexpr,
            DATASET: tl.constexpr):
    """The tile's samples [4 BG, NC] (features `cols`) and their validity: the kernel's ONE source of data
    (pass 1 calls it and keeps x for passes 2 and 3, or _pass_x calls it again; a data option is wired
    here and nowhere else). draw: the slice's (seed, t, g0, B, T, n) and model k's table pointers (thr,
    scale, lo, off; then gate, src). Plain data (no sets, unit values, the stream) keeps batch_block's own
    code; the options take philox_data.batch_block_general."""
    seed, t, g0, B, T, n, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr = draw
    if SETS or SYMMETRIC or DATASET:
        tab = load_tables(thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, cols, mask_c, SETS)
        x, valid = batch_block_general(seed, t, g0, B, n, cols, mask_c, tab, batch_start(t, B, T, DATASET), T, BG,
                                       SETS, SYMMETRIC, DATASET)
    else:
        x, valid = batch_block(seed, t, g0, B, n, cols, mask_c, thr_ptr, scale_ptr, BG)
    return x, valid


@triton.jit
def _pass_x(x_at, draw, cols, mask_c, BG: tl.constexpr, SETS: tl.constexpr, SYMMETRIC: tl.constexpr,
            DATASET: tl.constexpr, X_KEPT: tl.constexpr):
    """Passes 2 and 3's x tile [4 BG, NC]: pass 1's, read back from the scratch at x_at (X_KEPT), or drawn
    again by _tile_x (the same values: the same bits downstream)."""
    if X_KEPT:
        x = tl.load(x_at, mask=mask_c[None, :], other=0.0)
    else:
        x, _ = _tile_x(draw, cols, mask_c, BG, SETS, SYMMETRIC, DATASET)
    return x

@triton.jit
def _split(a, PREC: tl.constexpr):
    """(high, low) operand parts: for tf32x3, high = a rounded to the nearest tf32 (10 mantissa bits, by
    integer arithmetic so the interpreter runs it too) and low = a - high (exact), so that high b_hi +
    high b_lo + low b_hi is a with float32 accuracy; other precisions use a itself (low is unused)."""
    if PREC == "tf32x3":
        hi = ((a.to(tl.uint32, bitcast=True) + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
        lo = a - hi
    else:
        hi = a
        lo = a
    return hi, lo


@triton.jit
def _dot(a_hi, a_lo, b_hi, b_lo, acc, PREC: tl.constexpr):
    """acc + a b. tf32x3: three tf32 tensor-core products of parts split once by _split (the small ones
    first) into a fresh accumulator, then added to acc in float32 (FADD, rounded to nearest): the tensor
    cores' own accumulation (reported to truncate) then spans one call's K, not a whole pass (pass 1 and
    gh chained all n features, pass 3 onto pass 2's dW). The fresh chain ends in a dot whose accumulator
    is not a constant zero, so Triton does not fold the add back into it. ieee / tf32: one tl.dot at that
    precision, chained."""
    if PREC == "tf32x3":
        part = tl.dot(a_lo, b_hi, tl.zeros(acc.shape, dtype=tl.float32), input_precision="tf32")
        part = tl.dot(a_hi, b_lo, part, input_precision="tf32")
        acc = acc + tl.dot(a_hi, b_hi, part, input_precision="tf32")
    else:
        acc = tl.dot(a_hi, b_hi, acc, input_precision=PREC)
    return acc


@triton.jit
def _transposed_tile(ptr, m, offs_m, cols, mask_m, mask_c):
    """The [NC, MP] tile (feature, hidden unit) of one model's (n, m) row-major array at ptr: W's mirror WT
    or an untied W_dec. As an FMA-dot operand it is conflict-free in shared memory (hidden units
    contiguous), where tl.trans of W's [MP, NC] tile (features contiguous, the contracted axis) is an
    8-way bank conflict (bench/README.md, "Bank conflicts")."""
    return tl.load(ptr + cols[:, None] * m + offs_m[None, :], mask=mask_c[:, None] & mask_m[None, :], other=0.0)


@triton.jit
def _dec_offsets(m, n, offs_m, cols, TIED: tl.constexpr):
    """Offsets within one model of its decoder tile D^T [MP, NC] (hidden unit, feature): W[:, cols] when
    tied, the transposed W_dec[cols, :] (row-major n x m) when untied. Both hold m n values per model."""
    if TIED:
        off = offs_m[:, None] * n + cols[None, :]
    else:
        off = cols[None, :] * m + offs_m[:, None]
    return off


WIDE_NW = tl.constexpr(64)  # _wide_dw's features per trip: 64 rows make a Hopper wgmma (costmodel.TRIP_COUNTS reads it)


@triton.jit
def _wide_dw(src_ptr, rows, xn, n, offs_m, mask_m, b_hi, b_lo, out_ptr, ADD: tl.constexpr, PREC: tl.constexpr):
    """out [m, n] (+)= src^T b (GZ_KEPT's dW products): src is the slot's scratch tile [4 BG, n] (x or gz, row
    stride xn: n padded to a multiple of WIDE_NW, so that its loads need no mask and take 16 bytes a lane),
    b [4 BG, MP] is split in registers. Per WIDE_NW features the product is taken transposed, [NW, 4 BG] x
    [4 BG, MP]: 64 rows, one wgmma where [MP, 16] products are mma.sync (and need b transposed through
    shared memory). The padded columns are never written (the launcher zeroes them once); they reach only
    rows of the product that the store masks."""
    offs_w = tl.arange(0, WIDE_NW)
    for cw in range(0, n, WIDE_NW):
        colsw = cw + offs_w
        s_hi, s_lo = _split(tl.load(src_ptr + rows[:, None] * xn + colsw[None, :]), PREC)  # [4 BG, NW]
        at = out_ptr + offs_m[:, None] * n + colsw[None, :]
        mo = mask_m[:, None] & (colsw < n)[None, :]
        if ADD:
            acc = tl.trans(tl.load(at, mask=mo, other=0.0))
        else:
            acc = tl.zeros((WIDE_NW, b_hi.shape[1]), dtype=tl.float32)
        tl.store(at, tl.trans(_dot(tl.trans(s_hi), tl.trans(s_lo), b_hi, b_lo, acc, PREC)), mask=mo)


@triton.jit
def _slice_grads(xs_ptr, W_ptr, WT_ptr, b_ptr, Wd_ptr, bh_ptr, pW_ptr, pb_ptr, pWd_ptr, pbh_ptr, lossp_ptr,
                 seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, imp_ptr,
                 k, sl, x_slot, n_slices, t, n, m, B, T, coef,
                 MP: tl.constexpr, NC: tl.constexpr, BG: tl.constexpr,
                 RELU: tl.constexpr, HRELU: tl.constexpr, PREC: tl.constexpr,
                 SETS: tl.constexpr, SYMMETRIC: tl.constexpr, DATASET: tl.constexpr, TABS: tl.constexpr,
                 TIED: tl.constexpr, MIRROR: tl.constexpr, GZ_KEPT: tl.constexpr,
                 X_KEPT: tl.constexpr):
    """Loss sum and gradients of model k's samples [4 BG sl, 4 BG (sl + 1)) at step t (a slice is one
    tile), summed from zero in an order set by the shape alone, into partial slot (k, sl): pW [m, n],
    pb [n], lossp [1] (untied also pWd [m, n], dW_dec transposed, and pbh [m]). h and gh stay in
    registers for the whole slice; dW is written once per slice. Tied models ignore Wd, bh, pWd, pbh.
    WT: W's mirror (n, m) per model; with MIRROR (the launcher's one rule: ieee, the FMA products) read
    instead of W's transposed tile by the products that contract over features (pass 1, and gh for tied
    models; an untied model's gh reads W_dec itself, already (n, m)).
    x is drawn once (pass 1) into the tile's scratch slot x_slot [4 BG, n] and read back by passes 2, 3.
    GZ_KEPT (configs.TILED_SM90_GZ_KEPT: Hopper's tf32x3, the plain model): pass 2 also writes gz into the
    slot (after x), and both dW products run after it over 64-feature chunks, transposed (_wide_dw): pW =
    h^T gz, then pW += gh^T x (h dies before gh is split; the other order predicted 196, not 188, ms at
    uniform). Their products then have 64 rows (Hopper's wgmma, not mma.sync) and pass 2
    holds h in one operand layout, not two. The same sums (in each tf32x3 product the two cross terms
    the other way round): not the generic kernel's bits but its accuracy, and a model's bits are the same
    alone and in a crowd."""
    # model k's arrays and slot (k, sl)'s partials and x tile as scalar (64-bit) base pointers, so that
    # the tile offsets kept across the loops are 32-bit (one model's m n fits; K m n may not)
    W_ptr += k * m * n
    WT_ptr += k * m * n
    Wd_ptr += k * m * n
    o_b = k * n  # thr, scale, lo, off, b, imp: (K, n)
    slot = k * n_slices + sl
    pW_ptr += slot * m * n
    pWd_ptr += slot * m * n
    pb_ptr += slot * n
    xn = ((n + WIDE_NW - 1) // WIDE_NW) * WIDE_NW if GZ_KEPT else n  # the scratch's row stride (_wide_dw)
    xs_ptr += x_slot * (2 if GZ_KEPT else 1) * (BG * LANES) * xn
    gzs_ptr = xs_ptr + (BG * LANES) * xn  # gz's tile (GZ_KEPT)
    offs_m = tl.arange(0, MP)
    offs_c = tl.arange(0, NC)
    mask_m = offs_m < m
    o_w = offs_m[:, None] * n  # [MP, 1] row starts of W and of a partial slot (add columns)
    seed = tl.load(seed_ptr + k)
    g0 = sl * BG
    # what _tile_x draws the slice's x from (every pass that draws it: one tuple, not twelve arguments)
    draw = (seed, t, g0, B, T, n, thr_ptr + o_b, scale_ptr + o_b, lo_ptr + o_b, off_ptr + o_b, gate_ptr, src_ptr)
    rows = tl.arange(0, BG * LANES)
    o_x = rows[:, None] * xn  # [4 BG, 1] row starts of the tile's x (add columns)
    row_ok = (g0 * LANES + rows < B)[:, None]
    # pass 1: x drawn and kept; a = x W^T (h = ReLU(a) with a hidden ReLU)
    a = tl.zeros((BG * LANES, MP), dtype=tl.float32)
    for c in range(0, n, NC):
        cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
        if MIRROR:
            wT_hi = _transposed_tile(WT_ptr, m, offs_m, cols, mask_m, mask_c)  # [NC, MP]
            wT_lo = wT_hi
        else:  # tensor-core operands take a swizzled shared layout: the transposed tile costs nothing
            w_hi, w_lo = _split(tl.load(W_ptr + o_w + cols[None, :], mask=mw, other=0.0), PREC)  # [MP, NC]
            wT_hi = tl.trans(w_hi)
            wT_lo = tl.trans(w_lo)
        x, valid = _tile_x(draw, cols, mask_c, BG, SETS, SYMMETRIC, DATASET)
        if X_KEPT:
            tl.store(xs_ptr + o_x + cols[None, :], x, mask=mask_c[None, :])
        x_hi, x_lo = _split(x, PREC)
        a = _dot(x_hi, x_lo, wT_hi, wT_lo, a, PREC)
    if not TIED:
        a += tl.load(bh_ptr + k * m + offs_m, mask=mask_m, other=0.0)[None, :]
    h = tl.maximum(a, 0.0) if HRELU else a
    tl.debug_barrier()  # x's tile, stored by every thread, is read back in other layouts
    h_hi, h_lo = _split(h, PREC)
    if not GZ_KEPT:
        hT_hi = tl.trans(h_hi)
        hT_lo = tl.trans(h_lo)
    # pass 2: outputs, loss, gz; gh = gz D; db = sum gz; h^T gz (tied: pW; untied: pWd = dW_dec^T) here or,
    # with GZ_KEPT, in a loop of its own after it
    dec_ptr = W_ptr
    decT_ptr = WT_ptr  # D^T's [NC, MP] tiles for gh (MIRROR): W's mirror, or an untied model's W_dec as it is
    pdec_ptr = pW_ptr
    if not TIED:
        dec_ptr = Wd_ptr
        decT_ptr = Wd_ptr
        pdec_ptr = pWd_ptr
    loss = 0.0
    gh = tl.zeros((BG * LANES, MP), dtype=tl.float32)
    for c in range(0, n, NC):
        cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
        w_hi, w_lo = _split(tl.load(dec_ptr + _dec_offsets(m, n, offs_m, cols, TIED), mask=mw, other=0.0), PREC)
        bc = tl.load(b_ptr + o_b + cols, mask=mask_c, other=0.0)
        imp = tl.load(imp_ptr + o_b + cols, mask=mask_c, other=0.0)
        x_at = xs_ptr + o_x + cols[None, :]
        x = _pass_x(x_at, draw, cols, mask_c, BG, SETS, SYMMETRIC, DATASET, X_KEPT)
        valid = row_ok & mask_c[None, :]
        z = _dot(h_hi, h_lo, w_hi, w_lo, tl.zeros((BG * LANES, NC), dtype=tl.float32), PREC) + bc[None, :]
        y = tl.maximum(z, 0.0) if RELU else z
        diff = tl.where(valid, y - (tl.abs(x) if TABS else x), 0.0)
        wdiff = imp[None, :] * diff
        loss += tl.sum(tl.sum(wdiff * diff, axis=1), axis=0)
        gz = coef * wdiff
        if RELU:
            gz = tl.where(z > 0.0, gz, 0.0)
        gz_hi, gz_lo = _split(gz, PREC)
        if MIRROR:
            dT = _transposed_tile(decT_ptr, m, offs_m, cols, mask_m, mask_c)
            gh = _dot(gz_hi, gz_lo, dT, dT, gh, PREC)  # [4 BG, MP]
        else:
            gh = _dot(gz_hi, gz_lo, tl.trans(w_hi), tl.trans(w_lo), gh, PREC)
        if GZ_KEPT:
            tl.store(x_at + (BG * LANES) * xn, gz, mask=mask_c[None, :])  # x's addresses + a scalar
        else:
            dW = _dot(hT_hi, hT_lo, gz_hi, gz_lo, tl.zeros((MP, NC), dtype=tl.float32), PREC)
            tl.store(pdec_ptr + o_w + cols[None, :], dW, mask=mw)
        tl.store(pb_ptr + cols, tl.sum(gz, axis=0), mask=mask_c)
    tl.store(lossp_ptr + slot, loss)
    if HRELU:
        gh = tl.where(a > 0.0, gh, 0.0)
    if not TIED:
        tl.store(pbh_ptr + slot * m + offs_m, tl.sum(gh, axis=0), mask=mask_m)
    tl.debug_barrier()  # x's (and gz's) tile, stored by every thread, is read back in other layouts
    if GZ_KEPT:  # pW = h^T gz, then pW += gh^T x (untied: pWd = h^T gz, pW = gh^T x), 64 features a trip
        _wide_dw(gzs_ptr, rows, xn, n, offs_m, mask_m, h_hi, h_lo, pdec_ptr, False, PREC)
        tl.debug_barrier()  # pW, stored by every thread, is read back
        gh_hi, gh_lo = _split(gh, PREC)
        _wide_dw(xs_ptr, rows, xn, n, offs_m, mask_m, gh_hi, gh_lo, pW_ptr, TIED, PREC)
    else:
        gh_hi, gh_lo = _split(gh, PREC)
        ghT_hi = tl.trans(gh_hi)
        ghT_lo = tl.trans(gh_lo)
        # pass 3: pW += gh^T x (untied: pW = gh^T x, the encoder's whole gradient)
        for c in range(0, n, NC):
            cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
            x = _pass_x(xs_ptr + o_x + cols[None, :], draw, cols, mask_c, BG, SETS, SYMMETRIC, DATASET, X_KEPT)
            x_hi, x_lo = _split(x, PREC)
            if TIED:
                dW = tl.load(pW_ptr + o_w + cols[None, :], mask=mw, other=0.0)
            else:
                dW = tl.zeros((MP, NC), dtype=tl.float32)
            tl.store(pW_ptr + o_w + cols[None, :], _dot(ghT_hi, ghT_lo, x_hi, x_lo, dW, PREC), mask=mw)
    tl.debug_barrier()


@triton.jit
def _log_slices_loss(lossp_ptr, loss_ptr, k, n_slices, t, total_steps, log_every, n_log, inv_bn):
    """Model k at step t: the slices' loss sums added in order (from zero), logged as the mean."""
    loss = 0.0
    for sl in range(n_slices):
        loss += tl.load(lossp_ptr + k * n_slices + sl)
    log_loss(loss_ptr + k * n_log, loss * inv_bn, t, total_steps, log_every, n_log)


@triton.jit
def _slice_sum(part_ptr, k, n_slices, stride, offs, mask, acc):
    """acc + model k's partials at offsets `offs` of each slot (slots `stride` apart), added in slice order."""
    for sl in range(n_slices):
        acc += tl.load(part_ptr + (k * n_slices + sl) * stride + offs, mask=mask, other=0.0)
    return acc


@triton.jit
def _adamw_at(P_ptr, mP_ptr, vP_ptr, p, mask, g, consts, beta1, beta2, eps):
    """AdamW (this step's constants: load_step_constants's tuple) on the parameter elements at offsets p,
    gradient g; moments in place."""
    decay, step_size, bc2_sqrt, omb1, omb2 = consts
    P, mP, vP = adamw_update(tl.load(P_ptr + p, mask=mask), g, tl.load(mP_ptr + p, mask=mask),
                             tl.load(vP_ptr + p, mask=mask), decay, step_size, bc2_sqrt, omb1, omb2, beta1, beta2,
                             eps)
    tl.store(P_ptr + p, P, mask=mask)
    tl.store(mP_ptr + p, mP, mask=mask)
    tl.store(vP_ptr + p, vP, mask=mask)
    return P


@triton.jit
def _update_chunk(W_ptr, WT_ptr, b_ptr, Wd_ptr, mW_ptr, vW_ptr, mb_ptr, vb_ptr, mWd_ptr, vWd_ptr, pW_ptr, pb_ptr,
                  pWd_ptr, consts_ptr, k, c, n_slices, t, n, m, beta1, beta2, eps,
                  MP: tl.constexpr, NC: tl.constexpr, TIED: tl.constexpr, MIRROR: tl.constexpr):
    """Model k at step t, features [c, c + NC): add the slices' partials in order (from zero), apply AdamW
    to W, b (and, untied, W_dec's rows of those features); with MIRROR, W's new values also go to its
    mirror WT (n, m) per model, which the ieee gradient kernel reads."""
    offs_m = tl.arange(0, MP)
    cols, mask_c, mw = _chunk_masks(c, tl.arange(0, NC), n, offs_m < m)
    consts = load_step_constants(consts_ptr, t)
    o_p = offs_m[:, None] * n + cols[None, :]  # [MP, NC] within a partial slot (and within W)
    gW = _slice_sum(pW_ptr, k, n_slices, m * n, o_p, mw, tl.zeros((MP, NC), dtype=tl.float32))
    W = _adamw_at(W_ptr, mW_ptr, vW_ptr, k * m * n + o_p, mw, gW, consts, beta1, beta2, eps)
    if MIRROR:
        tl.store(WT_ptr + k * m * n + _dec_offsets(m, n, offs_m, cols, False), W, mask=mw)  # W_dec's layout
    gb = _slice_sum(pb_ptr, k, n_slices, n, cols, mask_c, tl.zeros((NC,), dtype=tl.float32))
    _adamw_at(b_ptr, mb_ptr, vb_ptr, k * n + cols, mask_c, gb, consts, beta1, beta2, eps)
    if not TIED:
        gD = _slice_sum(pWd_ptr, k, n_slices, m * n, o_p, mw, tl.zeros((MP, NC), dtype=tl.float32))
        _adamw_at(Wd_ptr, mWd_ptr, vWd_ptr, k * m * n + _dec_offsets(m, n, offs_m, cols, TIED), mw, gD, consts,
                  beta1, beta2, eps)


@triton.jit
def _update_hidden_bias(bh_ptr, mbh_ptr, vbh_ptr, pbh_ptr, consts_ptr, k, n_slices, t, m, beta1, beta2, eps,
                        MP: tl.constexpr):
    """Untied model k at step t: b_hidden's slices added in order, AdamW."""
    offs_m = tl.arange(0, MP)
    mask_m = offs_m < m
    consts = load_step_constants(consts_ptr, t)
    g = _slice_sum(pbh_ptr, k, n_slices, m, offs_m, mask_m, tl.zeros((MP,), dtype=tl.float32))
    _adamw_at(bh_ptr, mbh_ptr, vbh_ptr, k * m + offs_m, mask_m, g, consts, beta1, beta2, eps)


@kernel
def _train_tiled_kernel(xs_ptr, W_in, b_in, Wd_in, bh_in, W_out, WT_ptr, b_out, Wd_out, bh_out,
                        mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                        mWd_ptr, vWd_ptr, mbh_ptr, vbh_ptr, pW_ptr, pb_ptr, pWd_ptr, pbh_ptr, lossp_ptr,
                        seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, imp_ptr, consts_ptr, loss_ptr,
                        n, m, B, T, t0, n_steps, total_steps, log_every, n_log, n_slices,
                        coef, inv_bn, beta1, beta2, eps,
                        MP: tl.constexpr, NC: tl.constexpr, BG: tl.constexpr,
                        RELU: tl.constexpr, HRELU: tl.constexpr, PREC: tl.constexpr,
                        SETS: tl.constexpr, SYMMETRIC: tl.constexpr, DATASET: tl.constexpr, TABS: tl.constexpr,
                        TIED: tl.constexpr, MIRROR: tl.constexpr, GZ_KEPT: tl.constexpr,
                        X_KEPT: tl.constexpr):
    """Fused mode: program k advances model k by n_steps from t0 (the *_out parameters become its working
    copy; WT: W's mirror, W_in transposed, kept in step by the update). Tied models ignore the Wd, bh
    pointers and their moments and partials."""
    k = tl.program_id(0).to(tl.int64)
    offs_m = tl.arange(0, MP)
    offs_c = tl.arange(0, NC)
    mask_m = offs_m < m
    o_w = k * m * n + offs_m[:, None] * n
    for c in range(0, n, NC):
        cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
        tl.store(W_out + o_w + cols[None, :], tl.load(W_in + o_w + cols[None, :], mask=mw), mask=mw)
        tl.store(b_out + k * n + cols, tl.load(b_in + k * n + cols, mask=mask_c), mask=mask_c)
        if not TIED:  # W_dec holds m n values per model too: copied by the same flat offsets
            tl.store(Wd_out + o_w + cols[None, :], tl.load(Wd_in + o_w + cols[None, :], mask=mw), mask=mw)
    if not TIED:
        tl.store(bh_out + k * m + offs_m, tl.load(bh_in + k * m + offs_m, mask=mask_m), mask=mask_m)
    tl.debug_barrier()
    for s in range(n_steps):
        for sl in range(n_slices):
            _slice_grads(xs_ptr, W_out, WT_ptr, b_out, Wd_out, bh_out, pW_ptr, pb_ptr, pWd_ptr, pbh_ptr, lossp_ptr,
                         seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, imp_ptr,
                         k, sl, k, n_slices, t0 + s, n, m, B, T, coef, MP, NC, BG, RELU, HRELU, PREC,
                         SETS, SYMMETRIC, DATASET, TABS, TIED, MIRROR, GZ_KEPT, X_KEPT)
        tl.debug_barrier()
        _log_slices_loss(lossp_ptr, loss_ptr, k, n_slices, t0 + s, total_steps, log_every, n_log, inv_bn)
        for c in range(0, n, NC):
            _update_chunk(W_out, WT_ptr, b_out, Wd_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr, mWd_ptr, vWd_ptr, pW_ptr,
                          pb_ptr, pWd_ptr, consts_ptr, k, c, n_slices, t0 + s, n, m, beta1, beta2, eps, MP, NC, TIED,
                          MIRROR)
        if not TIED:
            _update_hidden_bias(bh_out, mbh_ptr, vbh_ptr, pbh_ptr, consts_ptr, k, n_slices, t0 + s, m,
                                beta1, beta2, eps, MP)
        tl.debug_barrier()


@kernel
def _tiled_grads_kernel(xs_ptr, W_ptr, WT_ptr, b_ptr, Wd_ptr, bh_ptr, pW_ptr, pb_ptr, pWd_ptr, pbh_ptr, lossp_ptr,
                        seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, imp_ptr,
                        t, n, m, B, T, n_slices, coef,
                        MP: tl.constexpr, NC: tl.constexpr, BG: tl.constexpr,
                        RELU: tl.constexpr, HRELU: tl.constexpr, PREC: tl.constexpr,
                        SETS: tl.constexpr, SYMMETRIC: tl.constexpr, DATASET: tl.constexpr, TABS: tl.constexpr,
                        TIED: tl.constexpr, MIRROR: tl.constexpr, GZ_KEPT: tl.constexpr,
                        X_KEPT: tl.constexpr):
    """Split mode, step t: program (k, sl) computes slice sl of model k."""
    _slice_grads(xs_ptr, W_ptr, WT_ptr, b_ptr, Wd_ptr, bh_ptr, pW_ptr, pb_ptr, pWd_ptr, pbh_ptr, lossp_ptr,
                 seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, imp_ptr,
                 tl.program_id(0).to(tl.int64), tl.program_id(1),
                 tl.program_id(0).to(tl.int64) * n_slices + tl.program_id(1), n_slices, t, n, m, B, T, coef,
                 MP, NC, BG, RELU, HRELU, PREC, SETS, SYMMETRIC, DATASET, TABS, TIED, MIRROR, GZ_KEPT, X_KEPT)


@kernel
def _tiled_update_kernel(W_ptr, WT_ptr, b_ptr, Wd_ptr, bh_ptr, mW_ptr, vW_ptr, mb_ptr, vb_ptr, mWd_ptr, vWd_ptr,
                         mbh_ptr, vbh_ptr, pW_ptr, pb_ptr, pWd_ptr, pbh_ptr, lossp_ptr, consts_ptr,
                         loss_ptr, t, n, m, n_slices, total_steps, log_every, n_log, inv_bn, beta1, beta2, eps,
                         MP: tl.constexpr, NC: tl.constexpr, TIED: tl.constexpr, MIRROR: tl.constexpr):
    """Split mode, step t: program (k, j) updates features [j NC, (j + 1) NC) of model k (and j = 0 logs
    its loss and updates an untied model's b_hidden): NC-feature chunks are independent, so the update
    fills the GPU too."""
    k = tl.program_id(0).to(tl.int64)
    if tl.program_id(1) == 0:
        _log_slices_loss(lossp_ptr, loss_ptr, k, n_slices, t, total_steps, log_every, n_log, inv_bn)
        if not TIED:
            _update_hidden_bias(bh_ptr, mbh_ptr, vbh_ptr, pbh_ptr, consts_ptr, k, n_slices, t, m, beta1, beta2,
                                eps, MP)
    _update_chunk(W_ptr, WT_ptr, b_ptr, Wd_ptr, mW_ptr, vW_ptr, mb_ptr, vb_ptr, mWd_ptr, vWd_ptr, pW_ptr, pb_ptr,
                  pWd_ptr, consts_ptr, k, tl.program_id(1) * NC, n_slices, t, n, m, beta1, beta2, eps, MP, NC, TIED,
                  MIRROR)


def scratch_shapes(cfg, n: int, m: int, batch: int, split: bool, tied: bool) -> dict:
    """Per model, the shape of each float32 temporary train_tiled allocates (the driver sizes chunks by
    them): per-slice partial gradients and loss, x's scratch (and gz's, GZ_KEPT: rows padded to WIDE_NW
    features) one slot per slice in split mode, and W's mirror for the ieee (FMA) products."""
    n_slices = triton.cdiv(batch, cfg.slice_size)
    xn = -(-n // WIDE_NW.value) * WIDE_NW.value if cfg.gz_kept else n  # row stride: _slice_grads's xn
    shapes = {"pW": (n_slices, m, n), "pb": (n_slices, n), "lossp": (n_slices,),
              "xs": (n_slices if split else 1, 2 if cfg.gz_kept else 1, cfg.slice_size, xn) if cfg.x_kept else (1,)}
    if not tied:
        shapes.update(pWd=(n_slices, m, n), pbh=(n_slices, m))  # dW_dec^T per slice, [m, n] like pW
    if cfg.input_precision == "ieee":
        shapes["WT"] = (n, m)
    return shapes


def train_tiled(state, data, consts, loss, t0: int, n_steps: int, total_steps: int, log_every: int,
                hyper, cfg, split: bool = False):
    """Launch: advance every model by n_steps from step t0 (state/data: kernels.buffers); `split` picks
    the mode (configs.use_split), which changes the speed and not a bit of the result."""
    import torch
    K, m, n = state.W_in.shape
    B = data.batch_size
    n_slices = triton.cdiv(B, cfg.slice_size)
    tied = state.Wd_in is None
    shapes = scratch_shapes(cfg, n, m, B, split, tied)

    def scratch(name, fill=torch.empty):
        return fill((K, *shapes[name]), dtype=torch.float32, device=state.W_in.device)
    pW, pb, lossp = scratch("pW"), scratch("pb"), scratch("lossp")
    if tied:  # the kernels never read the untied pointers: any tensor stands in for them
        pWd, pbh = pW, pb
        untied_in, untied_out, untied_moments = (state.W_in, state.b_in), (state.W_out, state.b_out), (state.mW,) * 4
    else:
        pWd, pbh = scratch("pWd"), scratch("pbh")
        untied_in, untied_out = (state.Wd_in, state.bh_in), (state.Wd_out, state.bh_out)
        untied_moments = (state.mWd, state.vWd, state.mbh, state.vbh)
    T = data.dataset_size or 1  # (any value without a dataset)
    # W's mirror (K, n, m): read by the ieee (FMA) products, whose shared-memory operands are unswizzled
    # (_transposed_tile); tensor-core operands are swizzled, so the other precisions never read it. The
    # kernels take this rule as their MIRROR constexpr: decided here only
    mirror = cfg.input_precision == "ieee"
    gz_kept = cfg.gz_kept  # gz kept beside x, the dW products over 64-feature chunks (configs.TILED_SM90_GZ_KEPT)
    WT = state.W_in.transpose(1, 2).contiguous() if mirror else state.W_in
    # x's scratch: one tile per program (fused: a model's slices reuse its tile, L2-resident; split: one
    # per (model, slice), the size of the batch). Zeros where rows are padded: the padded columns, never
    # written, then reach the product as 0, not as whatever the memory held (only masked-off rows of it,
    # but a NaN there is noise in the emulation)
    xs = scratch("xs", torch.zeros if shapes["xs"][-1] > n else torch.empty)  # x's tile (then gz's)
    tables = (data.lo, data.off, data.gate, data.src)  # rng.py's set tables (read only with SETS)
    options = dict(SETS=data.sets, SYMMETRIC=data.symmetric, DATASET=data.dataset_size is not None,
                   TABS=data.target_abs, TIED=tied, MIRROR=mirror, GZ_KEPT=gz_kept, X_KEPT=cfg.x_kept)
    blocks = dict(MP=cfg.MP, NC=cfg.NP, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                  enable_fp_fusion=cfg.fp_fusion)
    if not split:  # maxnreg 255 unless a kernel_config caps it: Triton 3.9's ptxas otherwise capped the
        with LAUNCH_LOCK:  # fused kernel at 168 registers (MP=16 tf32: 32 B spilled)
            _train_tiled_kernel[(K,)](xs,
                state.W_in, state.b_in, *untied_in, state.W_out, WT, state.b_out, *untied_out,
                state.mW, state.vW, state.mb, state.vb, *untied_moments, pW, pb, pWd, pbh, lossp,
                data.seed, data.thr, data.scale, *tables, data.importance, consts, loss,
                n, m, B, T, t0, n_steps, total_steps, log_every, loss.shape[1], n_slices,
                hyper.coef, hyper.inv_bn, hyper.beta1, hyper.beta2, hyper.eps,
                BG=cfg.BG, RELU=data.relu, HRELU=data.hidden_relu, PREC=cfg.input_precision, **options, **blocks,
                maxnreg=cfg.fused_max_registers)
        return
    state.W_out.copy_(state.W_in)
    state.b_out.copy_(state.b_in)
    if not tied:
        state.Wd_out.copy_(state.Wd_in)
        state.bh_out.copy_(state.bh_in)
    for t in range(t0, t0 + n_steps):
        with LAUNCH_LOCK:
            _tiled_grads_kernel[(K, n_slices)](xs,
                state.W_out, WT, state.b_out, *untied_out, pW, pb, pWd, pbh, lossp,
                data.seed, data.thr, data.scale, *tables, data.importance,
                t, n, m, B, T, n_slices, hyper.coef,
                BG=cfg.BG, RELU=data.relu, HRELU=data.hidden_relu, PREC=cfg.input_precision, **options,
                **(blocks | cfg.register_cap()))
            _tiled_update_kernel[(K, triton.cdiv(n, cfg.NP))](
                state.W_out, WT, state.b_out, *untied_out, state.mW, state.vW, state.mb, state.vb, *untied_moments,
                pW, pb, pWd, pbh, lossp, consts, loss,
                t, n, m, n_slices, total_steps, log_every, loss.shape[1], hyper.inv_bn, hyper.beta1, hyper.beta2,
                hyper.eps, TIED=tied, MIRROR=mirror, **blocks)
