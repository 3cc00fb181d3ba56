"""Fused training of tiny models (m*n small): one program per model, W and AdamW state in registers.

Two paths (configs.choose_config picks): the tiny path (_train_tiny: unrolled over exact n and m, each
thread owns whole samples) and the block path (_train_blocks: [BG, MP, NP] blocks, for n up to ~512).

Per step, inside the kernel: generate the batch in registers from Philox (philox_data), forward
x' = act(W^T W x + b) (or, by constexprs, the privileged-basis / untied families of superpos.reference,
toward x or |x|), importance-weighted MSE backward reduced over the batch, AdamW in place.
Nothing but the logged loss touches device memory between the first load and the final store.
"""
import triton
import triton.language as tl

from .adamw import adamw_update, load_step_constants
from .philox_data import (LANES, batch_start, dataset_word, group_features, load_tables, philox_words_wide,
                          tiny_features)
from .specialize import LAUNCH_LOCK, kernel


@triton.jit
def log_loss(loss_ptr, loss, t, total_steps, log_every, n_log):
    """Record the loss at steps t % log_every == 0 and at the last step (TrainConfig.logged_steps)."""
    on_grid = (t % log_every) == 0
    idx = tl.where(on_grid, t // log_every, n_log - 1)
    tl.store(loss_ptr + idx, loss, mask=on_grid | (t == total_steps - 1))


@triton.jit
def _is_logged(t, total_steps, log_every):
    """Whether step t's loss is recorded (TrainConfig.logged_steps): only then is it summed."""
    return ((t % log_every) == 0) | (t == total_steps - 1)


@triton.jit
def _logged_at(since, t, total_steps):
    """_is_logged from `since` = t mod log_every, kept as a running count (no division per step)."""
    return (since == 0) | (t == total_steps - 1)


@triton.jit
def _lane_grads(acc_w, acc_d, acc_b, acc_h, acc_l, x, valid, W, D, bh, bias, imp, coef,
                RELU: tl.constexpr, HRELU: tl.constexpr, TIED: tl.constexpr, ABS: tl.constexpr,
                LOSS: tl.constexpr):
    """Add the loss and gradient terms of one lane's samples (features x [BG, NP], zero where not valid)
    to the per-sample accumulators acc_l [BG], acc_w [BG, MP, NP] (dW), acc_b [BG, NP] (db) and, untied,
    acc_d [BG, MP, NP] (dW_dec, transposed like D) and acc_h [BG, MP] (db_hidden): nothing is reduced
    over the samples here (that happens once per step). D [MP, NP] is the decoder (W itself when tied)."""
    a = tl.sum(x[:, None, :] * W[None, :, :], axis=2)  # [BG, MP]
    if not TIED:
        a = a + bh[None, :]
    h = tl.maximum(a, 0.0) if HRELU else a
    z = tl.sum(h[:, :, None] * D[None, :, :], axis=1) + bias[None, :]  # [BG, NP]
    y = tl.maximum(z, 0.0) if RELU else z
    diff = tl.where(valid[:, None], y - (tl.abs(x) if ABS else x), 0.0)
    wdiff = imp[None, :] * diff
    if LOSS:
        acc_l += tl.sum(wdiff * diff, axis=1)
    gz = coef * wdiff
    if RELU:
        gz = tl.where(z > 0.0, gz, 0.0)
    gh = tl.sum(gz[:, None, :] * D[None, :, :], axis=2)  # [BG, MP]
    if HRELU:
        gh = tl.where(a > 0.0, gh, 0.0)
    if TIED:
        acc_w += h[:, :, None] * gz[:, None, :] + gh[:, :, None] * x[:, None, :]
    else:
        acc_w += gh[:, :, None] * x[:, None, :]
        acc_d += h[:, :, None] * gz[:, None, :]
        acc_h += gh
    return acc_w, acc_d, acc_b + gz, acc_h, acc_l


@triton.jit
def _block_step_sums(seed, t, n, B, T, offs_n, mask_n, tab, W, D, bh, bias, imp, coef,
                     MP: tl.constexpr, NP: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr,
                     HRELU: tl.constexpr, TIED: tl.constexpr, ABS: tl.constexpr, SETS: tl.constexpr,
                     SYMMETRIC: tl.constexpr, DATASET: tl.constexpr, LOSS: tl.constexpr):
    """One step's (loss, dW [MP, NP], db [NP], dW_dec^T [MP, NP], db_hidden [MP]) batch sums: per-sample
    slot accumulation over the tiles and the four lanes, one reduction over the BG slots at the end. The
    order is fixed by (MP, NP, BG). Untied sums are zero-size stand-ins when TIED."""
    acc_w = tl.zeros((BG, MP, NP), dtype=tl.float32)
    acc_b = tl.zeros((BG, NP), dtype=tl.float32)
    acc_l = tl.zeros((BG,), dtype=tl.float32)
    if TIED:
        acc_d = tl.zeros((1, 1, 1), dtype=tl.float32)
        acc_h = tl.zeros((1, 1), dtype=tl.float32)
    else:
        acc_d = tl.zeros((BG, MP, NP), dtype=tl.float32)
        acc_h = tl.zeros((BG, MP), dtype=tl.float32)
    first = batch_start(t, B, T, DATASET)
    groups = (B + LANES - 1) // LANES
    for g0 in range(0, groups, BG):
        g = g0 + tl.arange(0, BG)  # [BG]
        x0, x1, x2, x3 = group_features(seed, t, g, offs_n, n, tab, first, T, SETS, SYMMETRIC, DATASET)
        acc_w, acc_d, acc_b, acc_h, acc_l = _lane_grads(
            acc_w, acc_d, acc_b, acc_h, acc_l, _valid_rows(x0, g, 0, B, mask_n, SYMMETRIC), (g * LANES) < B,
            W, D, bh, bias, imp, coef, RELU, HRELU, TIED, ABS, LOSS)
        acc_w, acc_d, acc_b, acc_h, acc_l = _lane_grads(
            acc_w, acc_d, acc_b, acc_h, acc_l, _valid_rows(x1, g, 1, B, mask_n, SYMMETRIC), (g * LANES + 1) < B,
            W, D, bh, bias, imp, coef, RELU, HRELU, TIED, ABS, LOSS)
        acc_w, acc_d, acc_b, acc_h, acc_l = _lane_grads(
            acc_w, acc_d, acc_b, acc_h, acc_l, _valid_rows(x2, g, 2, B, mask_n, SYMMETRIC), (g * LANES + 2) < B,
            W, D, bh, bias, imp, coef, RELU, HRELU, TIED, ABS, LOSS)
        acc_w, acc_d, acc_b, acc_h, acc_l = _lane_grads(
            acc_w, acc_d, acc_b, acc_h, acc_l, _valid_rows(x3, g, 3, B, mask_n, SYMMETRIC), (g * LANES + 3) < B,
            W, D, bh, bias, imp, coef, RELU, HRELU, TIED, ABS, LOSS)
    if TIED:
        dD = acc_d
        dbh = acc_h
    else:
        dD = tl.sum(acc_d, axis=0)
        dbh = tl.sum(acc_h, axis=0)
    return tl.sum(acc_l, axis=0), tl.sum(acc_w, axis=0), tl.sum(acc_b, axis=0), dD, dbh


@triton.jit
def _valid_rows(x, g, lane, B, mask_n, SYMMETRIC: tl.constexpr):
    """Zero the features of samples >= B (and, symmetric, of padded features: 2 * 0 - 1 is not 0)."""
    valid = (g * LANES + lane) < B  # [BG]
    if SYMMETRIC:
        return tl.where(valid[:, None] & mask_n[None, :], x, 0.0)
    return tl.where(valid[:, None], x, 0.0)


@triton.jit
def _store_block(p_out, m_ptr, v_ptr, offs, mask, p, mp, vp):
    """A parameter block and its two AdamW moments, written back after the last step."""
    tl.store(p_out + offs, p, mask=mask)
    tl.store(m_ptr + offs, mp, mask=mask)
    tl.store(v_ptr + offs, vp, mask=mask)


@triton.jit
def _train_blocks(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                  Wd_in, bh_in, Wd_out, bh_out, mWd_ptr, vWd_ptr, mbh_ptr, vbh_ptr,
                  seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, imp_ptr, consts_ptr, loss_ptr,
                  n, m, B, T, t0, n_steps, total_steps, log_every, n_log,
                  coef, inv_bn, beta1, beta2, eps,
                  MP: tl.constexpr, NP: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr,
                  HRELU: tl.constexpr, TIED: tl.constexpr, ABS: tl.constexpr, SETS: tl.constexpr,
                  SYMMETRIC: tl.constexpr, DATASET: tl.constexpr):
    k = tl.program_id(0).to(tl.int64)
    offs_m = tl.arange(0, MP)
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < n
    mask_m = offs_m < m
    mask_w = mask_m[:, None] & mask_n[None, :]
    o_w = k * m * n + offs_m[:, None] * n + offs_n[None, :]  # [MP, NP]
    o_b = k * n + offs_n  # [NP]
    W = tl.load(W_in + o_w, mask=mask_w, other=0.0)
    mW = tl.load(mW_ptr + o_w, mask=mask_w, other=0.0)
    vW = tl.load(vW_ptr + o_w, mask=mask_w, other=0.0)
    bias = tl.load(b_in + o_b, mask=mask_n, other=0.0)
    mb = tl.load(mb_ptr + o_b, mask=mask_n, other=0.0)
    vb = tl.load(vb_ptr + o_b, mask=mask_n, other=0.0)
    imp = tl.load(imp_ptr + o_b, mask=mask_n, other=0.0)
    tab = load_tables(thr_ptr + k * n, scale_ptr + k * n, lo_ptr + k * n, off_ptr + k * n, gate_ptr, src_ptr,
                      offs_n, mask_n, SETS)
    if TIED:
        o_d = o_w
        D = W
        mD = mW
        vD = vW
        o_h = offs_m
        bh = tl.zeros((MP,), dtype=tl.float32)
        mbh = bh
        vbh = bh
    else:  # the decoder W_dec (K, n, m) held transposed, [MP, NP] like W; b_hidden (K, m)
        o_d = k * n * m + offs_n[None, :] * m + offs_m[:, None]
        D = tl.load(Wd_in + o_d, mask=mask_w, other=0.0)
        mD = tl.load(mWd_ptr + o_d, mask=mask_w, other=0.0)
        vD = tl.load(vWd_ptr + o_d, mask=mask_w, other=0.0)
        o_h = k * m + offs_m
        bh = tl.load(bh_in + o_h, mask=mask_m, other=0.0)
        mbh = tl.load(mbh_ptr + o_h, mask=mask_m, other=0.0)
        vbh = tl.load(vbh_ptr + o_h, mask=mask_m, other=0.0)
    seed = tl.load(seed_ptr + k)
    for s in range(n_steps):
        t = t0 + s
        if _is_logged(t, total_steps, log_every):
            loss, dW, db, dD, dbh = _block_step_sums(seed, t, n, B, T, offs_n, mask_n, tab, W, D, bh, bias, imp,
                                                     coef, MP, NP, BG, RELU, HRELU, TIED, ABS, SETS, SYMMETRIC,
                                                     DATASET, True)
        else:
            loss, dW, db, dD, dbh = _block_step_sums(seed, t, n, B, T, offs_n, mask_n, tab, W, D, bh, bias, imp,
                                                     coef, MP, NP, BG, RELU, HRELU, TIED, ABS, SETS, SYMMETRIC,
                                                     DATASET, False)
        log_loss(loss_ptr + k * n_log, loss * inv_bn, t, total_steps, log_every, n_log)
        decay, step_size, bc2_sqrt, omb1, omb2 = load_step_constants(consts_ptr, t)
        W, mW, vW = adamw_update(W, dW, mW, vW, decay, step_size, bc2_sqrt, omb1, omb2, beta1, beta2, eps)
        bias, mb, vb = adamw_update(bias, db, mb, vb, decay, step_size, bc2_sqrt, omb1, omb2, beta1, beta2, eps)
        if TIED:
            D = W
        else:
            D, mD, vD = adamw_update(D, dD, mD, vD, decay, step_size, bc2_sqrt, omb1, omb2, beta1, beta2, eps)
            bh, mbh, vbh = adamw_update(bh, dbh, mbh, vbh, decay, step_size, bc2_sqrt, omb1, omb2, beta1, beta2, eps)
    _store_block(W_out, mW_ptr, vW_ptr, o_w, mask_w, W, mW, vW)
    _store_block(b_out, mb_ptr, vb_ptr, o_b, mask_n, bias, mb, vb)
    if not TIED:
        _store_block(Wd_out, mWd_ptr, vWd_ptr, o_d, mask_w, D, mD, vD)
        _store_block(bh_out, mbh_ptr, vbh_ptr, o_h, mask_m, bh, mbh, vbh)


# --- Tiny models (n <= TINY_MAX_N, see configs): one thread owns whole samples ----------------------
# Every thread holds the model's parameters as values (tuples unrolled over the N features and M hidden
# units, N and M constexpr), so a sample's forward and backward are plain FFMAs with no cross-thread
# traffic and no padded features; Philox runs once per (group, feature) counter actually used. Each
# thread accumulates its samples' gradient contributions in [BG] accumulators (sample slot axis) and
# the block reduces them once per step. The parameters are one flat tuple P = W (M x N row-major), b (N)
# and, untied, W_dec (N x M row-major), b_hidden (M).
# AdamW runs once per step on the lanes, not on every thread's copy: lane p owns parameter p and its two
# moments (a [BG] block each, NPAR <= BG), updates it, and one shuffle per parameter hands the new values
# to every thread (the same arithmetic on the same values as each thread updating all NPAR: bit for bit).
# The tied model without a hidden activation (GRAM) writes its gradient through the Gram form:
#   z = Q x + b with Q = W^T W,   dW = W T with T = S + S^T, S = sum_b x_b g_b^T  (n x n),
# which costs 2 n^2 FMAs per sample instead of 5 m n for h = W x, z = W^T h, W g and the two outer
# products (configs.choose_config takes this path only where 2 n <= 5 m, with n <= 5 and m <= n). The
# per-sample terms accumulate T's upper triangle (x_k g_i + x_i g_k off the diagonal, x_i g_i on it):
# n (n + 1) / 2 sums to reduce per step instead of n^2, for the same n^2 FMAs per sample. The
# other families (hidden ReLU, untied) take the explicit per-sample form (h, z, gz, gh, outer products):
# the Gram form has no place for a mask between W x and W^T h.


@triton.jit
def _load_scalars(ptr, COUNT: tl.constexpr):
    """COUNT consecutive float32 values as a tuple of scalars (every thread holds all of them)."""
    out = ()
    for i in tl.static_range(COUNT):
        out = out + (tl.load(ptr + i),)
    return out


@triton.jit
def _lane_segment(lane, START: tl.constexpr, COUNT: tl.constexpr):
    """(mask, offset) of the lanes START .. START + COUNT - 1 of P's order in one parameter array."""
    seg = (lane >= START) & (lane < START + COUNT)
    return seg, tl.where(seg, lane - START, 0)


@triton.jit
def _lane_pointers(arrays, k, lane, N: tl.constexpr, M: tl.constexpr, TIED: tl.constexpr):
    """Pointer to model k's parameter P[p] (or one of its moments) for each lane p; arrays: the (W, b,
    W_dec, b_hidden) pointers, in P's order; lanes beyond P point at W's first entry (the callers mask
    them)."""
    W_ptr, b_ptr, Wd_ptr, bh_ptr = arrays
    seg, o = _lane_segment(lane, 0, M * N)
    ptr = W_ptr + k * (M * N) + o
    seg, o = _lane_segment(lane, M * N, N)
    ptr = tl.where(seg, b_ptr + k * N + o, ptr)
    if not TIED:
        seg, o = _lane_segment(lane, M * N + N, N * M)
        ptr = tl.where(seg, Wd_ptr + k * (N * M) + o, ptr)
        seg, o = _lane_segment(lane, 2 * M * N + N, M)
        ptr = tl.where(seg, bh_ptr + k * M + o, ptr)
    return ptr


@triton.jit
def _load_state(P, mP, vP, k, lane, N: tl.constexpr, M: tl.constexpr, TIED: tl.constexpr, NPAR: tl.constexpr):
    """(parameters, first moments, second moments) of model k over the lanes: lane p holds P[p] and its
    moments, 0 beyond P's NPAR entries; P, mP, vP: the (W, b, W_dec, b_hidden) pointers of each. One load
    each through _lane_pointers, not one per array: Triton's coalescing pass walks the whole kernel once
    per tensor access (quadratic in the kernel's size), and a load and a store per array (12 or 24
    accesses) made the tiny path up to 2.5x slower to compile. (One [BG, 2, 2] load of all three cost the
    step loop two register moves; one such store, under Triton 3.9, a pass through shared memory.)"""
    used = lane < NPAR
    p = tl.load(_lane_pointers(P, k, lane, N, M, TIED), mask=used, other=0.0)
    m = tl.load(_lane_pointers(mP, k, lane, N, M, TIED), mask=used, other=0.0)
    v = tl.load(_lane_pointers(vP, k, lane, N, M, TIED), mask=used, other=0.0)
    return p, m, v


@triton.jit
def _store_state(p, m, v, P, mP, vP, k, lane, N: tl.constexpr, M: tl.constexpr, TIED: tl.constexpr,
                 NPAR: tl.constexpr):
    """Write back what _load_state read (the parameters to P's arrays), one store each."""
    used = lane < NPAR
    tl.store(_lane_pointers(P, k, lane, N, M, TIED), p, mask=used)
    tl.store(_lane_pointers(mP, k, lane, N, M, TIED), m, mask=used)
    tl.store(_lane_pointers(vP, k, lane, N, M, TIED), v, mask=used)


@triton.jit
def _lane_values(v, COUNT: tl.constexpr):
    """(v[0], ..., v[COUNT - 1]), each broadcast to every lane of a [BG] block (one shuffle each)."""
    out = ()
    for p in tl.static_range(COUNT):
        out = out + (tl.gather(v, tl.full(v.shape, p, tl.int32), 0),)
    return out


@triton.jit
def _to_lanes(vals, lane, COUNT: tl.constexpr):
    """A [BG] block holding vals[p] in lane p (p < COUNT), 1 beyond: the lanes without a parameter then
    keep a second moment well above 0, so their AdamW never takes the slow path of IEEE sqrt (which a
    zero v takes, and the whole warp would wait for it every step)."""
    v = tl.where(lane == 0, vals[0], 1.0)
    for p in tl.static_range(1, COUNT):
        v = tl.where(lane == p, vals[p], v)
    return v


@triton.constexpr_function
def _sym_at(k, i, N):
    """Index of (k, i), k <= i, in the row-major upper triangle of an N x N matrix."""
    return k * N - k * (k - 1) // 2 + i - k


@triton.jit
def _t_entry(sums, k, i, N: tl.constexpr):
    """T[k, i] of T = S + S^T from the triangle sums (T off the diagonal, S on it: T[i, i] = 2 S[i, i])."""
    if k == i:
        v = 2.0 * sums[_sym_at(k, k, N)]
    elif k < i:
        v = sums[_sym_at(k, i, N)]
    else:
        v = sums[_sym_at(i, k, N)]
    return v


@triton.jit
def _gram(W, N: tl.constexpr, M: tl.constexpr):
    """Q = W^T W as a tuple (row-major N x N); W is a row-major M x N tuple."""
    Q = ()
    for i in tl.static_range(N):
        for k in tl.static_range(N):
            if k < i:
                q = Q[k * N + i]  # symmetric: already computed
            else:
                q = W[i] * W[k]
                for j in tl.static_range(1, M):
                    q += W[j * N + i] * W[j * N + k]
            Q = Q + (q,)
    return Q


@triton.jit
def _gram_sample(acc, x, tgt, valid, P, ic, imp, Q, icQ, icb, N: tl.constexpr, M: tl.constexpr,
                 RELU: tl.constexpr, LOSS: tl.constexpr, MASKED: tl.constexpr):
    """Gram form: add one sample's terms to acc = (T's upper triangle row-major: sum x_k g_i + x_i g_k, and
    sum x_i g_i on the diagonal; db_i: sum g_i; loss)."""
    NSYM: tl.constexpr = N * (N + 1) // 2
    grad = ()
    loss = acc[NSYM + N]
    for i in tl.static_range(N):
        # g_i = ic_i (z_i - t_i) as ic_i z_i - ic_i t_i, with ic_i z_i = (ic_i Q_i) x + ic_i b_i:
        # one FFMA less per feature; ic_i >= 0, so ic_i z_i > 0 is the ReLU test where g_i != 0.
        gi = icb[i] + icQ[i * N] * x[0]
        for k in tl.static_range(1, N):
            gi += icQ[i * N + k] * x[k]
        if RELU:
            gi = tl.where(valid & (gi > 0.0), gi - ic[i] * tgt[i], 0.0)
        else:
            gi = gi - ic[i] * tgt[i]
            if MASKED:
                gi = tl.where(valid, gi, 0.0)
        grad = grad + (gi,)
        if LOSS:
            z = P[M * N + i] + Q[i * N] * x[0]
            for k in tl.static_range(1, N):
                z += Q[i * N + k] * x[k]
            d = (tl.maximum(z, 0.0) if RELU else z) - tgt[i]
            loss += tl.where(valid, imp[i] * d * d, 0.0) if MASKED else imp[i] * d * d
    out = ()
    for k in tl.static_range(N):
        for i in tl.static_range(k, N):
            t = acc[_sym_at(k, i, N)] + x[k] * grad[i]
            if i != k:
                t = t + x[i] * grad[k]
            out = out + (t,)
    for i in tl.static_range(N):
        out = out + (acc[NSYM + i] + grad[i],)
    return out + (loss,)


@triton.jit
def _decoder(P, i, j, N: tl.constexpr, M: tl.constexpr, TIED: tl.constexpr):
    """D[i, j], the decoder weight from hidden unit j to feature i: W[j, i] tied, W_dec[i, j] untied."""
    if TIED:
        d = P[j * N + i]
    else:
        d = P[M * N + N + i * M + j]
    return d


@triton.jit
def _explicit_sample(acc, x, tgt, valid, P, ic, imp, N: tl.constexpr, M: tl.constexpr, RELU: tl.constexpr,
                     HRELU: tl.constexpr, TIED: tl.constexpr, LOSS: tl.constexpr, MASKED: tl.constexpr):
    """Explicit form: a = W x (+ b_hidden), h = hact(a), z = D h + b, y = act(z), and the gradient terms
    added to acc (P's order: dW, db (, dW_dec, db_hidden), then the loss)."""
    NPAR: tl.constexpr = M * N + N if TIED else 2 * M * N + N + M
    a = ()
    h = ()
    for j in tl.static_range(M):
        aj = P[j * N] * x[0]
        for i in tl.static_range(1, N):
            aj += P[j * N + i] * x[i]
        if not TIED:
            aj += P[2 * M * N + N + j]
        a = a + (aj,)
        h = h + ((tl.maximum(aj, 0.0) if HRELU else aj),)
    gz = ()
    loss = acc[NPAR]
    for i in tl.static_range(N):
        z = P[M * N + i] + _decoder(P, i, 0, N, M, TIED) * h[0]
        for j in tl.static_range(1, M):
            z += _decoder(P, i, j, N, M, TIED) * h[j]
        d = (tl.maximum(z, 0.0) if RELU else z) - tgt[i]
        gi = ic[i] * d
        if RELU:
            gi = tl.where(z > 0.0, gi, 0.0)
        if MASKED:
            gi = tl.where(valid, gi, 0.0)
        gz = gz + (gi,)
        if LOSS:
            loss += tl.where(valid, imp[i] * d * d, 0.0) if MASKED else imp[i] * d * d
    gh = ()
    for j in tl.static_range(M):
        ghj = _decoder(P, 0, j, N, M, TIED) * gz[0]
        for i in tl.static_range(1, N):
            ghj += _decoder(P, i, j, N, M, TIED) * gz[i]
        gh = gh + ((tl.where(a[j] > 0.0, ghj, 0.0) if HRELU else ghj),)
    out = ()
    for j in tl.static_range(M):
        for i in tl.static_range(N):
            if TIED:
                out = out + (acc[j * N + i] + gh[j] * x[i] + h[j] * gz[i],)
            else:
                out = out + (acc[j * N + i] + gh[j] * x[i],)
    for i in tl.static_range(N):
        out = out + (acc[M * N + i] + gz[i],)
    if not TIED:
        for i in tl.static_range(N):
            for j in tl.static_range(M):
                out = out + (acc[M * N + N + i * M + j] + gz[i] * h[j],)
        for j in tl.static_range(M):
            out = out + (acc[2 * M * N + N + j] + gh[j],)
    return out + (loss,)


@triton.jit
def _tiny_sample_words(seed, g, lane, first, T, stream_words, N: tl.constexpr, DATASET: tl.constexpr):
    """The N words ([BG] each) of batch rows b = 4 g + lane: lane `lane` of the step's stream words, or
    dataset sample (first + b) mod T's own words."""
    w = ()
    if DATASET:
        j = (first + g.to(tl.int64) * LANES + lane) % T
        for i in tl.static_range(N):
            w = w + (dataset_word(seed, j, i, N, True),)
    else:
        for i in tl.static_range(N):
            w = w + (stream_words[i][lane],)
    return w


@triton.jit
def _tiny_tile(acc, g, seed, t, B, first, T, tabs, P, ic, imp, gram,
               N: tl.constexpr, M: tl.constexpr, RELU: tl.constexpr, HRELU: tl.constexpr, TIED: tl.constexpr,
               ABS: tl.constexpr, SYMMETRIC: tl.constexpr, DATASET: tl.constexpr, GATE_SRC: tl.constexpr,
               LOSS: tl.constexpr, MASKED: tl.constexpr):
    """Add the contributions of the 4 BG batch rows b = 4 g + lane (g: [BG] groups) to acc (each [BG]).
    MASKED: some rows may be >= B (the last tile); full tiles skip the test."""
    lo, hi, off, scale = tabs
    words = ()
    if not DATASET:
        for i in tl.static_range(N):  # one Philox counter per (group, feature): N of them, no padding
            words = words + (philox_words_wide(seed, (g * N + i).to(tl.uint32), t),)
    for lane in tl.static_range(LANES):
        valid = ((g * LANES + lane) < B) if MASKED else True
        x = tiny_features(_tiny_sample_words(seed, g, lane, first, T, words, N, DATASET), lo, hi, off, scale,
                          N, GATE_SRC, SYMMETRIC)
        tgt = x
        if ABS:
            tgt = ()
            for i in tl.static_range(N):
                tgt = tgt + (tl.abs(x[i]),)
        if TIED and not HRELU:
            Q, icQ, icb = gram
            acc = _gram_sample(acc, x, tgt, valid, P, ic, imp, Q, icQ, icb, N, M, RELU, LOSS, MASKED)
        else:
            acc = _explicit_sample(acc, x, tgt, valid, P, ic, imp, N, M, RELU, HRELU, TIED, LOSS, MASKED)
    return acc


@triton.constexpr_function
def tile_unroll(n, plain):
    """Whole tiles per trip of the tiny path's tile loop (the launcher's default; a kernel_config
    tile_unroll overrides it, and the cost model reads the launch's UNROLL). Four for the plain
    model (Gram form, plain data) at n <= 2 (phase: 1,659 -> 1,640 warp instructions per model-step, 121 ->
    168 registers); one elsewhere, where more tiles per trip cost registers for little (phase3 at two: 147
    -> 184 registers for 0.4%, at four 240 and latency-bound; phase with a hidden ReLU at four: 220
    registers and latency-bound, 48.8 -> 51.2 ms by the cost model)."""
    return 4 if n <= 2 and plain else 1


@triton.jit
def _tiny_step_sums(seed, t, B, T, tabs, P, ic, imp, gram,
                    N: tl.constexpr, M: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr, HRELU: tl.constexpr,
                    TIED: tl.constexpr, ABS: tl.constexpr, SYMMETRIC: tl.constexpr, DATASET: tl.constexpr,
                    GATE_SRC: tl.constexpr, LOSS: tl.constexpr, UNROLL: tl.constexpr):
    """One step's batch sums as scalars (the Gram form's T triangle, db, loss; or the explicit form's
    gradients in P's order, then the loss): per-slot accumulation over the tiles, then one reduction over
    the BG slots. The order is fixed by (N, M, BG) alone."""
    NACC: tl.constexpr = (N * (N + 1) // 2 + N + 1) if (TIED and not HRELU) else ((M * N + N + 1) if TIED else
                                                                                   (2 * M * N + N + M + 1))
    acc = ()
    for _ in tl.static_range(NACC):
        acc = acc + (tl.zeros((BG,), dtype=tl.float32),)
    first = batch_start(t, B, T, DATASET)
    full = (B // (LANES * BG)) * BG  # groups in tiles whose 4 BG samples are all < B
    whole = (full // (UNROLL * BG)) * (UNROLL * BG)  # ... in runs of UNROLL tiles: less loop control per tile
    for g0 in range(0, whole, UNROLL * BG):
        for u in tl.static_range(UNROLL):
            acc = _tiny_tile(acc, g0 + u * BG + tl.arange(0, BG), seed, t, B, first, T, tabs, P, ic, imp, gram,
                             N, M, RELU, HRELU, TIED, ABS, SYMMETRIC, DATASET, GATE_SRC, LOSS, False)
    for g1 in range(whole, full, BG):  # the whole tiles left over
        acc = _tiny_tile(acc, g1 + tl.arange(0, BG), seed, t, B, first, T, tabs, P, ic, imp, gram,
                         N, M, RELU, HRELU, TIED, ABS, SYMMETRIC, DATASET, GATE_SRC, LOSS, False)
    if full * LANES < B:
        acc = _tiny_tile(acc, full + tl.arange(0, BG), seed, t, B, first, T, tabs, P, ic, imp, gram,
                         N, M, RELU, HRELU, TIED, ABS, SYMMETRIC, DATASET, GATE_SRC, LOSS, True)
    sums = ()
    for j in tl.static_range(NACC):
        sums = sums + (tl.sum(acc[j], axis=0),)
    return sums


@triton.jit
def _train_tiny(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                Wd_in, bh_in, Wd_out, bh_out, mWd_ptr, vWd_ptr, mbh_ptr, vbh_ptr,
                seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, imp_ptr, consts_ptr, loss_ptr,
                B, T, t0, n_steps, total_steps, log_every, n_log,
                coef, inv_bn, beta1, beta2, eps,
                N: tl.constexpr, M: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr, HRELU: tl.constexpr,
                TIED: tl.constexpr, ABS: tl.constexpr, SETS: tl.constexpr, SYMMETRIC: tl.constexpr,
                DATASET: tl.constexpr, GATE_SRC: tl.constexpr, UNROLL: tl.constexpr):
    """The tiny path (see _train_small_kernel); UNROLL whole tiles per trip of the tile loop."""
    GRAM: tl.constexpr = TIED and not HRELU
    NPAR: tl.constexpr = M * N + N if TIED else 2 * M * N + N + M
    NSYM: tl.constexpr = N * (N + 1) // 2
    LOSS_AT: tl.constexpr = NSYM + N if GRAM else NPAR  # the loss's place among the step's sums
    tl.static_assert(NPAR <= BG, "the tiny path keeps one parameter per lane: NPAR <= BG")
    k = tl.program_id(0).to(tl.int64)
    o_b = k * N
    lane = tl.arange(0, BG)
    moments = ((mW_ptr, mb_ptr, mWd_ptr, mbh_ptr), (vW_ptr, vb_ptr, vWd_ptr, vbh_ptr))
    # [BG] each: lane p owns parameter p and its moments
    Pv, mv, vv = _load_state((W_in, b_in, Wd_in, bh_in), *moments, k, lane, N, M, TIED, NPAR)
    P = _lane_values(Pv, NPAR)
    imp = _load_scalars(imp_ptr + o_b, N)
    scale = _load_scalars(scale_ptr + o_b, N)
    hi = ()
    lo = ()
    off = ()
    ic = ()
    for i in tl.static_range(N):
        hi = hi + (tl.load(thr_ptr + o_b + i).to(tl.uint32, bitcast=True),)
        if SETS:  # lo, off: only anticorrelated features use them (tiny_features knows which)
            lo = lo + (tl.load(lo_ptr + o_b + i).to(tl.uint32, bitcast=True),)
            off = off + (tl.load(off_ptr + o_b + i).to(tl.uint32, bitcast=True),)
        else:
            lo = lo + (hi[i],)
            off = off + (hi[i],)
        ic = ic + (imp[i] * coef,)
    tabs = (lo, hi, off, scale)
    seed = tl.load(seed_ptr + k)
    since = t0 % log_every  # t mod log_every, counted along
    for s in range(n_steps):
        t = t0 + s
        if GRAM:
            Q = _gram(P, N, M)
            icQ = ()
            icb = ()
            for i in tl.static_range(N):
                icb = icb + (ic[i] * P[M * N + i],)
                for kk in tl.static_range(N):
                    icQ = icQ + (ic[i] * Q[i * N + kk],)
            gram = (Q, icQ, icb)
        else:
            gram = ()
        if _logged_at(since, t, total_steps):  # the loss is only summed (and stored) when it is recorded
            sums = _tiny_step_sums(seed, t, B, T, tabs, P, ic, imp, gram, N, M, BG, RELU, HRELU, TIED, ABS,
                                   SYMMETRIC, DATASET, GATE_SRC, True, UNROLL)
            log_loss(loss_ptr + k * n_log, sums[LOSS_AT] * inv_bn, t, total_steps, log_every, n_log)
        else:
            sums = _tiny_step_sums(seed, t, B, T, tabs, P, ic, imp, gram, N, M, BG, RELU, HRELU, TIED, ABS,
                                   SYMMETRIC, DATASET, GATE_SRC, False, UNROLL)
        since = tl.where(since == log_every - 1, 0, since + 1)
        if GRAM:
            grads = ()
            for j in tl.static_range(M):
                for i in tl.static_range(N):
                    dw = P[j * N] * _t_entry(sums, 0, i, N)  # dW = W T
                    for kk in tl.static_range(1, N):
                        dw += P[j * N + kk] * _t_entry(sums, kk, i, N)
                    grads = grads + (dw,)
            for i in tl.static_range(N):
                grads = grads + (sums[NSYM + i],)
        else:
            grads = sums
        decay, step_size, bc2_sqrt, omb1, omb2 = load_step_constants(consts_ptr, t)
        Pv, mv, vv = adamw_update(Pv, _to_lanes(grads, lane, NPAR), mv, vv, decay, step_size, bc2_sqrt, omb1,
                                  omb2, beta1, beta2, eps)
        P = _lane_values(Pv, NPAR)
    _store_state(Pv, mv, vv, (W_out, b_out, Wd_out, bh_out), *moments, k, lane, N, M, TIED, NPAR)


@kernel
def _train_small_kernel(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                        Wd_in, bh_in, Wd_out, bh_out, mWd_ptr, vWd_ptr, mbh_ptr, vbh_ptr,
                        seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, imp_ptr, consts_ptr,
                        loss_ptr, n, m, B, T, t0, n_steps, total_steps, log_every, n_log,
                        coef, inv_bn, beta1, beta2, eps,
                        MP: tl.constexpr, NP: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr,
                        TINY: tl.constexpr, HRELU: tl.constexpr, TIED: tl.constexpr, ABS: tl.constexpr,
                        SETS: tl.constexpr, SYMMETRIC: tl.constexpr, DATASET: tl.constexpr,
                        GATE_SRC: tl.constexpr, UNROLL: tl.constexpr):
    """One program per model. TINY: MP, NP are m, n exactly (unrolled path, UNROLL whole tiles per trip
    of its tile loop: the order of the sums does not depend on it); else their padded sizes.
    The family (HRELU, TIED, ABS) and the data options (SETS, SYMMETRIC, DATASET: dataset of T samples,
    B the batch's real size) are constexprs: the plain model compiles as if they did not exist."""
    if TINY:
        _train_tiny(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                    Wd_in, bh_in, Wd_out, bh_out, mWd_ptr, vWd_ptr, mbh_ptr, vbh_ptr,
                    seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, imp_ptr, consts_ptr, loss_ptr,
                    B, T, t0, n_steps, total_steps, log_every, n_log,
                    coef, inv_bn, beta1, beta2, eps, NP, MP, BG, RELU, HRELU, TIED, ABS, SETS, SYMMETRIC,
                    DATASET, GATE_SRC, UNROLL)
    else:
        _train_blocks(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                      Wd_in, bh_in, Wd_out, bh_out, mWd_ptr, vWd_ptr, mbh_ptr, vbh_ptr,
                      seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, gate_ptr, src_ptr, imp_ptr, consts_ptr,
                      loss_ptr, n, m, B, T, t0, n_steps, total_steps, log_every, n_log,
                      coef, inv_bn, beta1, beta2, eps, MP, NP, BG, RELU, HRELU, TIED, ABS, SETS, SYMMETRIC,
                      DATASET)


@kernel
def _tiny_batch_kernel(seed_ptr, thr_ptr, scale_ptr, lo_ptr, off_ptr, out_ptr, step, B, T,
                       N: tl.constexpr, BG: tl.constexpr, SETS: tl.constexpr, SYMMETRIC: tl.constexpr,
                       DATASET: tl.constexpr, GATE_SRC: tl.constexpr):
    """Debug path: the (B, N) batch model program_id(0) sees at `step`, drawn by the tiny path's own
    helpers (stream words per tile, _tiny_sample_words, tiny_features) over the same tiles."""
    k = tl.program_id(0).to(tl.int64)
    o_b = k * N
    scale = _load_scalars(scale_ptr + o_b, N)
    hi = ()
    lo = ()
    off = ()
    for i in tl.static_range(N):
        hi = hi + (tl.load(thr_ptr + o_b + i).to(tl.uint32, bitcast=True),)
        lo = lo + (tl.load(lo_ptr + o_b + i).to(tl.uint32, bitcast=True),)
        off = off + (tl.load(off_ptr + o_b + i).to(tl.uint32, bitcast=True),)
    seed = tl.load(seed_ptr + k)
    first = batch_start(step, B, T, DATASET)
    for g0 in range(0, (B + LANES * BG - 1) // (LANES * BG) * BG, BG):
        g = g0 + tl.arange(0, BG)
        words = ()
        if not DATASET:
            for i in tl.static_range(N):
                words = words + (philox_words_wide(seed, (g * N + i).to(tl.uint32), step),)
        for lane in tl.static_range(LANES):
            b = g * LANES + lane
            x = tiny_features(_tiny_sample_words(seed, g, lane, first, T, words, N, DATASET), lo, hi, off, scale,
                              N, GATE_SRC, SYMMETRIC)
            for i in tl.static_range(N):
                tl.store(out_ptr + k * B * N + b * N + i, x[i], mask=b < B)


def tiny_sample_batch(data, step: int, cfg, out=None):
    """Launcher of _tiny_batch_kernel: (K, S, n) float32, S = data.batch_size (the batch's real size)."""
    import torch
    K, n = data.thr.shape
    S = data.batch_size
    if out is None:
        out = torch.empty((K, S, n), dtype=torch.float32, device=data.thr.device)
    _tiny_batch_kernel[(K,)](data.seed, data.thr, data.scale, data.lo, data.off, out, step, S, data.dataset_size or 1,
                             N=n, BG=cfg.BG, SETS=data.sets, SYMMETRIC=data.symmetric,
                             DATASET=data.dataset_size is not None, GATE_SRC=data.gate_src, num_warps=cfg.num_warps)
    return out


def train_small(state, data, consts, loss, t0: int, n_steps: int, total_steps: int, log_every: int,
                hyper, cfg):
    """Launch: advance every model by n_steps from step t0. state/data: see superpos.triton_backend."""
    K, m, n = state.W_in.shape
    untied = state.Wd_in is not None
    # untied: W_dec, b_hidden and their moments; tied: unused stand-ins (the kernel never touches them)
    dec = (state.Wd_in, state.bh_in, state.Wd_out, state.bh_out, state.mWd, state.vWd, state.mbh, state.vbh) \
        if untied else (state.W_in, state.b_in) * 4
    # maxnreg=255: ptxas otherwise caps the 8-warp kernel at 128 registers at n=37, m=5 under Triton 3.9
    # (32 bytes of stack) and at BG=2 under 3.6; 255 is what one 256-thread program per SM allows anyway.
    # (A kernel_config may set another cap: configs.with_overrides.)
    gram_plain = not (untied or data.hidden_relu or data.sets or data.symmetric or data.dataset_size is not None)
    unroll = (cfg.tile_unroll or tile_unroll(n, gram_plain)) if cfg.tiny else 1
    with LAUNCH_LOCK:
        _train_small_kernel[(K,)](
            state.W_in, state.b_in, state.W_out, state.b_out, state.mW, state.vW, state.mb, state.vb, *dec,
            data.seed, data.thr, data.scale, data.lo, data.off, data.gate, data.src, data.importance, consts, loss,
            n, m, data.batch_size, data.dataset_size or 1, t0, n_steps, total_steps, log_every, loss.shape[1],
            hyper.coef, hyper.inv_bn, hyper.beta1, hyper.beta2, hyper.eps,
            MP=cfg.MP, NP=cfg.NP, BG=cfg.BG, RELU=data.relu, TINY=cfg.tiny, HRELU=data.hidden_relu,
            TIED=not untied, ABS=data.target_abs, SETS=data.sets, SYMMETRIC=data.symmetric,
            DATASET=data.dataset_size is not None, GATE_SRC=data.gate_src if cfg.tiny else 0,
            UNROLL=unroll,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=cfg.fp_fusion,
            maxnreg=cfg.max_registers or 255)
