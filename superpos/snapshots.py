"""Snapshots of the parameters over training: which steps, recording them while training, reading them back.

A snapshot at step t holds the parameters the model has at the start of step t (after t updates) - the
ones whose loss is logged at step t - so step 0 is the init. `[train] snapshots = N` asks for N log-spaced
steps from 0 to steps - 1 (both included; fewer when rounding makes steps coincide), `snapshot_steps = [...]`
for explicit ones. A run stores them in each chunk's safetensors file as `snapshot_steps` (S,) int64 and
`snapshot.<name>` (k, S, ...) for every parameter (W, b, and W_dec, b_hidden for untied models); read them
with `superpos.load_run(DIR).snapshots(model_ids)`.
"""
from __future__ import annotations

import numpy as np
import torch

STEPS_KEY = "snapshot_steps"
PREFIX = "snapshot."


def check_snapshot_options(steps: int, snapshots: int, snapshot_steps) -> tuple:
    """Validate the two [train] keys against `steps`; returns snapshot_steps as a tuple of ints."""
    if snapshots != 0 and snapshots < 2:
        raise ValueError(f"snapshots must be 0 (none) or >= 2 (the first and last step included), got {snapshots}")
    if not isinstance(snapshot_steps, (list, tuple)) or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in snapshot_steps):
        raise ValueError(f"snapshot_steps must be a list of integer steps, got {snapshot_steps!r}")
    out = tuple(int(s) for s in snapshot_steps)
    if snapshots and out:
        raise ValueError("snapshot_steps: give either snapshots (a count) or snapshot_steps, not both")
    for s in out:
        if not 0 <= s < steps:
            raise ValueError(f"snapshot_steps must be in [0, steps) = [0, {steps}), got {s}")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"snapshot_steps must be strictly increasing, got {list(out)}")
    return out


def snapshot_schedule(steps: int, snapshots: int, snapshot_steps) -> np.ndarray:
    """The (S,) int64 steps to snapshot: explicit ones, or `snapshots` log-spaced in [0, steps - 1]."""
    if snapshot_steps:
        return np.asarray(snapshot_steps, dtype=np.int64)
    if not snapshots:
        return np.zeros(0, dtype=np.int64)
    at = np.rint(np.geomspace(1.0, float(steps), snapshots)).astype(np.int64) - 1  # 0 .. steps - 1
    return np.unique(np.clip(at, 0, steps - 1))


def launch_bounds(steps: int, chunk: int, at) -> list:
    """Step boundaries of launches of at most `chunk` steps that also start at every snapshot step."""
    return sorted(set(range(0, steps, chunk)) | {int(s) for s in at} | {steps})


class SnapshotRecorder:
    """Copies the parameters at the configured steps into (K, S, ...) CPU tensors while a backend trains."""

    def __init__(self, cfg, n_models: int, params: dict, taken: dict | None = None):
        """`taken`: the snapshots a resumed run had already recorded (TrainCheckpoint.snapshots)."""
        self.steps = cfg.snapshot_at()
        self.index = {int(s): j for j, s in enumerate(self.steps)}
        S = len(self.steps)
        self.store = {k: torch.full((n_models, S) + tuple(v.shape[1:]), float("nan"), dtype=torch.float32)
                      for k, v in params.items()} if S else {}
        for k, v in (taken or {}).items():
            if k in self.store and v.shape == self.store[k].shape:
                self.store[k].copy_(v)

    def record(self, t: int, params: dict) -> None:
        j = self.index.get(t)
        if j is not None:
            for k, v in params.items():
                self.store[k][:, j] = v.detach().cpu()

    def result(self) -> dict | None:
        """{"steps": (S,) int64, name: (K, S, ...)} or None when no snapshots were asked for."""
        if not self.index:
            return None
        return {"steps": torch.as_tensor(self.steps, dtype=torch.int64), **self.store}


def to_tensors(snapshots: dict | None) -> dict:
    """The safetensors entries of a chunk's snapshots ({} without)."""
    if not snapshots:
        return {}
    out = {STEPS_KEY: snapshots["steps"]}
    out.update({PREFIX + k: v.float().contiguous() for k, v in snapshots.items() if k != "steps"})
    return out


def chunk_extras(res) -> dict:
    """What a chunk stores beyond W, b and the losses: an untied model's W_dec, b_hidden, and the snapshots."""
    return {**getattr(res, "extra", {}), **to_tensors(getattr(res, "snapshots", None))}


def concat_extras(a: dict, b: dict) -> dict:
    """chunk_extras of two consecutive model ranges -> those of both (the snapshot steps are shared)."""
    return {k: a[k] if k == STEPS_KEY else torch.cat([a[k], b[k]]) for k in a}


def read_snapshots(run, model_ids) -> dict:
    """{"steps": (S,) int64 numpy, name: (k, S, ...) float32 torch} of models of a run (superpos.store.Run)."""
    ids, chunk, _ = run._locate(model_ids)
    chunks = [run._chunk(int(c)) for c in np.unique(chunk)]
    if any(STEPS_KEY not in c for c in chunks):
        raise ValueError(f"{run.dir}: no snapshots stored for these models (set [train] snapshots or snapshot_steps)")
    steps = {tuple(c[STEPS_KEY].tolist()) for c in chunks}
    if len(steps) > 1:
        raise ValueError("these models were snapshotted at different steps; ask one training config at a time")
    names = [k[len(PREFIX):] for k in chunks[0] if k.startswith(PREFIX)] if chunks else []
    out = {"steps": np.asarray(steps.pop() if steps else (), dtype=np.int64)}
    for name in sorted(names, key=lambda k: ("W", "b", "W_dec", "b_hidden").index(k)):
        out[name] = run._gather(ids, PREFIX + name)[1]
    return out
