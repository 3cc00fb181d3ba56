"""`train`: pick a backend and train a population."""
from __future__ import annotations

import sys

import torch

from .config import TrainConfig, TrainResult
from .spec import Population

BACKENDS = ("auto", "torch", "triton")


def resolve_backend(backend: str) -> str:
    """'auto' -> 'triton' when CUDA and Triton are usable, else 'torch'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if torch.cuda.is_available():
        try:
            import triton  # noqa: F401
            return "triton"
        except ImportError:
            pass
    return "torch"


def train(pop: Population, cfg: TrainConfig | None = None, backend: str = "auto", device=None,
          progress=None, **kernel_options) -> TrainResult:
    """Train every model of `pop`; returns final W, b, loss history and per-model status.

    backend: "torch" (reference, CPU or CUDA), "triton" (fused kernels; CUDA, or the CPU interpreter
    when TRITON_INTERPRET=1) or "auto". `progress(steps_done)` is called between chunks of steps.
    """
    if not isinstance(pop, Population):
        raise ValueError(f"pop must be a Population, got {type(pop).__name__}")
    cfg = cfg if cfg is not None else TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    fell_back = resolve_backend(backend) == "triton"
    backend, device = _kernel_or_fallback(pop, cfg, backend, device)
    if fell_back and backend == "torch":
        kernel_options = {}  # "auto" fell back to the torch path: the triton-only options do not apply
    if backend == "torch":
        if kernel_options:
            raise ValueError(f"options {sorted(kernel_options)} apply to the triton backend only")
        from .reference import train_torch
        return train_torch(pop, cfg, device=device, progress=progress)
    from .triton_backend import train_triton
    return train_triton(pop, cfg, device=device, progress=progress, **kernel_options)


_TOLD = set()


def _kernel_or_fallback(pop: Population, cfg: TrainConfig, backend: str, device):
    """The backend (and device) that trains `pop`: "triton" is refused, in one line, for a model family or
    data option it has no kernel for; "auto" then says so once and uses the torch path on the same device."""
    resolved = resolve_backend(backend)
    if resolved != "triton":
        return resolved, device
    from .triton_backend import unsupported_by_kernels

    why = unsupported_by_kernels(pop)
    if why is None:
        return resolved, device
    if backend == "triton":
        raise ValueError(f"backend: 'triton' has no kernel for {why}; use backend 'torch' (or 'auto')")
    device = device if device is not None else "cuda"
    if why not in _TOLD:
        _TOLD.add(why)
        print(f"superpos: no triton kernel for {why}; training with the torch path on {device}", file=sys.stderr)
    return "torch", device
