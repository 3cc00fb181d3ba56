"""Training hyper-parameters and the per-step constants every backend reads (one truth)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from .snapshots import check_snapshot_options, snapshot_schedule
from .spec import require_int, require_real

SCHEDULES = ("constant", "linear", "cosine")
# The per-step constant table is (steps, 5) float32, built in float64: 2**24 steps is ~1 GB to build.
MAX_STEPS = 1 << 24


@dataclass(frozen=True)
class TrainConfig:
    """AdamW training of every model, defaults as in the paper's official notebook."""

    steps: int = 10_000
    batch_size: int = 1024
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    log_every: int = 100
    snapshots: int = 0  # N log-spaced snapshot steps (superpos.snapshots), or
    snapshot_steps: tuple = ()  # explicit ones

    def __post_init__(self):
        require_int("steps", self.steps, 1, MAX_STEPS)
        require_int("batch_size", self.batch_size, 1, 2**24)
        require_real("lr", self.lr, 0, None)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if betas is None or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {self.betas!r}")
        for i, beta in enumerate(betas):
            require_real(f"betas[{i}]", beta, 0, 1, hi_open=True)
        object.__setattr__(self, "betas", tuple(float(x) for x in betas))
        require_real("eps", self.eps, 0, None, lo_open=True)
        require_real("weight_decay", self.weight_decay, 0, None)
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        require_int("warmup_steps", self.warmup_steps, 0)
        require_int("log_every", self.log_every, 1)
        require_int("snapshots", self.snapshots, 0, self.steps)
        object.__setattr__(self, "snapshot_steps",
                           check_snapshot_options(self.steps, self.snapshots, self.snapshot_steps))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["snapshot_steps"] = list(self.snapshot_steps)
        return d

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in fields(cls))

    # --- per-step constants, computed once in float64 and shared by every backend -------------
    def lr_at(self) -> np.ndarray:
        """Learning rate at each step t = 0..steps-1 (the notebook sets it before each step)."""
        t = np.arange(self.steps, dtype=np.float64)
        if self.lr_schedule == "constant":
            scale = np.ones_like(t)
        elif self.lr_schedule == "linear":
            scale = 1.0 - t / self.steps
        else:  # cosine, as the notebook: cos(pi/2 * t / (T - 1))
            scale = np.cos(0.5 * math.pi * t / max(self.steps - 1, 1))
        if self.warmup_steps:
            scale = scale * np.minimum(1.0, (t + 1) / self.warmup_steps)
        return self.lr * scale

    def adamw_constants(self, dtype=torch.float32) -> torch.Tensor:
        """(steps, 5) float32 table: [1 - lr_t wd, lr_t / (1 - b1^(t+1)), sqrt(1 - b2^(t+1)), 1 - b1, 1 - b2],
        each computed in float64 and rounded once (1 - b2 in float32 arithmetic from a rounded b2 = 0.999
        is 1.3e-5 short). (dtype=float64 keeps them unrounded: the reference's float64 oracle.)

        With it, step t of AdamW (torch.optim.AdamW's formula) is
            p = p * decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2
            p = p - step_size * m / (sqrt(v) / bc2_sqrt + eps)
        """
        lr = self.lr_at()
        k = np.arange(1, self.steps + 1, dtype=np.float64)
        b1, b2 = self.betas
        ones = np.ones_like(k)
        table = np.stack([1.0 - lr * self.weight_decay, lr / (1.0 - b1**k), np.sqrt(1.0 - b2**k),
                          (1.0 - b1) * ones, (1.0 - b2) * ones], axis=1)
        return torch.tensor(table, dtype=dtype)

    def snapshot_at(self) -> np.ndarray:
        """(S,) int64 steps whose parameters are snapshotted (empty: none)."""
        return snapshot_schedule(self.steps, self.snapshots, self.snapshot_steps)

    def logged_steps(self) -> np.ndarray:
        """Steps whose loss is recorded: every log_every-th from 0, and always the last."""
        s = np.arange(0, self.steps, self.log_every, dtype=np.int64)
        return s if s[-1] == self.steps - 1 else np.append(s, self.steps - 1)


@dataclass
class TrainResult:
    """Final weights and loss history of K models (the input population is left unchanged)."""

    W: torch.Tensor  # (K, m, n)
    b: torch.Tensor  # (K, n)
    loss_history: torch.Tensor  # (K, L) loss at each of loss_steps
    loss_steps: np.ndarray  # (L,)
    status: list = field(default_factory=list)  # "ok" | "diverged" per model
    backend: str = "torch"
    extra: dict = field(default_factory=dict)  # untied models: W_dec (K, n, m), b_hidden (K, m)
    snapshots: dict | None = None  # superpos.snapshots: {"steps": (S,), "W": (K, S, m, n), ...}

    @property
    def final_loss(self) -> torch.Tensor:
        return final_loss(self.loss_history)


# One logged loss is the loss of a single batch, noisy at the sparse end (few active features per batch), so
# best-of-seeds on it picks lucky batches. The mean of the last few logged losses is a steadier estimate.
FINAL_LOSS_WINDOW = 10


def final_loss(loss_history: torch.Tensor) -> torch.Tensor:
    """(K,) mean of the last FINAL_LOSS_WINDOW logged losses (fewer when fewer were logged)."""
    return loss_history[:, -FINAL_LOSS_WINDOW:].mean(dim=1)
