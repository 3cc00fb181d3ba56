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


# The model families and data options beyond the plain model (tied, no hidden activation, identity target,
# unit values, independent features, a fresh batch every step), by kernel kind: what each kernel
# implements, declared here and nowhere else (both kernels now take every option).
OPTIONS = ("hidden_activation", "tied", "target", "value_range", "correlated_sets", "anticorrelated_sets",
           "dataset_size")
KERNEL_SUPPORTS = {"small": frozenset(OPTIONS), "tiled": frozenset(OPTIONS)}


def unsupported_by_kernels(pop: Population, batch_size: int = 1024) -> str | None:
    """The first option of `pop` the Triton kernel it would train on does not implement, as
    `name=value (kind kernel)`, or None."""
    return unsupported_option(pop.spec, pop.data, batch_size=batch_size)


def _options_in_use(spec, data) -> list:
    """[(name, value)] of the options `spec`/`data` set away from the plain model, in OPTIONS order."""
    used = [(name, getattr(spec, name)) for name, default in (
        ("hidden_activation", "none"), ("tied", True), ("target", "identity"), ("value_range", "unit"))
        if getattr(spec, name) != default]
    used += [(name, [list(s) for s in getattr(data, name)]) for name in ("correlated_sets", "anticorrelated_sets")
             if getattr(data, name)]
    if data.dataset_size is not None:
        used.append(("dataset_size", data.dataset_size))
    return used


def kernel_kind(spec, batch_size: int = 1024) -> str:
    """Which kernel trains this model family at this shape: "small" or "tiled" (configs.choose_config)."""
    from .kernels.configs import choose_config
    return choose_config(spec.n_features, spec.n_hidden, batch_size, **family_config(spec)).kind


def family_config(spec, data=None) -> dict:
    """The family's (and the data's, when given) keyword arguments of kernels.configs.choose_config."""
    return {"gram": spec.tied and spec.hidden_activation == "none", "untied": not spec.tied,
            "finite_dataset": data is not None and data.dataset_size is not None,
            "plain": data is not None and not _options_in_use(spec, data)}


def launch_capability(device: torch.device):
    """The compute capability the launches are for: the CUDA device's, else the target set around a
    capture (kernels.configs.target_capability; None: the generic blocks)."""
    from .kernels.configs import current_target
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else current_target()


def unsupported_option(spec, data, kind: str | None = None, batch_size: int = 1024) -> str | None:
    """unsupported_by_kernels for a ModelSpec and a DataSpec (kind: the kernel; default the one the shape gets)."""
    kind = kind or kernel_kind(spec, batch_size)
    for name, value in _options_in_use(spec, data):
        if name not in KERNEL_SUPPORTS[kind]:
            shown = repr(value) if isinstance(value, str) else value
            return f"{name}={shown} ({kind} kernel, n={spec.n_features}, m={spec.n_hidden})"
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
    """The kernels' TrainData: rng.py's tables and the family's switches; batch_size is the configured
    one (the data's real batch is min(batch_size, dataset_size))."""
    from .kernels.buffers import TrainData
    from .kernels.configs import TINY_MAX_N
    from .kernels.philox_data import gate_src_code
    d, spec = pop.data, pop.spec
    tab = rng.data_tables(pop.feature_probability, d.correlated_sets, d.anticorrelated_sets)
    anti = torch.zeros(spec.n_features, dtype=torch.bool)
    for s in d.anticorrelated_sets:
        anti[list(s)] = True
    bits = lambda t: as_uint32_bits(t).to(device)  # noqa: E731
    return TrainData(seed=pop.seed.to(device), thr=bits(tab.hi), scale=tab.scale.to(device),
                     importance=pop.importance.to(device), batch_size=d.batch_size(batch_size),
                     relu=spec.activation == "relu", hidden_relu=spec.hidden_activation == "relu",
                     target_abs=spec.target == "abs", symmetric=spec.value_range == "symmetric", sets=d.has_sets,
                     lo=bits(tab.lo), off=bits(tab.off), gate=tab.gate.to(torch.int32).to(device),
                     src=tab.src.to(torch.int32).to(device),
                     gate_src=gate_src_code(tab.gate, tab.src, anti) if spec.n_features <= TINY_MAX_N else 0,
                     dataset_size=d.dataset_size)


