"""What a model is (ModelSpec) and a population of K models of one spec (Population)."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

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


HIDDEN_ACTIVATIONS = ("none", "relu")
TARGETS = ("identity", "abs")
VALUE_RANGES = ("unit", "symmetric")
_CHOICES = {"activation": ACTIVATIONS, "hidden_activation": HIDDEN_ACTIVATIONS, "target": TARGETS,
            "value_range": VALUE_RANGES}


def check_model_field(name: str, value):
    """One ModelSpec field on its own (ModelSpec adds the checks that tie fields together)."""
    if name in ("n_features", "n_hidden"):
        require_int(name, value, 1, MAX_FEATURES if name == "n_features" else MAX_HIDDEN)
    elif name == "tied":
        if not isinstance(value, bool):
            raise ValueError(f"tied must be true or false, got {value!r}")
    elif name in _CHOICES and value not in _CHOICES[name]:
        raise ValueError(f"{name} must be one of {', '.join(_CHOICES[name])}, got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """One toy model: n features squeezed into m hidden dimensions.

    Tied (default): h = hidden_act(W x), x' = act(W^T h + b). Untied (tied=False): an encoder W (m, n) with
    bias b_hidden (m) and a decoder W_dec (n, m): h = hidden_act(W x + b_hidden), y' = act(W_dec h + b)
    (the paper's untied model is hidden_activation="relu"). hidden_activation="relu" on a tied model is
    the privileged basis. The model is trained toward x (target="identity") or |x| ("abs"); its inputs
    are in [0, 1) (value_range="unit") or [-1, 1) ("symmetric").
    """

    n_features: int
    n_hidden: int
    activation: str = "relu"
    hidden_activation: str = "none"
    tied: bool = True
    target: str = "identity"
    value_range: str = "unit"

    def __post_init__(self):
        for f in fields(self):
            check_model_field(f.name, getattr(self, f.name))
        if self.n_features * self.n_hidden > MAX_WEIGHTS:
            raise ValueError(f"n_features * n_hidden must be <= 2**28 (a 1 GiB W per model), got "
                             f"{self.n_features} * {self.n_hidden}")
        # on [0, 1) inputs |x| = x: target "abs" would silently be the identity target, so it is refused
        if self.target == "abs" and self.value_range != "symmetric":
            raise ValueError("target: 'abs' needs value_range = 'symmetric' (on unit inputs |x| = x, "
                             "the identity target)")

    @property
    def n(self) -> int:
        return self.n_features

    @property
    def m(self) -> int:
        return self.n_hidden


def _feature_sets(name: str, sets) -> tuple:
    """A list of feature-index lists -> a canonical tuple of sorted tuples, ordered by first member."""
    if not isinstance(sets, (list, tuple)):
        raise ValueError(f"{name} must be a list of lists of feature indices, got {sets!r}")
    out = []
    for s in sets:
        if not isinstance(s, (list, tuple)) or not all(_is_int(i) for i in s):
            raise ValueError(f"{name} must be a list of lists of feature indices, got {sets!r}")
        if len(s) < 2:
            raise ValueError(f"{name}: a set needs at least 2 features, got {list(s)}")
        if min(s) < 0:
            raise ValueError(f"{name}: feature indices must be >= 0, got {list(s)}")
        if len(set(s)) != len(s):
            raise ValueError(f"{name}: a set lists a feature twice, got {list(s)}")
        out.append(tuple(sorted(int(i) for i in s)))
    return tuple(sorted(out))


@dataclass(frozen=True)
class DataSpec:
    """How a population's data is drawn beyond the per-feature densities (layout: superpos.rng).

    correlated_sets: disjoint sets of features active together or not at all (one draw per set; the
    members must share one density). anticorrelated_sets: at most one member active, each keeping its
    own density (their sum must be <= 1). dataset_size: None (a fresh batch every step) or T, a fixed
    dataset of T samples per model.
    """

    correlated_sets: tuple = ()
    anticorrelated_sets: tuple = ()
    dataset_size: int | None = None

    def __post_init__(self):
        corr = _feature_sets("correlated_sets", self.correlated_sets)
        anti = _feature_sets("anticorrelated_sets", self.anticorrelated_sets)
        object.__setattr__(self, "correlated_sets", corr)
        object.__setattr__(self, "anticorrelated_sets", anti)
        seen = {}
        for key, sets in (("correlated_sets", corr), ("anticorrelated_sets", anti)):
            for s in sets:
                for i in s:
                    if i in seen:
                        raise ValueError(f"{key}: feature {i} is in two sets ({seen[i]} and {list(s)}); sets must be disjoint")
                    seen[i] = list(s)
        if self.dataset_size is not None:
            require_int("dataset_size", self.dataset_size, 1, 2**31 - 1)

    @property
    def has_sets(self) -> bool:
        return bool(self.correlated_sets or self.anticorrelated_sets)

    def check(self, n: int, p: np.ndarray | None = None) -> None:
        """Sets inside [0, n), a dataset whose counters fit, and (given p (K, n)) the sets' densities."""
        for key, sets in (("correlated_sets", self.correlated_sets), ("anticorrelated_sets", self.anticorrelated_sets)):
            for s in sets:
                if s[-1] >= n:
                    raise ValueError(f"{key}: feature {s[-1]} of set {list(s)} is out of range [0, {n})")
        if self.dataset_size is not None and -(-self.dataset_size // rng.LANES) * n > 2**32:
            raise ValueError(f"dataset_size: ceil(T/4) * n_features must be <= 2**32, got T={self.dataset_size}, n={n}")
        if p is None:
            return
        p = np.asarray(p, dtype=np.float64).reshape(-1, n)
        for s in self.correlated_sets:
            ps = p[:, list(s)]
            bad = np.flatnonzero((ps != ps[:, :1]).any(axis=1))
            if bad.size:
                raise ValueError(f"correlated_sets: the members of set {list(s)} must share one "
                                 f"feature_probability, got {ps[bad[0]].tolist()}")
        for s in self.anticorrelated_sets:
            total = (np.clip(np.round(p[:, list(s)] * 2.0**32), 1, 2.0**32)).sum(axis=1)
            bad = np.flatnonzero(total > 2.0**32)
            if bad.size:
                raise ValueError(f"anticorrelated_sets: the feature_probability of the members of set {list(s)} "
                                 f"must sum to <= 1, got {p[bad[0], list(s)].sum()}")

    def batch_size(self, batch_size: int) -> int:
        """Samples per batch: batch_size, or the whole dataset when it is smaller."""
        return batch_size if self.dataset_size is None else min(batch_size, self.dataset_size)

    def fixed_batch(self, batch_size: int) -> bool:
        """True when every step's batch is the same: the whole dataset, T <= batch_size (full-batch training)."""
        return self.dataset_size is not None and self.dataset_size <= batch_size


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
    data:                a DataSpec shared by the K models (feature sets, finite dataset); default none.
    W (K, m, n) and b (K, n) start at the deterministic init of rng.init_weights; an untied spec adds
    W_dec (K, n, m) and b_hidden (K, m) (rng.init_untied), None otherwise.
    """

    def __init__(self, spec: ModelSpec, feature_probability=1.0, importance=1.0, seed=0,
                 n_models: int | None = None, W=None, b=None, data: DataSpec | None = None,
                 W_dec=None, b_hidden=None):
        if not isinstance(spec, ModelSpec):
            raise ValueError(f"spec must be a ModelSpec, got {type(spec).__name__}")
        data = DataSpec() if data is None else data
        if not isinstance(data, DataSpec):
            raise ValueError(f"data must be a DataSpec, got {type(data).__name__}")
        self.spec = spec
        self.data = data
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
        self.W_dec = self.b_hidden = None
        if not spec.tied:
            if W_dec is None:
                W_dec, b_hidden = rng.init_untied(self.seed, n, spec.n_hidden)
            self.W_dec = self._checked_param("W_dec", W_dec, (K, n, spec.n_hidden))
            self.b_hidden = self._checked_param("b_hidden", b_hidden, (K, spec.n_hidden))
        elif W_dec is not None or b_hidden is not None:
            raise ValueError("W_dec/b_hidden: only an untied model (tied=False) has them")
        data.check(n, p)

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

    def params(self) -> dict:
        """The trained parameters by name, in the order every backend uses: W, b (, W_dec, b_hidden)."""
        out = {"W": self.W, "b": self.b}
        if not self.spec.tied:
            out.update(W_dec=self.W_dec, b_hidden=self.b_hidden)
        return out

    def select(self, index) -> "Population":
        """A population of the models at `index` (a slice, list or bool mask), weights included."""
        idx = torch.as_tensor(np.arange(len(self))[index], dtype=torch.int64).reshape(-1)
        return Population(self.spec, self.feature_probability[idx].numpy(), self.importance[idx].numpy(),
                          [int(s) for s in self.seed[idx]], data=self.data,
                          **{k: v[idx] for k, v in self.params().items()})

    def with_weights(self, W, b, W_dec=None, b_hidden=None) -> "Population":
        """The same models starting from other weights (e.g. to continue training)."""
        return Population(self.spec, self.feature_probability.numpy(), self.importance.numpy(),
                          [int(s) for s in self.seed], W=W, b=b, data=self.data, W_dec=W_dec, b_hidden=b_hidden)

    def __repr__(self) -> str:
        s = self.spec
        return f"Population(K={len(self)}, n={s.n_features}, m={s.n_hidden}, activation={s.activation!r})"


def sample_batch(pop: Population, step: int, batch_size: int, device=None) -> torch.Tensor:
    """The (K, B, n) float32 batch each model of `pop` sees at training step `step` (0-based).

    With a finite dataset of T < B samples (pop.data.dataset_size) the batch is the whole dataset: (K, T, n).
    """
    require_int("step", step, 0, 2**32 - 1)
    return batch_sampler(pop, batch_size, device)(step)


def batch_sampler(pop: Population, batch_size: int, device=None):
    """step -> sample_batch(pop, step, batch_size, device), the data tables built once (a training loop)."""
    require_int("batch_size", batch_size, 1)
    d = pop.data
    return rng.batch_sampler(pop.seed, pop.feature_probability, batch_size, device=device,
                             correlated_sets=d.correlated_sets, anticorrelated_sets=d.anticorrelated_sets,
                             symmetric=pop.spec.value_range == "symmetric", dataset_size=d.dataset_size)
