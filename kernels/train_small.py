"""Fused training of tiny models (m*n small): one program per model, W and AdamW state in registers.

Two paths (configs.choose_config picks): the tiny path (_train_tiny: unrolled over exact n and m, each
thread owns whole samples) and the block path (_train_blocks: [BG, MP, NP] blocks, for n up to ~512).

Per step, inside the kernel: generate the batch in registers from Philox (philox_data), forward
x' = act(W^T W x + b), importance-weighted MSE backward reduced over the batch, AdamW in place.
Nothing but the logged loss touches device memory between the first load and the final store.
"""
import triton
import triton.language as tl

from .adamw import adamw_update, load_step_constants
from .philox_data import LANES, load_thresholds, philox_words, philox_words_wide, word_to_feature
from .specialize import kernel


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
def _lane_grads(acc_w, acc_b, acc_l, r, lane, g, B, thr, scale, W, bias, imp, coef,
                RELU: tl.constexpr, LOSS: tl.constexpr):
    """Add the loss, dW and db terms of the samples b = 4 g + lane (Philox words r [BG, NP]) to the
    per-sample accumulators acc_l [BG], acc_w [BG, MP, NP], acc_b [BG, NP]: nothing is reduced over the
    samples here (that happens once per step)."""
    valid = (g * LANES + lane) < B  # [BG]
    x = tl.where(valid[:, None], word_to_feature(r, thr[None, :], scale[None, :]), 0.0)  # [BG, NP]
    h = tl.sum(x[:, None, :] * W[None, :, :], axis=2)  # [BG, MP]
    z = tl.sum(h[:, :, None] * W[None, :, :], axis=1) + bias[None, :]  # [BG, NP]
    y = tl.maximum(z, 0.0) if RELU else z
    diff = tl.where(valid[:, None], y - x, 0.0)
    wdiff = imp[None, :] * diff
    if LOSS:
        acc_l += tl.sum(wdiff * diff, axis=1)
    gz = coef * wdiff
    if RELU:
        gz = tl.where(z > 0.0, gz, 0.0)
    gh = tl.sum(gz[:, None, :] * W[None, :, :], axis=2)  # [BG, MP]
    acc_w += h[:, :, None] * gz[:, None, :] + gh[:, :, None] * x[:, None, :]
    return acc_w, acc_b + gz, acc_l


@triton.jit
def _block_step_sums(seed, t, n, B, offs_n, thr, scale, W, bias, imp, coef,
                     MP: tl.constexpr, NP: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr,
                     LOSS: tl.constexpr):
    """One step's (loss, dW [MP, NP], db [NP]) batch sums: per-sample-slot accumulation over the tiles and
    the four lanes, one reduction over the BG slots at the end. The order is fixed by (MP, NP, BG)."""
    acc_w = tl.zeros((BG, MP, NP), dtype=tl.float32)
    acc_b = tl.zeros((BG, NP), dtype=tl.float32)
    acc_l = tl.zeros((BG,), dtype=tl.float32)
    groups = (B + LANES - 1) // LANES
    for g0 in range(0, groups, BG):
        g = g0 + tl.arange(0, BG)  # [BG]
        r0, r1, r2, r3 = philox_words(seed, (g[:, None] * n + offs_n[None, :]).to(tl.uint32), t)
        acc_w, acc_b, acc_l = _lane_grads(acc_w, acc_b, acc_l, r0, 0, g, B, thr, scale, W, bias, imp, coef, RELU, LOSS)
        acc_w, acc_b, acc_l = _lane_grads(acc_w, acc_b, acc_l, r1, 1, g, B, thr, scale, W, bias, imp, coef, RELU, LOSS)
        acc_w, acc_b, acc_l = _lane_grads(acc_w, acc_b, acc_l, r2, 2, g, B, thr, scale, W, bias, imp, coef, RELU, LOSS)
        acc_w, acc_b, acc_l = _lane_grads(acc_w, acc_b, acc_l, r3, 3, g, B, thr, scale, W, bias, imp, coef, RELU, LOSS)
    return tl.sum(acc_l, axis=0), tl.sum(acc_w, axis=0), tl.sum(acc_b, axis=0)