def steps_per_launch(pop: Population, cfg: TrainConfig) -> int:
    n, m = pop.spec.n_features, pop.spec.n_hidden
    work = 10.0 * m * n * cfg.batch_size * len(pop) + 1.0
    return int(max(1, min(cfg.steps, FLOPS_PER_LAUNCH // work)))


def sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def train_triton(pop: Population, cfg: TrainConfig, device=None, progress=None, input_precision="ieee",
                 max_steps_per_launch: int | None = None, split: bool | None = None, resume=None,
                 checkpoint=None, kernel_config: dict | None = None) -> TrainResult:
    """`split` (tiled kernels only): None picks by kernels.configs.use_split; the result is the same.
    kernel_config: block settings to measure instead of the chosen ones (kernels.configs.TUNABLE: BG,
    num_warps, max_registers, num_stages, fp_fusion), e.g. {"max_registers": 128}; for tuning and diagnosis on a GPU.

    resume / checkpoint: as superpos.reference.train_torch (checkpoint is offered between launches).
    """
    from .kernels.buffers import Hyper, TrainState
    from .kernels.configs import choose_config, use_split, with_overrides
    from .kernels.train_small import train_small
    from .kernels.train_tiled import train_tiled

    why = unsupported_by_kernels(pop, cfg.batch_size)
    if why is not None:
        raise ValueError(f"backend: 'triton' has no kernel for {why}; use backend 'torch' (or 'auto')")
    device = _device(device)
    check_device(device, input_precision)
    if device.type != "cuda":  # Triton's interpreter: float arguments as float32, as a launch passes them
        from .interpreter_args import interpret_as_a_gpu_launch
        interpret_as_a_gpu_launch()
    n, m = pop.spec.n_features, pop.spec.n_hidden
    kcfg = choose_config(n, m, cfg.batch_size, input_precision, **family_config(pop.spec, pop.data),
                         capability=launch_capability(device))
    kcfg = with_overrides(kcfg, kernel_config)
    if kcfg.kind == "small":
        launch = train_small
    else:
        split = use_split(kcfg, len(pop), sm_count(device)) if split is None else split
        launch = lambda *args: train_tiled(*args, split=split)  # noqa: E731
    start = 0
    if resume is None:
        params = {k: v.to(device) for k, v in pop.params().items()}
        exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
        exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
    else:
        resume.check(pop, cfg)
        start = resume.step
        params, exp_avg, exp_avg_sq = ({k: group[k].to(device) for k in pop.params()}
                                       for group in (resume.params, resume.exp_avg, resume.exp_avg_sq))
    state = TrainState.start(params, exp_avg, exp_avg_sq)
    data = make_data(pop, cfg.batch_size, device)
    B = data.batch_size  # the batch's real size (a dataset smaller than the batch is the whole batch)
    hyper = Hyper(coef=2.0 / (B * n), inv_bn=1.0 / (B * n), beta1=cfg.betas[0], beta2=cfg.betas[1], eps=cfg.eps)
    consts = cfg.adamw_constants().to(device)
    logged = cfg.logged_steps()
    loss = torch.full((len(pop), len(logged)), float("nan"), dtype=torch.float32, device=device)
    if resume is not None:
        loss.copy_(resume.loss_history)
    chunk = max_steps_per_launch or steps_per_launch(pop, cfg)
    snaps = SnapshotRecorder(cfg, len(pop), params, resume.snapshots if resume is not None else None)
    # a launch ends at every snapshot step (and a resumed run starts where it stopped)
    bounds = sorted({start} | {t for t in launch_bounds(cfg.steps, chunk, snaps.steps) if t > start})
    for t0, t1 in zip(bounds[:-1], bounds[1:]):
        snaps.record(t0, state.params())
        launch(state, data, consts, loss, t0, t1 - t0, cfg.steps, cfg.log_every, hyper, kcfg)
        state.swap()
        if progress is not None:
            progress(t1)
        if checkpoint is not None and t1 < cfg.steps:
            checkpoint(t1, lambda: TrainCheckpoint.capture(t1, state.params(), state.exp_avg(), state.exp_avg_sq(),
                                                           loss, snaps.store))
    final = {k: v.cpu() for k, v in state.params().items()}
    W, b, history = final.pop("W"), final.pop("b"), loss.cpu()
    return TrainResult(W=W, b=b, loss_history=history, loss_steps=logged,
                       status=model_status(W, b, history, *final.values()), backend="triton", extra=final,
                       snapshots=snaps.result())
