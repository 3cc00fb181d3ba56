"""Fused training of tiny models (m*n small): one program per model, W and AdamW state in registers.

Per step, inside the kernel: generate the batch in registers from Philox (philox_data), forward
x' = act(W^T W x + b), importance-weighted MSE backward reduced over the batch, AdamW in place.
Nothing but the logged loss touches device memory between the first load and the final store.
"""
import triton
import triton.language as tl

from .adamw import adamw_update, load_step_constants
from .philox_data import LANES, load_thresholds, philox_words, word_to_feature
from .specialize import kernel


@triton.jit
def log_loss(loss_ptr, loss, t, total_steps, log_every, n_log):
    """Record the loss at steps t % log_every == 0 and at the last step (TrainConfig.logged_steps)."""
    on_grid = (t % log_every) == 0
    idx = tl.where(on_grid, t // log_every, n_log - 1)
    tl.store(loss_ptr + idx, loss, mask=on_grid | (t == total_steps - 1))


@triton.jit
def _lane_grads(r, lane, g, B, thr, scale, W, bias, imp, coef, RELU: tl.constexpr):
    """Loss sum, dW [MP, NP] and db [NP] of the samples b = 4 g + lane fed by Philox words r [BG, NP]."""
    valid = (g * LANES + lane) < B  # [BG]
    x = tl.where(valid[:, None], word_to_feature(r, thr[None, :], scale[None, :]), 0.0)  # [BG, NP]
    h = tl.sum(x[:, None, :] * W[None, :, :], axis=2)  # [BG, MP]
    z = tl.sum(h[:, :, None] * W[None, :, :], axis=1) + bias[None, :]  # [BG, NP]
    y = tl.maximum(z, 0.0) if RELU else z
    diff = tl.where(valid[:, None], y - x, 0.0)
    wdiff = imp[None, :] * diff
    loss = tl.sum(tl.sum(wdiff * diff, axis=1), axis=0)
    gz = coef * wdiff
    if RELU:
        gz = tl.where(z > 0.0, gz, 0.0)
    gh = tl.sum(gz[:, None, :] * W[None, :, :], axis=2)  # [BG, MP]
    dW = tl.sum(h[:, :, None] * gz[:, None, :] + gh[:, :, None] * x[:, None, :], axis=0)  # [MP, NP]
    return loss, dW, tl.sum(gz, axis=0)


@kernel
def _train_small_kernel(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr,
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
    groups = (B + LANES - 1) // LANES
    for s in range(n_steps):
        t = t0 + s
        loss = 0.0
        dW = tl.zeros((MP, NP), dtype=tl.float32)
        db = tl.zeros((NP,), dtype=tl.float32)
        for g0 in range(0, groups, BG):
            g = g0 + tl.arange(0, BG)  # [BG]
            r0, r1, r2, r3 = philox_words(seed, (g[:, None] * n + offs_n[None, :]).to(tl.uint32), t)
            l0, a0, c0 = _lane_grads(r0, 0, g, B, thr, scale, W, bias, imp, coef, RELU)
            l1, a1, c1 = _lane_grads(r1, 1, g, B, thr, scale, W, bias, imp, coef, RELU)
            l2, a2, c2 = _lane_grads(r2, 2, g, B, thr, scale, W, bias, imp, coef, RELU)
            l3, a3, c3 = _lane_grads(r3, 3, g, B, thr, scale, W, bias, imp, coef, RELU)
            loss += (l0 + l1) + (l2 + l3)
            dW += (a0 + a1) + (a2 + a3)
            db += (c0 + c1) + (c2 + c3)
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


def train_small(state, data, consts, loss, t0: int, n_steps: int, total_steps: int, log_every: int,
                hyper, cfg):
    """Launch: advance every model by n_steps from step t0. state/data: see superpos.triton_backend."""
    K, m, n = state.W_in.shape
    _train_small_kernel[(K,)](
        state.W_in, state.b_in, state.W_out, state.b_out, state.mW, state.vW, state.mb, state.vb,
        data.seed, data.thr, data.scale, data.importance, consts, loss,
        n, m, data.batch_size, t0, n_steps, total_steps, log_every, loss.shape[1],
        hyper.coef, hyper.inv_bn, hyper.beta1, hyper.beta2, hyper.eps,
        MP=cfg.MP, NP=cfg.NP, BG=cfg.BG, RELU=data.relu,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=cfg.fp_fusion)
