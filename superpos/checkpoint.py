"""A population's training state mid-run, to stop and continue bit-identically.

Since a model's batch at step t is a pure function of (seed, t, config), the state after step s - 1 is
all a trainer needs to continue: W, b, the AdamW moments, the loss history logged so far and s. Every
backend starts from a `TrainCheckpoint` (`sp.train(..., resume=ckpt)`) and hands one out through its
`checkpoint(step, snapshot)` callback, where `snapshot()` builds it on demand (a copy to the CPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .spec import require_int

TENSORS = ("W", "b", "exp_avg_W", "exp_avg_b", "exp_avg_sq_W", "exp_avg_sq_b", "loss_history")


@dataclass
class TrainCheckpoint:
    """State of K models after `step` steps (the next step to run is `step`)."""

    step: int
    W: torch.Tensor  # (K, m, n)
    b: torch.Tensor  # (K, n)
    exp_avg_W: torch.Tensor  # AdamW first moments
    exp_avg_b: torch.Tensor
    exp_avg_sq_W: torch.Tensor  # AdamW second moments
    exp_avg_sq_b: torch.Tensor
    loss_history: torch.Tensor  # (K, L) losses logged at steps < step; NaN after

    def check(self, pop, cfg) -> "TrainCheckpoint":
        """ValueError unless this state fits population `pop` trained with `cfg`."""
        require_int("resume.step", self.step, 0, cfg.steps)
        K, m, n = len(pop), pop.spec.n_hidden, pop.spec.n_features
        shapes = {"W": (K, m, n), "b": (K, n), "exp_avg_W": (K, m, n), "exp_avg_b": (K, n),
                  "exp_avg_sq_W": (K, m, n), "exp_avg_sq_b": (K, n), "loss_history": (K, len(cfg.logged_steps()))}
        for name, shape in shapes.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != torch.float32:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"resume.{name} must be a float32 tensor of shape {shape}, got {got}")
        return self

    def select(self, index) -> "TrainCheckpoint":
        """The state of the models at `index` (a slice), for a population split in parts."""
        return TrainCheckpoint(self.step, *(getattr(self, k)[index] for k in TENSORS))

    def to_tensors(self) -> dict:
        return {k: getattr(self, k).contiguous() for k in TENSORS}

    @classmethod
    def from_tensors(cls, step: int, tensors: dict) -> "TrainCheckpoint":
        return cls(int(step), *(tensors[k] for k in TENSORS))
