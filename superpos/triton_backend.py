"""The "triton" backend: fused kernels advance all models by many steps per launch."""
from __future__ import annotations

import os

import torch

from . import rng
from .checkpoint import TrainCheckpoint
from .config import TrainConfig, TrainResult
from .reference import model_status
from .snapshots import SnapshotRecorder, launch_bounds
from .spec import Population

# Bound on one launch's work (samples x 10 m n FLOPs) so progress can advance between launches:
# 2e11 FLOPs is a few tens of ms on an H100 (estimate, not yet measured on a GPU).
FLOPS_PER_LAUNCH = 2e11


def unsupported_by_kernels(pop: Population) -> str | None:
    """The first option of `pop` the Triton kernels do not implement yet, as `name=value`, or None."""
    return unsupported_option(pop.spec, pop.data)


# Issue-13 options a kernel kind implements (kernels.configs.choose_config picks the kind from n and m):
# the tiled kernel has the privileged basis (h = ReLU(W x), its HRELU constexpr).
KERNEL_OPTIONS = {"tiled": {("hidden_activation", "relu")}}


def _kernel_kind(spec) -> str:
    from .kernels.configs import choose_config
    return choose_config(spec.n_features, spec.n_hidden, 1024).kind  # the kind does not depend on the batch


def unsupported_option(spec, data) -> str | None:
    """unsupported_by_kernels for a ModelSpec and a DataSpec."""
    accepted = KERNEL_OPTIONS.get(_kernel_kind(spec), set())
    for name, default in (("hidden_activation", "none"), ("tied", True), ("target", "identity"),
                          ("value_range", "unit")):
        if getattr(spec, name) != default and (name, getattr(spec, name)) not in accepted:
            return f"{name}={getattr(spec, name)!r}"
    for name in ("correlated_sets", "anticorrelated_sets"):
        if getattr(data, name):
            return f"{name}={[list(s) for s in getattr(data, name)]}"
    if data.dataset_size is not None:
        return f"dataset_size={data.dataset_size}"
    return None


def _device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return torch.device("cpu")
    raise ValueError("backend 'triton' needs a CUDA device (or TRITON_INTERPRET=1 to interpret on the CPU)")


# The oldest GPU the kernels are compiled and checked for (superpos.compile_check): sm_75 (T4). tf32
# tensor-core products need sm_80 (Ampere); Triton cannot build the tf32 tiled kernels for sm_75.
MIN_CAPABILITY = (7, 5)
TF32_MIN_CAPABILITY = (8, 0)


def unsupported_reason(capability: tuple, input_precision: str = "ieee") -> str:
    """Why the kernels cannot run on a GPU of this compute capability ("" when they can)."""
    name = f"sm_{capability[0]}{capability[1]}"
    if tuple(capability) < MIN_CAPABILITY:
        return f"backend 'triton' needs a GPU of compute capability 7.5 or newer; this one is {name} (use backend='torch')"
    if input_precision in ("tf32", "tf32x3") and tuple(capability) < TF32_MIN_CAPABILITY:
        return f"input_precision {input_precision!r} needs compute capability 8.0 or newer; this GPU is {name} (use 'ieee')"
    return ""


def check_device(device: torch.device, input_precision: str) -> None:
    if device.type == "cuda":
        reason = unsupported_reason(torch.cuda.get_device_capability(device), input_precision)
        if reason:
            raise ValueError(reason)


