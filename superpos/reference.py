"""The PyTorch reference trainer: all K models as one batched computation, explicit gradients.

It is the oracle for the Triton kernels, and it runs anywhere (CPU or CUDA), in float32.
Per model (tied: D = W^T and no b_hidden; untied: D = W_dec):
    a = W x (+ b_hidden), h = hact(a), z = D h + b, x' = act(z), loss = mean_{b,i} I_i (t_i - x'_i)^2
with target t = x, or |x| (target="abs"). Gradients (per model, summed over the batch):
    gz = 2 I (x' - t) / (B n) * act'(z);  db = sum_b gz;  gh = D^T gz;  ga = gh * hact'(a);  db_hidden = sum_b ga
    tied: dW = h^T gz + ga^T x;  untied: dW = ga^T x, dW_dec = gz^T h
"""
from __future__ import annotations

import torch

from .checkpoint import TrainCheckpoint
from .config import TrainConfig, TrainResult
from .snapshots import SnapshotRecorder
from .spec import Population, batch_sampler


def forward_backward(W, b, x, importance, relu: bool, *, hidden_relu: bool = False, W_dec=None, b_hidden=None,
                     target_abs: bool = False, need_loss: bool = True):
    """Loss (K,) and the gradients of (W, b) - and of (W_dec, b_hidden) when given - for a batch x (K,B,n).
    need_loss=False skips the loss (None): the trainer logs it every log_every steps. The [K, B, n]
    element-wise steps work in place on their own temporaries: the same operations in the same order as
    the out-of-place form, so the same bits, with fewer passes over memory (the CPU path's main cost)."""
    B, n = x.shape[1], x.shape[2]
    a = torch.bmm(x, W.transpose(1, 2))  # [K, B, m]
    if b_hidden is not None:
        a = a + b_hidden.unsqueeze(1)
    h = torch.relu(a) if hidden_relu else a
    z = torch.baddbmm(b.unsqueeze(1), h, W if W_dec is None else W_dec.transpose(1, 2))  # [K, B, n]
    # y - t, in place on y (a fresh tensor: relu's output, or z itself, which nothing reads after it)
    diff = (torch.relu(z) if relu else z).sub_(x.abs() if target_abs else x)
    imp = importance.unsqueeze(1)  # [K, 1, n]
    loss = (imp * diff * diff).sum(dim=(1, 2)) / (B * n) if need_loss else None
    gz = diff.mul_((2.0 / (B * n)) * imp)  # ((2 / (B n)) imp) diff, as before; diff is not read again
    if relu:
        gz.mul_(z > 0)
    db = gz.sum(dim=1)
    gh = torch.bmm(gz, W.transpose(1, 2) if W_dec is None else W_dec)  # [K, B, m]
    if hidden_relu:
        gh = gh * (a > 0)
    dW_enc = torch.bmm(gh.transpose(1, 2), x)
    if W_dec is None:
        return loss, torch.bmm(h.transpose(1, 2), gz) + dW_enc, db
    return loss, dW_enc, db, torch.bmm(gz.transpose(1, 2), h), gh.sum(dim=1)


def population_forward_backward(pop_spec, params: dict, x, importance, need_loss: bool = True):
    """forward_backward for the model family of `pop_spec`, on a dict of parameters (Population.params order)."""
    return forward_backward(params["W"], params["b"], x, importance, pop_spec.activation == "relu",
                            hidden_relu=pop_spec.hidden_activation == "relu", W_dec=params.get("W_dec"),
                            b_hidden=params.get("b_hidden"), target_abs=pop_spec.target == "abs",
                            need_loss=need_loss)


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, consts, betas, eps):
    """One in-place AdamW step (torch.optim.AdamW's formula) with per-step constants from the config."""
    decay, step_size, bc2_sqrt, omb1, omb2 = (float(c) for c in consts)
    b1, b2 = betas
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        p.mul_(decay)
        m.mul_(b1).add_(g, alpha=omb1)
        v.mul_(b2).addcmul_(g, g, value=omb2)
        p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)


