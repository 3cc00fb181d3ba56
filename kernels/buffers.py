"""Tensor bundles the launchers take (kernels know tensors and numbers, nothing of sweeps)."""
from dataclasses import dataclass

import torch


@dataclass
class TrainState:
    """Parameters read from *_in and written to *_out (swapped between launches); AdamW moments in place."""

    W_in: torch.Tensor  # (K, m, n) float32
    b_in: torch.Tensor  # (K, n)
    W_out: torch.Tensor
    b_out: torch.Tensor
    mW: torch.Tensor
    vW: torch.Tensor
    mb: torch.Tensor
    vb: torch.Tensor

    def swap(self):
        self.W_in, self.W_out = self.W_out, self.W_in
        self.b_in, self.b_out = self.b_out, self.b_in


@dataclass
class TrainData:
    """What defines each model's data stream and loss: see superpos.rng for the layout."""

    seed: torch.Tensor  # (K,) int64
    thr: torch.Tensor  # (K, n) int32 holding the uint32 bits of T - 1
    scale: torch.Tensor  # (K, n) float32, 1 / T
    importance: torch.Tensor  # (K, n) float32
    batch_size: int
    relu: bool
    hidden_relu: bool = False  # privileged basis: h = ReLU(W x) (the tiled kernel only)


@dataclass(frozen=True)
class Hyper:
    coef: float  # 2 / (B n): d(mean loss)/d(output) factor
    inv_bn: float  # 1 / (B n)
    beta1: float
    beta2: float
    eps: float