@triton.jit
def _train_blocks(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                  seed_ptr, thr_ptr, scale_ptr, imp_ptr, consts_ptr, loss_ptr,
                  n, m, B, t0, n_steps, total_steps, log_every, n_log,
                  coef, inv_bn, beta1, beta2, eps,
                  MP: tl.constexpr, NP: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr):
    k = tl.program_id(0).to(tl.int64)
    offs_m = tl.arange(0, MP)
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < n
    mask_w = (offs_m[:, None] < m) & mask_n[None, :]
    o_w = k * m * n + offs_m[:, None] * n + offs_n[None, :]  # [MP, NP]
    o_b = k * n + offs_n  # [NP]
    W = tl.load(W_in + o_w, mask=mask_w, other=0.0)
    mW = tl.load(mW_ptr + o_w, mask=mask_w, other=0.0)
    vW = tl.load(vW_ptr + o_w, mask=mask_w, other=0.0)
    bias = tl.load(b_in + o_b, mask=mask_n, other=0.0)
    mb = tl.load(mb_ptr + o_b, mask=mask_n, other=0.0)
    vb = tl.load(vb_ptr + o_b, mask=mask_n, other=0.0)
    imp = tl.load(imp_ptr + o_b, mask=mask_n, other=0.0)
    thr, scale = load_thresholds(thr_ptr + k * n, scale_ptr + k * n, offs_n, mask_n)
    seed = tl.load(seed_ptr + k)
    for s in range(n_steps):
        t = t0 + s
        if _is_logged(t, total_steps, log_every):
            loss, dW, db = _block_step_sums(seed, t, n, B, offs_n, thr, scale, W, bias, imp, coef,
                                            MP, NP, BG, RELU, True)
        else:
            loss, dW, db = _block_step_sums(seed, t, n, B, offs_n, thr, scale, W, bias, imp, coef,
                                            MP, NP, BG, RELU, False)
        log_loss(loss_ptr + k * n_log, loss * inv_bn, t, total_steps, log_every, n_log)
        decay, step_size, bc2_sqrt = load_step_constants(consts_ptr, t)
        W, mW, vW = adamw_update(W, dW, mW, vW, decay, step_size, bc2_sqrt, beta1, beta2, eps)
        bias, mb, vb = adamw_update(bias, db, mb, vb, decay, step_size, bc2_sqrt, beta1, beta2, eps)
    tl.store(W_out + o_w, W, mask=mask_w)
    tl.store(mW_ptr + o_w, mW, mask=mask_w)
    tl.store(vW_ptr + o_w, vW, mask=mask_w)
    tl.store(b_out + o_b, bias, mask=mask_n)
    tl.store(mb_ptr + o_b, mb, mask=mask_n)
    tl.store(vb_ptr + o_b, vb, mask=mask_n)


# --- Tiny models (n <= TINY_MAX_N, see configs): one thread owns whole samples ----------------------
# Every thread holds the model's parameters as scalars (tuples unrolled over the N features and M hidden
# units, N and M constexpr), so a sample's forward and backward are plain FFMAs with no cross-thread
# traffic and no padded features; Philox runs once per (group, feature) counter actually used. Each
# thread accumulates its samples' gradient contributions in [BG] accumulators (sample slot axis) and
# the block reduces them once per step. The tied model's gradient is written through the Gram form:
#   z = Q x + b with Q = W^T W,   dW = W (S + S^T) with S = sum_b x_b g_b^T  (n x n),
# which costs 2 n^2 FMAs per sample instead of 5 m n for h = W x, z = W^T h, W g and the two outer
# products (configs.choose_config takes this path only where 2 n <= 5 m, with n <= 5 and m <= n).


@triton.jit
def _load_scalars(ptr, COUNT: tl.constexpr):
    """COUNT consecutive float32 values as a tuple of scalars (every thread holds all of them)."""
    out = ()
    for i in tl.static_range(COUNT):
        out = out + (tl.load(ptr + i),)
    return out


