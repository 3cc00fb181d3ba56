"""`train`: pick a backend and train a population."""
from __future__ import annotations

import contextlib
import sys

import torch

from .checkpoint import TrainCheckpoint
from .config import TrainConfig, TrainResult
from .spec import Population

BACKENDS = ("auto", "torch", "triton")
# The fused kernels' matmul precisions (kernels.configs.PRECISIONS, which imports triton: named here for
# the command line; tests/test_precision_option.py checks they agree). The torch path computes in float32.
PRECISIONS = ("ieee", "tf32x3", "tf32")


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
          progress=None, resume=None, checkpoint=None, **kernel_options) -> TrainResult:
    """Train every model of `pop`; returns final W, b, loss history and per-model status.

    backend: "torch" (reference, CPU or CUDA), "triton" (fused kernels; CUDA, or the CPU interpreter
    when TRITON_INTERPRET=1) or "auto".
    progress: True shows a progress bar (tqdm.auto: a widget in Jupyter, text in a terminal); a callable
    is called as `progress(steps_done)` between chunks of steps; None/False: silent.
    resume: a superpos.checkpoint.TrainCheckpoint to continue from (bit-identical to not stopping).
    checkpoint: `checkpoint(step, snapshot)` is called between chunks of steps; `snapshot()` returns the
    TrainCheckpoint of that moment.
    """
    if not isinstance(pop, Population):
        raise ValueError(f"pop must be a Population, got {type(pop).__name__}")
    cfg = cfg if cfg is not None else TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if resume is not None and not isinstance(resume, TrainCheckpoint):
        raise ValueError(f"resume must be a TrainCheckpoint, got {type(resume).__name__}")
    backend, device, fell_back = _kernel_or_fallback(pop, cfg, backend, device)
    if fell_back:
        kernel_options = {}  # "auto" fell back to the torch path: the triton-only options do not apply
    if backend == "torch" and kernel_options:
        raise ValueError(f"options {sorted(kernel_options)} apply to the triton backend only")
    with _progress_bar(progress, cfg, resume, len(pop)) as report:
        if backend == "torch":
            from .reference import train_torch
            return train_torch(pop, cfg, device=device, progress=report, resume=resume, checkpoint=checkpoint)
        from .triton_backend import train_triton
        return train_triton(pop, cfg, device=device, progress=report, resume=resume, checkpoint=checkpoint,
                            **kernel_options)


def bar_interval() -> float:
    """Seconds between a progress bar's redraws: 0.5 in a terminal or a notebook; 30 where stderr is a
    file (nohup, a batch scheduler's log), which every redraw would grow by a line's worth."""
    return 0.5 if sys.stderr.isatty() or "ipykernel" in sys.modules else 30.0


@contextlib.contextmanager
def _progress_bar(progress, cfg: TrainConfig, resume, n_models: int):
    """The `progress(steps_done)` callback the trainers get: the caller's, a tqdm.auto bar, or None."""
    if progress is None or progress is False:
        yield None
        return
    if callable(progress):
        yield progress
        return
    if progress is not True:
        raise ValueError(f"progress must be True, False, None or a callable, got {progress!r}")
    from tqdm.auto import tqdm

    start = resume.step if resume is not None else 0
    bar = tqdm(total=cfg.steps, initial=start, unit="step", desc=f"training {n_models} models",
               dynamic_ncols=True, mininterval=bar_interval())
    done = [start]

    def report(steps_done):
        bar.update(steps_done - done[0])
        done[0] = steps_done

    try:
        yield report
    finally:
        bar.close()


_TOLD = set()


def _kernel_or_fallback(pop: Population, cfg: TrainConfig, backend: str, device):
    """(backend, device, fell back) that train `pop`: "triton" is refused, in one line, for a model family
    or data option it has no kernel for; "auto" then says so once and uses the torch path on the same
    device (fell back = True)."""
    resolved = resolve_backend(backend)
    if resolved != "triton" or backend == "triton":  # an explicit "triton" is refused by train_triton itself
        return resolved, device, False
    from .triton_backend import unsupported_by_kernels

    why = unsupported_by_kernels(pop, cfg.batch_size)
    if why is None:
        return resolved, device, False
    device = device if device is not None else "cuda"
    if why not in _TOLD:
        _TOLD.add(why)
        print(f"superpos: no triton kernel for {why}; training with the torch path on {device}", file=sys.stderr)
    return "torch", device, True
