"""What a model is (ModelSpec) and a population of K models of one spec (Population)."""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from . import rng

ACTIVATIONS = ("relu", "linear")
MAX_SEED = 2**63 - 1
# Size bounds, checked before anything is allocated: one model's W at most 2**28 floats (1 GiB).
MAX_FEATURES = 1 << 20
MAX_HIDDEN = 1 << 16
MAX_WEIGHTS = 1 << 28
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def require_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer within [minimum, maximum], or a ValueError naming the field."""
    if not _is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def require_real(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    """A finite real within the given interval, or a ValueError naming the field and the interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        left = "(" if lo_open or lo is None else "["  # inf itself is refused above: (-inf, ...) and [..., inf)
        right = ")" if hi_open or hi is None else "]"
        interval = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


@dataclass(frozen=True)
class ModelSpec:
    """One toy model: n features squeezed into m hidden dimensions, x' = act(W^T W x + b)."""

    n_features: int
    n_hidden: int
    activation: str = "relu"

    def __post_init__(self):
        require_int("n_features", self.n_features, 1, MAX_FEATURES)
        require_int("n_hidden", self.n_hidden, 1, MAX_HIDDEN)
        if self.n_features * self.n_hidden > MAX_WEIGHTS:
            raise ValueError(f"n_features * n_hidden must be <= 2**28 (a 1 GiB W per model), got "
                             f"{self.n_features} * {self.n_hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def n(self) -> int:
        return self.n_features

    @property
    def m(self) -> int:
        return self.n_hidden


def _as_float_array(name: str, value) -> np.ndarray:
    try:
        kind = np.asarray(value).dtype.kind
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        kind = None
    if kind not in ("i", "u", "f"):  # strings ("0.5"), booleans and objects are not numbers
        raise ValueError(f"{name} must be a number or an array of numbers, got {value!r}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if arr.ndim > 2:
        raise ValueError(f"{name} must be a scalar, a 1-D or a 2-D array, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN")
    return arr


def _leading_k(name: str, arr: np.ndarray, per_model_1d: bool) -> int | None:
    """How many models an argument implies (None: it broadcasts over models)."""
    if arr.ndim == 2 or (arr.ndim == 1 and per_model_1d):
        return None if arr.shape[0] == 1 else arr.shape[0]
    return None


class Population:
    """K models of one ModelSpec, each with its own feature probabilities, importances and seed.

    feature_probability: scalar, (K,) one value per model, or (K, n) / (1, n) one per feature.
    importance:          scalar, (n,) one per feature shared by all models, or (K, n).
    seed:                int (K = 1 unless other arguments say more; then seeds seed, seed+1, ...) or (K,) ints.
    W (K, m, n) and b (K, n) start at the deterministic init of rng.init_weights.
    """

    def __init__(self, spec: ModelSpec, feature_probability=1.0, importance=1.0, seed=0,
                 n_models: int | None = None, W=None, b=None):
        if not isinstance(spec, ModelSpec):
            raise ValueError(f"spec must be a ModelSpec, got {type(spec).__name__}")
        self.spec = spec
        n = spec.n_features
        p = _as_float_array("feature_probability", feature_probability)
        imp = _as_float_array("importance", importance)
        seeds = np.asarray(seed, dtype=object)
        if seeds.ndim > 1:
            raise ValueError(f"seed must be an integer or a 1-D list of integers, got shape {seeds.shape}")
        if seeds.size == 0:
            raise ValueError("seed must not be empty (an integer, or one integer per model)")
        for s in seeds.reshape(-1):
            if not _is_int(s) or not 0 <= s <= MAX_SEED:
                raise ValueError(f"seed must be integers in [0, 2**63), got {s!r}")

        if p.ndim == 2 and p.shape[1] != n:
            raise ValueError(f"feature_probability must have {n} columns (n_features), got shape {p.shape}")
        if imp.ndim == 1 and imp.shape[0] != n:
            raise ValueError(f"importance must have {n} entries (one per feature), got {imp.shape[0]}")
        if imp.ndim == 2 and imp.shape[1] != n:
            raise ValueError(f"importance must have {n} columns (n_features), got shape {imp.shape}")

        implied = {"feature_probability": _leading_k("feature_probability", p, True),
                   "importance": _leading_k("importance", imp, False),
                   "seed": seeds.shape[0] if seeds.ndim == 1 else None,
                   "n_models": require_int("n_models", n_models, 1) if n_models is not None else None}
        sizes = {k: v for k, v in implied.items() if v is not None}
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{k}={v}" for k, v in sizes.items())
            raise ValueError(f"feature_probability/importance/seed/n_models disagree on the number of models: {detail}")
        K = next(iter(sizes.values()), 1)

        p = np.broadcast_to(p.reshape(-1, 1) if p.ndim == 1 else p, (K, n)) if p.ndim else np.full((K, n), p)
        imp = np.broadcast_to(imp, (K, n))
        if not ((p > 0) & (p <= 1)).all():
            raise ValueError(f"feature_probability must be in (0, 1], got {p[~((p > 0) & (p <= 1))][0]}")
        good = np.isfinite(imp) & (imp >= 0) & (imp <= FLOAT32_MAX)  # stored as float32: 1e39 would be inf
        if not good.all():
            raise ValueError(f"importance must be in [0, {FLOAT32_MAX:.4g}] (finite in float32), got {imp[~good][0]}")
        if seeds.ndim == 0:
            seeds = np.arange(K, dtype=object) + int(seeds)
            if int(seeds[-1]) > MAX_SEED:
                raise ValueError("seed must be integers in [0, 2**63)")

        self.feature_probability = torch.tensor(np.ascontiguousarray(p), dtype=torch.float64)
        self.importance = torch.tensor(np.ascontiguousarray(imp), dtype=torch.float32)
        self.seed = torch.tensor([int(s) for s in seeds], dtype=torch.int64)
        if W is None:
            W, b = rng.init_weights(self.seed, n, spec.n_hidden)
        self.W = self._checked_param("W", W, (K, spec.n_hidden, n))
        self.b = self._checked_param("b", b, (K, n))

    @staticmethod
    def _checked_param(name, value, shape):
        t = torch.as_tensor(value, dtype=torch.float32).detach().cpu().clone()
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        return t

    def __len__(self) -> int:
        return self.seed.shape[0]

    @property
    def n_models(self) -> int:
        return len(self)

    def select(self, index) -> "Population":
        """A population of the models at `index` (a slice, list or bool mask), weights included."""
        idx = torch.as_tensor(np.arange(len(self))[index], dtype=torch.int64).reshape(-1)
        return Population(self.spec, self.feature_probability[idx].numpy(), self.importance[idx].numpy(),
                          [int(s) for s in self.seed[idx]], W=self.W[idx], b=self.b[idx])

    def with_weights(self, W, b) -> "Population":
        """The same models starting from other weights (e.g. to continue training)."""
        return Population(self.spec, self.feature_probability.numpy(), self.importance.numpy(),
                          [int(s) for s in self.seed], W=W, b=b)

    def __repr__(self) -> str:
        s = self.spec
        return f"Population(K={len(self)}, n={s.n_features}, m={s.n_hidden}, activation={s.activation!r})"


def sample_batch(pop: Population, step: int, batch_size: int, device=None) -> torch.Tensor:
    """The (K, B, n) float32 batch each model of `pop` sees at training step `step` (0-based)."""
    require_int("step", step, 0, 2**32 - 1)
    require_int("batch_size", batch_size, 1)
    return rng.sample_batch_raw(pop.seed, pop.feature_probability, step, batch_size, device=device)