@triton.jit
def _store_scalars(ptr, vals, COUNT: tl.constexpr):
    for i in tl.static_range(COUNT):
        tl.store(ptr + i, vals[i])


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
def _tiny_tile(acc, g, seed, t, B, thr, scale, Q, bias, ic, imp, icQ, icb,
               N: tl.constexpr, RELU: tl.constexpr, LOSS: tl.constexpr, MASKED: tl.constexpr):
    """Add the contributions of the 4 BG samples b = 4 g + lane (g: [BG] groups) to acc:
    acc = (S[k, i] for k, i row-major: sum x_k g_i, then db_i: sum g_i, then the loss sum), each [BG].
    MASKED: some samples may be >= B (the last tile); full tiles skip the test."""
    words = ()
    for i in tl.static_range(N):  # one Philox counter per (group, feature): N of them, no padding
        words = words + (philox_words_wide(seed, (g * N + i).to(tl.uint32), t),)
    for lane in tl.static_range(LANES):
        valid = ((g * LANES + lane) < B) if MASKED else True
        x = ()
        for i in tl.static_range(N):
            x = x + (word_to_feature(words[i][lane], thr[i], scale[i]),)
        grad = ()
        loss = acc[N * N + N]
        for i in tl.static_range(N):
            # g_i = ic_i (z_i - x_i) as ic_i z_i - ic_i x_i, with ic_i z_i = (ic_i Q_i) x + ic_i b_i:
            # one FFMA less per feature; ic_i >= 0, so ic_i z_i > 0 is the ReLU test where g_i != 0.
            gi = icb[i] + icQ[i * N] * x[0]
            for k in tl.static_range(1, N):
                gi += icQ[i * N + k] * x[k]
            if RELU:
                gi = tl.where(valid & (gi > 0.0), gi - ic[i] * x[i], 0.0)
            else:
                gi = gi - ic[i] * x[i]
                if MASKED:
                    gi = tl.where(valid, gi, 0.0)
            grad = grad + (gi,)
            if LOSS:
                z = bias[i] + Q[i * N] * x[0]
                for k in tl.static_range(1, N):
                    z += Q[i * N + k] * x[k]
                d = (tl.maximum(z, 0.0) if RELU else z) - x[i]
                loss += tl.where(valid, imp[i] * d * d, 0.0) if MASKED else imp[i] * d * d
        out = ()
        for k in tl.static_range(N):
            for i in tl.static_range(N):
                out = out + (acc[k * N + i] + x[k] * grad[i],)
        for i in tl.static_range(N):
            out = out + (acc[N * N + i] + grad[i],)
        acc = out + (loss,)
    return acc


