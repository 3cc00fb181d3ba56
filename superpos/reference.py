"""The PyTorch reference trainer: all K models as one batched computation, explicit gradients.

It is the oracle for the Triton kernels, and it runs anywhere (CPU or CUDA), in float32.
Per model: h = W x, z = W^T h + b, x' = act(z), loss = mean_{b,i} I_i (x_i - x'_i)^2.
Gradients (per model, summed over the batch):
    gz = 2 I (x' - x) / (B n) * act'(z);  db = sum_b gz;  gh = W gz;  dW = h^T gz + gh^T x
"""
from __future__ import annotations

import torch

from .checkpoint import TENSORS, TrainCheckpoint
from .config import TrainConfig, TrainResult
from .spec import Population, sample_batch


def forward_backward(W, b, x, importance, relu: bool):
    """Loss (K,) and gradients (dW (K,m,n), db (K,n)) for a batch x (K,B,n)."""
    B, n = x.shape[1], x.shape[2]
    h = torch.bmm(x, W.transpose(1, 2))  # [K, B, m]
    z = torch.baddbmm(b.unsqueeze(1), h, W)  # [K, B, n]
    y = torch.relu(z) if relu else z
    diff = y - x
    imp = importance.unsqueeze(1)  # [K, 1, n]
    loss = (imp * diff * diff).sum(dim=(1, 2)) / (B * n)
    gz = (2.0 / (B * n)) * imp * diff
    if relu:
        gz = gz * (z > 0)
    db = gz.sum(dim=1)
    gh = torch.bmm(gz, W.transpose(1, 2))  # [K, B, m]
    dW = torch.bmm(h.transpose(1, 2), gz) + torch.bmm(gh.transpose(1, 2), x)
    return loss, dW, db


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, consts, betas, eps):
    """One in-place AdamW step (torch.optim.AdamW's formula) with per-step constants from the config."""
    decay, step_size, bc2_sqrt = (float(c) for c in consts)
    b1, b2 = betas
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        p.mul_(decay)
        m.mul_(b1).add_(g, alpha=1.0 - b1)
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)


def train_torch(pop: Population, cfg: TrainConfig, device=None, progress=None, resume=None,
                checkpoint=None) -> TrainResult:
    """Train every model of `pop` with the reference path; `progress(steps_done)` is called as it goes.

    resume: a TrainCheckpoint to continue from; checkpoint(step, snapshot): called at each progress point,
    `snapshot()` returns the TrainCheckpoint of that moment (see superpos.checkpoint).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    W, b, state, history, start = _initial_state(pop, cfg, resume, device)
    imp = pop.importance.to(device)
    relu = pop.spec.activation == "relu"
    consts = cfg.adamw_constants().tolist()
    logged = cfg.logged_steps()
    log_index = {int(s): j for j, s in enumerate(logged)}
    report_every = max(1, cfg.steps // 100)
    for t in range(start, cfg.steps):
        x = sample_batch(pop, t, cfg.batch_size, device=device)
        loss, dW, db = forward_backward(W, b, x, imp, relu)
        if t in log_index:
            history[:, log_index[t]] = loss.detach().cpu()
        adamw_step((W, b), (dW, db), state[:2], state[2:], consts[t], cfg.betas, cfg.eps)
        if (t + 1) % report_every == 0 or t + 1 == cfg.steps:
            if progress is not None:
                progress(t + 1)
            if checkpoint is not None and t + 1 < cfg.steps:
                checkpoint(t + 1, lambda: TrainCheckpoint(t + 1, *(x.cpu().clone() for x in (W, b, *state)),
                                                          history.clone()))
    W, b = W.cpu(), b.cpu()
    return TrainResult(W=W, b=b, loss_history=history, loss_steps=logged,
                       status=model_status(W, b, history), backend="torch")


def _initial_state(pop: Population, cfg: TrainConfig, resume, device):
    """(W, b, [mW, mb, vW, vb], loss history, first step): from the init, or from a TrainCheckpoint."""
    if resume is None:
        W, b = pop.W.to(device).clone(), pop.b.to(device).clone()
        state = [torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(W), torch.zeros_like(b)]
        history = torch.full((len(pop), len(cfg.logged_steps())), float("nan"), dtype=torch.float32)
        return W, b, state, history, 0
    resume.check(pop, cfg)
    W, b, mW, mb, vW, vb = (getattr(resume, k).to(device).clone() for k in TENSORS[:6])
    return W, b, [mW, mb, vW, vb], resume.loss_history.clone().cpu(), resume.step


def model_status(W, b, history) -> list:
    """"ok", or "diverged" where a model's loss or parameters stopped being finite."""
    finite = torch.isfinite(history).all(1) & torch.isfinite(W).flatten(1).all(1) & torch.isfinite(b).all(1)
    return ["ok" if f else "diverged" for f in finite.tolist()]
