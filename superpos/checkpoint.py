"""A population's training state mid-run, to stop and continue bit-identically.

Since a model's batch at step t is a pure function of (seed, t, config), the state after step s - 1 is
all a trainer needs to continue: the parameters, the AdamW moments, the loss history logged so far, the
snapshots taken so far and s. Every
backend starts from a `TrainCheckpoint` (`sp.train(..., resume=ckpt)`) and hands one out through its
`checkpoint(step, snapshot)` callback, where `snapshot()` builds it on demand (a copy to the CPU).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .spec import require_int


@dataclass
class TrainCheckpoint:
    """State of K models after `step` steps (the next step to run is `step`).

    params, exp_avg, exp_avg_sq: name -> (K, ...) float32 tensors, the names of `Population.params()`
    (W, b; and W_dec, b_hidden for untied models); snapshots: name -> (K, S, ...) taken so far (NaN where
    not yet reached; {} when none are asked for)."""

    step: int
    params: dict
    exp_avg: dict
    exp_avg_sq: dict
    loss_history: torch.Tensor  # (K, L) losses logged at steps < step; NaN after
    snapshots: dict = field(default_factory=dict)

    # the tied model's tensors by name (tests and callers that know they hold W and b)
    W = property(lambda self: self.params["W"])
    b = property(lambda self: self.params["b"])
    exp_avg_W = property(lambda self: self.exp_avg["W"])
    exp_avg_sq_W = property(lambda self: self.exp_avg_sq["W"])

    def check(self, pop, cfg) -> "TrainCheckpoint":
        """ValueError unless this state fits population `pop` trained with `cfg`."""
        require_int("resume.step", self.step, 0, cfg.steps)
        shapes = {f"{group}.{k}": tuple(v.shape) for group in _GROUPS for k, v in pop.params().items()}
        shapes["loss_history"] = (len(pop), len(cfg.logged_steps()))
        got = self._flat(include_snapshots=False)
        if set(got) != set(shapes):
            raise ValueError(f"resume holds {sorted(got)}, this population needs {sorted(shapes)}")
        for name, shape in shapes.items():
            t = got[name]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != torch.float32:
                have = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"resume.{name} must be a float32 tensor of shape {shape}, got {have}")
        return self

    def select(self, index) -> "TrainCheckpoint":
        """The state of the models at `index` (a slice), for a population split in parts."""
        pick = lambda d: {k: v[index] for k, v in d.items()}  # noqa: E731
        return TrainCheckpoint(self.step, pick(self.params), pick(self.exp_avg), pick(self.exp_avg_sq),
                               self.loss_history[index], pick(self.snapshots))

    def _flat(self, include_snapshots=True) -> dict:
        out = {f"{group}.{k}": v for group in _GROUPS for k, v in getattr(self, group).items()}
        out["loss_history"] = self.loss_history
        if include_snapshots:
            out.update({f"snapshots.{k}": v for k, v in self.snapshots.items()})
        return out

    def to_tensors(self) -> dict:
        return {k: v.contiguous() for k, v in self._flat().items()}

    @classmethod
    def from_tensors(cls, step: int, tensors: dict) -> "TrainCheckpoint":
        groups = {g: {} for g in _GROUPS + ("snapshots",)}
        for key, v in tensors.items():
            if key != "loss_history":
                group, name = key.split(".", 1)
                groups[group][name] = v
        return cls(int(step), groups["params"], groups["exp_avg"], groups["exp_avg_sq"], tensors["loss_history"],
                   groups["snapshots"])

    @classmethod
    def capture(cls, step, params: dict, exp_avg: dict, exp_avg_sq: dict, loss_history, snapshots=None):
        """A CPU copy of a trainer's live state."""
        copy = lambda d: {k: v.detach().cpu().clone() for k, v in d.items()}  # noqa: E731
        return cls(int(step), copy(params), copy(exp_avg), copy(exp_avg_sq), loss_history.detach().cpu().clone(),
                   copy(snapshots or {}))


_GROUPS = ("params", "exp_avg", "exp_avg_sq")