@triton.jit
def _tiny_step_sums(seed, t, B, thr, scale, Q, bias, ic, imp, icQ, icb,
                    N: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr, LOSS: tl.constexpr):
    """One step's batch sums (S, db, loss) as scalars: per-slot accumulation over the tiles, then one
    reduction over the BG slots. The order is fixed by (N, BG) alone."""
    acc = ()
    for _ in tl.static_range(N * N + N + 1):
        acc = acc + (tl.zeros((BG,), dtype=tl.float32),)
    full = (B // (LANES * BG)) * BG  # groups in tiles whose 4 BG samples are all < B
    for g0 in range(0, full, BG):
        acc = _tiny_tile(acc, g0 + tl.arange(0, BG), seed, t, B, thr, scale, Q, bias, ic, imp, icQ, icb,
                         N, RELU, LOSS, False)
    if full * LANES < B:
        acc = _tiny_tile(acc, full + tl.arange(0, BG), seed, t, B, thr, scale, Q, bias, ic, imp, icQ, icb,
                         N, RELU, LOSS, True)
    sums = ()
    for j in tl.static_range(N * N + N + 1):
        sums = sums + (tl.sum(acc[j], axis=0),)
    return sums


@triton.jit
def _train_tiny(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                seed_ptr, thr_ptr, scale_ptr, imp_ptr, consts_ptr, loss_ptr,
                B, t0, n_steps, total_steps, log_every, n_log,
                coef, inv_bn, beta1, beta2, eps,
                N: tl.constexpr, M: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr):
    k = tl.program_id(0).to(tl.int64)
    o_w = k * (M * N)
    o_b = k * N
    W = _load_scalars(W_in + o_w, M * N)
    mW = _load_scalars(mW_ptr + o_w, M * N)
    vW = _load_scalars(vW_ptr + o_w, M * N)
    bias = _load_scalars(b_in + o_b, N)
    mb = _load_scalars(mb_ptr + o_b, N)
    vb = _load_scalars(vb_ptr + o_b, N)
    imp = _load_scalars(imp_ptr + o_b, N)
    scale = _load_scalars(scale_ptr + o_b, N)
    thr = ()
    ic = ()
    for i in tl.static_range(N):
        thr = thr + (tl.load(thr_ptr + o_b + i).to(tl.uint32, bitcast=True),)
        ic = ic + (imp[i] * coef,)
    seed = tl.load(seed_ptr + k)
    for s in range(n_steps):
        t = t0 + s
        Q = _gram(W, N, M)
        icQ = ()
        icb = ()
        for i in tl.static_range(N):
            icb = icb + (ic[i] * bias[i],)
            for kk in tl.static_range(N):
                icQ = icQ + (ic[i] * Q[i * N + kk],)
        if _is_logged(t, total_steps, log_every):  # the loss is only summed when it is recorded
            sums = _tiny_step_sums(seed, t, B, thr, scale, Q, bias, ic, imp, icQ, icb, N, BG, RELU, True)
        else:
            sums = _tiny_step_sums(seed, t, B, thr, scale, Q, bias, ic, imp, icQ, icb, N, BG, RELU, False)
        log_loss(loss_ptr + k * n_log, sums[N * N + N] * inv_bn, t, total_steps, log_every, n_log)
        decay, step_size, bc2_sqrt = load_step_constants(consts_ptr, t)
        newW = ()
        new_mW = ()
        new_vW = ()
        for j in tl.static_range(M):
            for i in tl.static_range(N):
                dw = W[j * N] * (sums[i] + sums[i * N])  # dW = W (S + S^T)
                for kk in tl.static_range(1, N):
                    dw += W[j * N + kk] * (sums[kk * N + i] + sums[i * N + kk])
                p, mp, vp = adamw_update(W[j * N + i], dw, mW[j * N + i], vW[j * N + i],
                                         decay, step_size, bc2_sqrt, beta1, beta2, eps)
                newW = newW + (p,)
                new_mW = new_mW + (mp,)
                new_vW = new_vW + (vp,)
        W, mW, vW = newW, new_mW, new_vW
        new_b = ()
        new_mb = ()
        new_vb = ()
        for i in tl.static_range(N):
            p, mp, vp = adamw_update(bias[i], sums[N * N + i], mb[i], vb[i],
                                     decay, step_size, bc2_sqrt, beta1, beta2, eps)
            new_b = new_b + (p,)
            new_mb = new_mb + (mp,)
            new_vb = new_vb + (vp,)
        bias, mb, vb = new_b, new_mb, new_vb
    _store_scalars(W_out + o_w, W, M * N)
    _store_scalars(mW_ptr + o_w, mW, M * N)
    _store_scalars(vW_ptr + o_w, vW, M * N)
    _store_scalars(b_out + o_b, bias, N)
    _store_scalars(mb_ptr + o_b, mb, N)
    _store_scalars(vb_ptr + o_b, vb, N)



@kernel
def _train_small_kernel(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                        seed_ptr, thr_ptr, scale_ptr, imp_ptr, consts_ptr, loss_ptr,
                        n, m, B, t0, n_steps, total_steps, log_every, n_log,
                        coef, inv_bn, beta1, beta2, eps,
                        MP: tl.constexpr, NP: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr,
                        TINY: tl.constexpr):
    """One program per model. TINY: MP, NP are m, n exactly (unrolled path); else their padded sizes."""
    if TINY:
        _train_tiny(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                    seed_ptr, thr_ptr, scale_ptr, imp_ptr, consts_ptr, loss_ptr,
                    B, t0, n_steps, total_steps, log_every, n_log,
                    coef, inv_bn, beta1, beta2, eps, NP, MP, BG, RELU)
    else:
        _train_blocks(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
                      seed_ptr, thr_ptr, scale_ptr, imp_ptr, consts_ptr, loss_ptr,
                      n, m, B, t0, n_steps, total_steps, log_every, n_log,
                      coef, inv_bn, beta1, beta2, eps, MP, NP, BG, RELU)


def train_small(state, data, consts, loss, t0: int, n_steps: int, total_steps: int, log_every: int,
                hyper, cfg):
    """Launch: advance every model by n_steps from step t0. state/data: see superpos.triton_backend."""
    K, m, n = state.W_in.shape
    # maxnreg=255: ptxas otherwise caps the 8-warp kernel at 128 registers at n=37, m=5 under Triton 3.9
    # (32 bytes of stack) and at BG=2 under 3.6; 255 is what one 256-thread program per SM allows anyway.
    _train_small_kernel[(K,)](
        state.W_in, state.b_in, state.W_out, state.b_out, state.mW, state.vW, state.mb, state.vb,
        data.seed, data.thr, data.scale, data.importance, consts, loss,
        n, m, data.batch_size, t0, n_steps, total_steps, log_every, loss.shape[1],
        hyper.coef, hyper.inv_bn, hyper.beta1, hyper.beta2, hyper.eps,
        MP=cfg.MP, NP=cfg.NP, BG=cfg.BG, RELU=data.relu, TINY=cfg.tiny,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=cfg.fp_fusion, maxnreg=255)
