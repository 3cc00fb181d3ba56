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
    # an untied model's decoder W_dec (K, n, m) and hidden bias b_hidden (K, m), likewise; None when tied
    Wd_in: torch.Tensor | None = None
    bh_in: torch.Tensor | None = None
    Wd_out: torch.Tensor | None = None
    bh_out: torch.Tensor | None = None
    mWd: torch.Tensor | None = None
    vWd: torch.Tensor | None = None
    mbh: torch.Tensor | None = None
    vbh: torch.Tensor | None = None

    # (parameter name as in Population.params(), its *_in field, first-moment field, second-moment field)
    FIELDS = (("W", "W_in", "mW", "vW"), ("b", "b_in", "mb", "vb"), ("W_dec", "Wd_in", "mWd", "vWd"),
              ("b_hidden", "bh_in", "mbh", "vbh"))

    @classmethod
    def start(cls, params: dict, exp_avg: dict, exp_avg_sq: dict) -> "TrainState":
        """State from parameter/moment dicts keyed like Population.params(); outputs start as NaN."""
        kw = {}
        for name, p_in, m, v in cls.FIELDS:
            if name in params:
                kw[p_in] = params[name].clone()
                kw[p_in.replace("_in", "_out")] = torch.full_like(params[name], float("nan"))
                kw[m], kw[v] = exp_avg[name].clone(), exp_avg_sq[name].clone()
        return cls(**kw)

    def _named(self, which: int) -> dict:
        return {f[0]: getattr(self, f[which]) for f in self.FIELDS if getattr(self, f[1]) is not None}

    def params(self) -> dict:
        return self._named(1)

    def exp_avg(self) -> dict:
        return self._named(2)

    def exp_avg_sq(self) -> dict:
        return self._named(3)

    def swap(self):
        self.W_in, self.W_out = self.W_out, self.W_in
        self.b_in, self.b_out = self.b_out, self.b_in
        self.Wd_in, self.Wd_out = self.Wd_out, self.Wd_in
        self.bh_in, self.bh_out = self.bh_out, self.bh_in


@dataclass
class TrainData:
    """What defines each model's data stream and loss: see superpos.rng for the layout."""

    seed: torch.Tensor  # (K,) int64
    thr: torch.Tensor  # (K, n) int32 holding the uint32 bits of T - 1
    scale: torch.Tensor  # (K, n) float32, 1 / T
    importance: torch.Tensor  # (K, n) float32
    batch_size: int  # the batch's real size: min(batch size, dataset_size)
    relu: bool
    # the model family beyond the tied one, and the data options (defaults: the plain model and data)
    hidden_relu: bool = False
    target_abs: bool = False
    symmetric: bool = False
    sets: bool = False  # feature sets: lo, off, gate, src below are not the identity
    lo: torch.Tensor | None = None  # (K, n) int32 holding uint32 bits (rng.DataTables.lo)
    off: torch.Tensor | None = None  # (K, n) int32 holding uint32 bits
    gate: torch.Tensor | None = None  # (n,) int32
    src: torch.Tensor | None = None  # (n,) int32
    gate_src: int = 0  # philox_data.gate_src_code of gate, src (the tiny path's compile-time tables)
    dataset_size: int | None = None


@dataclass(frozen=True)
class Hyper:
    coef: float  # 2 / (B n): d(mean loss)/d(output) factor
    inv_bn: float  # 1 / (B n)
    beta1: float
    beta2: float
    eps: float
