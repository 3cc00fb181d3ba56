"""Fused training of larger models (n in the hundreds, m <= 64): one program per model, tl.dot tiles.

W lives in W_out (copied from W_in at the start), the AdamW moments and the gradient scratch in global
memory: one model's state is 20 m n bytes, L2-resident for the populations this targets. Per step and
per batch tile of 4 x BG samples (the four Philox lanes, kept as four [BG, NC] blocks):
    pass 1  h  = x W^T                         (over n-chunks of NC features)
    pass 2  z  = h W + b, gz, gh = gz W^T, dW += h^T gz, db += sum gz
    pass 3  dW += gh^T x
then AdamW over the n-chunks. x is regenerated from Philox in each pass instead of being stored: three
Philox calls per 4 features cost less than the 30 m FLOPs each feature feeds in pass 2 alone for m >= 16.
"""
import triton
import triton.language as tl

from .adamw import adamw_update, load_step_constants
from .philox_data import LANES, batch_block
from .train_small import log_loss


@triton.jit
def _chunk_masks(c, offs_c, n, mask_m):
    """Columns of the n-chunk starting at c, their mask, and the [MP, NC] weight-tile mask."""
    cols = c + offs_c
    mask_c = cols < n
    return cols, mask_c, mask_m[:, None] & mask_c[None, :]