def train_torch(pop: Population, cfg: TrainConfig, device=None, progress=None, resume=None,
                checkpoint=None, dtype=torch.float32) -> TrainResult:
    """Train every model of `pop` with the reference path; `progress(steps_done)` is called as it goes.

    dtype: float32 (the contract every backend meets), or float64 for an oracle of the float32 paths:
    the same data (drawn in float32, as every backend sees it), parameters, moments and arithmetic in
    float64; the returned weights stay float64.

    resume: a TrainCheckpoint to continue from; checkpoint(step, snapshot): called at each progress point,
    `snapshot()` returns the TrainCheckpoint of that moment (see superpos.checkpoint).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    params, exp_avgs, exp_avg_sqs, history, start = _initial_state(pop, cfg, resume, device, dtype)
    imp = pop.importance.to(device, dtype)
    consts = cfg.adamw_constants(dtype).tolist()
    logged = cfg.logged_steps()
    log_index = {int(s): j for j, s in enumerate(logged)}
    snaps = SnapshotRecorder(cfg, len(pop), params, resume.snapshots if resume is not None else None)
    report_every = max(1, cfg.steps // 100)
    # full-batch training on a finite dataset sees the same batch every step: draw it once
    draw = batch_sampler(pop, cfg.batch_size, device=device)
    fixed = draw(0).to(dtype) if pop.data.fixed_batch(cfg.batch_size) else None
    for t in range(start, cfg.steps):
        snaps.record(t, params)
        x = fixed if fixed is not None else draw(t).to(dtype)
        loss, *grads = population_forward_backward(pop.spec, params, x, imp, need_loss=t in log_index)
        if t in log_index:
            history[:, log_index[t]] = loss.detach().cpu()
        adamw_step(params.values(), grads, exp_avgs, exp_avg_sqs, consts[t], cfg.betas, cfg.eps)
        if (t + 1) % report_every == 0 or t + 1 == cfg.steps:
            if progress is not None:
                progress(t + 1)
            if checkpoint is not None and t + 1 < cfg.steps:
                names = list(params)
                checkpoint(t + 1, lambda: TrainCheckpoint.capture(
                    t + 1, params, dict(zip(names, exp_avgs)), dict(zip(names, exp_avg_sqs)), history, snaps.store))
    params = {k: v.cpu() for k, v in params.items()}
    W, b = params.pop("W"), params.pop("b")
    return TrainResult(W=W, b=b, loss_history=history, loss_steps=logged,
                       status=model_status(W, b, history, *params.values()), backend="torch",
                       extra=params, snapshots=snaps.result())


def _initial_state(pop: Population, cfg: TrainConfig, resume, device, dtype=torch.float32):
    """(params, first moments, second moments, loss history, first step): from the init or a TrainCheckpoint."""
    if resume is None:
        params = {k: v.to(device, dtype).clone() for k, v in pop.params().items()}
        history = torch.full((len(pop), len(cfg.logged_steps())), float("nan"), dtype=torch.float32)
        zeros = lambda: [torch.zeros_like(p) for p in params.values()]  # noqa: E731
        return params, zeros(), zeros(), history, 0
    resume.check(pop, cfg)
    params = {k: resume.params[k].to(device, dtype).clone() for k in pop.params()}
    moments = lambda d: [d[k].to(device, dtype).clone() for k in params]  # noqa: E731
    return params, moments(resume.exp_avg), moments(resume.exp_avg_sq), resume.loss_history.clone().cpu(), resume.step


def model_status(W, b, history, *more) -> list:
    """"ok", or "diverged" where a model's loss or parameters stopped being finite."""
    finite = torch.isfinite(history).all(1)
    for p in (W, b) + more:
        finite &= torch.isfinite(p).flatten(1).all(1)
    return ["ok" if f else "diverged" for f in finite.tolist()]