def as_uint32_bits(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> int32 tensor with the same 32 bits (the kernels bitcast back)."""
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def make_data(pop: Population, batch_size: int, device):
    from .kernels.buffers import TrainData
    thr, scale = rng.data_thresholds(pop.feature_probability)
    return TrainData(seed=pop.seed.to(device), thr=as_uint32_bits(thr).to(device), scale=scale.to(device),
                     importance=pop.importance.to(device), batch_size=batch_size,
                     relu=pop.spec.activation == "relu", hidden_relu=pop.spec.hidden_activation == "relu")


def steps_per_launch(pop: Population, cfg: TrainConfig) -> int:
    n, m = pop.spec.n_features, pop.spec.n_hidden
    work = 10.0 * m * n * cfg.batch_size * len(pop) + 1.0
    return int(max(1, min(cfg.steps, FLOPS_PER_LAUNCH // work)))


def sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def train_triton(pop: Population, cfg: TrainConfig, device=None, progress=None, input_precision="ieee",
                 max_steps_per_launch: int | None = None, split: bool | None = None, resume=None,
                 checkpoint=None) -> TrainResult:
    """`split` (tiled kernels only): None picks by kernels.configs.use_split; the result is the same.

    resume / checkpoint: as superpos.reference.train_torch (checkpoint is offered between launches).
    """
    from .kernels.buffers import Hyper, TrainState
    from .kernels.configs import choose_config, use_split
    from .kernels.train_small import train_small
    from .kernels.train_tiled import train_tiled

    why = unsupported_by_kernels(pop)
    if why is not None:
        raise ValueError(f"backend: 'triton' has no kernel for {why}; use backend 'torch' (or 'auto')")
    device = _device(device)
    check_device(device, input_precision)
    n, m = pop.spec.n_features, pop.spec.n_hidden
    kcfg = choose_config(n, m, cfg.batch_size, input_precision)
    if kcfg.kind == "small":
        launch = train_small
    else:
        split = use_split(kcfg, len(pop), sm_count(device)) if split is None else split
        launch = lambda *args: train_tiled(*args, split=split)  # noqa: E731
    start = 0
    if resume is None:
        W, b = pop.W.to(device), pop.b.to(device)
        moments = (torch.zeros_like(W), torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(b))
    else:
        resume.check(pop, cfg)
        start = resume.step
        W, b = resume.params["W"].to(device), resume.params["b"].to(device)
        moments = tuple(group[k].to(device).clone() for k, group in (
            ("W", resume.exp_avg), ("W", resume.exp_avg_sq), ("b", resume.exp_avg), ("b", resume.exp_avg_sq)))
    state = TrainState(W.clone(), b.clone(), torch.full_like(W, float("nan")), torch.full_like(b, float("nan")),
                       *moments)
    data = make_data(pop, cfg.batch_size, device)
    B = cfg.batch_size
    hyper = Hyper(coef=2.0 / (B * n), inv_bn=1.0 / (B * n), beta1=cfg.betas[0], beta2=cfg.betas[1], eps=cfg.eps)
    consts = cfg.adamw_constants().to(device)
    logged = cfg.logged_steps()
    loss = torch.full((len(pop), len(logged)), float("nan"), dtype=torch.float32, device=device)
    if resume is not None:
        loss.copy_(resume.loss_history)
    chunk = max_steps_per_launch or steps_per_launch(pop, cfg)
    snaps = SnapshotRecorder(cfg, len(pop), {"W": W, "b": b}, resume.snapshots if resume is not None else None)
    # a launch ends at every snapshot step (and a resumed run starts where it stopped)
    bounds = sorted({start} | {t for t in launch_bounds(cfg.steps, chunk, snaps.steps) if t > start})
    for t0, t1 in zip(bounds[:-1], bounds[1:]):
        snaps.record(t0, {"W": state.W_in, "b": state.b_in})
        launch(state, data, consts, loss, t0, t1 - t0, cfg.steps, cfg.log_every, hyper, kcfg)
        state.swap()
        if progress is not None:
            progress(t1)
        if checkpoint is not None and t1 < cfg.steps:
            checkpoint(t1, lambda: TrainCheckpoint.capture(
                t1, {"W": state.W_in, "b": state.b_in}, {"W": state.mW, "b": state.mb},
                {"W": state.vW, "b": state.vb}, loss, snaps.store))
    W, b, history = state.W_in.cpu(), state.b_in.cpu(), loss.cpu()
    return TrainResult(W=W, b=b, loss_history=history, loss_steps=logged,
                       status=model_status(W, b, history), backend="triton", snapshots=snaps.result())