@triton.jit
def _train_tiled_kernel(W_in, b_in, W_out, b_out, mW_ptr, vW_ptr, mb_ptr, vb_ptr, dW_ptr, db_ptr,
                        seed_ptr, thr_ptr, scale_ptr, imp_ptr, consts_ptr, loss_ptr,
                        n, m, B, t0, n_steps, total_steps, log_every, n_log,
                        coef, inv_bn, beta1, beta2, eps,
                        MP: tl.constexpr, NC: tl.constexpr, BG: tl.constexpr, RELU: tl.constexpr,
                        PREC: tl.constexpr):
    k = tl.program_id(0).to(tl.int64)
    offs_m = tl.arange(0, MP)
    offs_c = tl.arange(0, NC)
    mask_m = offs_m < m
    o_w = k * m * n + offs_m[:, None] * n  # [MP, 1] row starts of this model's W (add columns)
    o_b = k * n
    thr_k = thr_ptr + k * n
    scale_k = scale_ptr + k * n
    seed = tl.load(seed_ptr + k)
    # W_out becomes the working copy; gradient scratch starts at zero.
    for c in range(0, n, NC):
        cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
        tl.store(W_out + o_w + cols[None, :], tl.load(W_in + o_w + cols[None, :], mask=mw), mask=mw)
        tl.store(dW_ptr + o_w + cols[None, :], tl.zeros((MP, NC), dtype=tl.float32), mask=mw)
        tl.store(b_out + o_b + cols, tl.load(b_in + o_b + cols, mask=mask_c), mask=mask_c)
        tl.store(db_ptr + o_b + cols, tl.zeros((NC,), dtype=tl.float32), mask=mask_c)
    tl.debug_barrier()
    groups = (B + LANES - 1) // LANES
    for s in range(n_steps):
        t = t0 + s
        loss = 0.0
        for g0 in range(0, groups, BG):
            # pass 1: h = x W^T
            h = tl.zeros((BG * LANES, MP), dtype=tl.float32)
            for c in range(0, n, NC):
                cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
                WcT = tl.trans(tl.load(W_out + o_w + cols[None, :], mask=mw, other=0.0))  # [NC, MP]
                x, valid = batch_block(seed, t, g0, B, n, cols, mask_c, thr_k, scale_k, BG)
                h = tl.dot(x, WcT, h, input_precision=PREC)
            # pass 2: outputs, loss, gz; gh = gz W^T; dW += h^T gz; db += sum gz
            gh = tl.zeros((BG * LANES, MP), dtype=tl.float32)
            for c in range(0, n, NC):
                cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
                Wc = tl.load(W_out + o_w + cols[None, :], mask=mw, other=0.0)  # [MP, NC]
                bc = tl.load(b_out + o_b + cols, mask=mask_c, other=0.0)
                imp = tl.load(imp_ptr + o_b + cols, mask=mask_c, other=0.0)
                x, valid = batch_block(seed, t, g0, B, n, cols, mask_c, thr_k, scale_k, BG)
                z = tl.dot(h, Wc, input_precision=PREC) + bc[None, :]  # [4 BG, NC]
                y = tl.maximum(z, 0.0) if RELU else z
                diff = tl.where(valid, y - x, 0.0)
                wdiff = imp[None, :] * diff
                loss += tl.sum(tl.sum(wdiff * diff, axis=1), axis=0)
                gz = coef * wdiff
                if RELU:
                    gz = tl.where(z > 0.0, gz, 0.0)
                gh = tl.dot(gz, tl.trans(Wc), gh, input_precision=PREC)  # [4 BG, MP]
                dW = tl.load(dW_ptr + o_w + cols[None, :], mask=mw, other=0.0)
                tl.store(dW_ptr + o_w + cols[None, :], tl.dot(tl.trans(h), gz, dW, input_precision=PREC), mask=mw)
                db = tl.load(db_ptr + o_b + cols, mask=mask_c, other=0.0)
                tl.store(db_ptr + o_b + cols, db + tl.sum(gz, axis=0), mask=mask_c)
            tl.debug_barrier()
            # pass 3: dW += gh^T x
            for c in range(0, n, NC):
                cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
                x, valid = batch_block(seed, t, g0, B, n, cols, mask_c, thr_k, scale_k, BG)
                dW = tl.load(dW_ptr + o_w + cols[None, :], mask=mw, other=0.0)
                tl.store(dW_ptr + o_w + cols[None, :], tl.dot(tl.trans(gh), x, dW, input_precision=PREC), mask=mw)
            tl.debug_barrier()
        log_loss(loss_ptr + k * n_log, loss * inv_bn, t, total_steps, log_every, n_log)
        # AdamW over the n-chunks; the gradient scratch is zeroed for the next step as it is read.
        decay, step_size, bc2_sqrt = load_step_constants(consts_ptr, t)
        for c in range(0, n, NC):
            cols, mask_c, mw = _chunk_masks(c, offs_c, n, mask_m)
            p_w = o_w + cols[None, :]
            W, mW, vW = adamw_update(tl.load(W_out + p_w, mask=mw), tl.load(dW_ptr + p_w, mask=mw),
                                     tl.load(mW_ptr + p_w, mask=mw), tl.load(vW_ptr + p_w, mask=mw),
                                     decay, step_size, bc2_sqrt, beta1, beta2, eps)
            tl.store(W_out + p_w, W, mask=mw)
            tl.store(mW_ptr + p_w, mW, mask=mw)
            tl.store(vW_ptr + p_w, vW, mask=mw)
            tl.store(dW_ptr + p_w, tl.zeros((MP, NC), dtype=tl.float32), mask=mw)
            p_b = o_b + cols
            bias, mb, vb = adamw_update(tl.load(b_out + p_b, mask=mask_c), tl.load(db_ptr + p_b, mask=mask_c),
                                        tl.load(mb_ptr + p_b, mask=mask_c), tl.load(vb_ptr + p_b, mask=mask_c),
                                        decay, step_size, bc2_sqrt, beta1, beta2, eps)
            tl.store(b_out + p_b, bias, mask=mask_c)
            tl.store(mb_ptr + p_b, mb, mask=mask_c)
            tl.store(vb_ptr + p_b, vb, mask=mask_c)
            tl.store(db_ptr + p_b, tl.zeros((NC,), dtype=tl.float32), mask=mask_c)
        tl.debug_barrier()


def train_tiled(state, data, consts, loss, t0: int, n_steps: int, total_steps: int, log_every: int,
                hyper, cfg):
    """Launch: advance every model by n_steps from step t0 (state/data: kernels.buffers)."""
    import torch
    K, m, n = state.W_in.shape
    dW = torch.empty_like(state.W_in)  # scratch, zeroed by the kernel
    db = torch.empty_like(state.b_in)
    _train_tiled_kernel[(K,)](
        state.W_in, state.b_in, state.W_out, state.b_out, state.mW, state.vW, state.mb, state.vb, dW, db,
        data.seed, data.thr, data.scale, data.importance, consts, loss,
        n, m, data.batch_size, t0, n_steps, total_steps, log_every, loss.shape[1],
        hyper.coef, hyper.inv_bn, hyper.beta1, hyper.beta2, hyper.eps,
        MP=cfg.MP, NC=cfg.NP, BG=cfg.BG, RELU=data.relu, PREC=cfg.input_precision,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=cfg.fp_fusion)
