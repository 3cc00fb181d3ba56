"""Named benchmark workloads: model shape, number of models K, steps, and the population each trains.

Every workload trains at batch 1024 with the library's default hyper-parameters (TrainConfig(): AdamW,
lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01, constant schedule, loss logged every 100
steps); only the number of timed steps differs. Every backend of a workload reads the same
TrainConfig and the same Population (initial weights, feature probabilities, importances).

`--quick` (CPU smoke test) keeps the shapes and the batch but trains few models for few steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import TrainConfig
from ..spec import DataSpec, ModelSpec, Population

BATCH_SIZE = 1024
GRID = 40  # the phase diagrams: 40 x 40 grid of (feature probability, relative importance)
PHASE_SEEDS = 16  # seeds per grid point: K = 40 * 40 * 16 = 25,600


def _phase_arrays(K: int, n: int):
    """Model k sits at grid cell k % 1600: density 1 .. 0.01 (log) x last feature's importance 0.1 .. 10 (log).

    With K = 25,600 each of the 1,600 cells gets 16 seeds (the paper drops the worst of ~10 per point).
    """
    cell = np.arange(K) % (GRID * GRID)
    density = np.logspace(0, -2, GRID)[cell // GRID]
    rel_importance = np.logspace(-1, 1, GRID)[cell % GRID]
    importance = np.ones((K, n))
    importance[:, -1] = rel_importance
    return density, importance


def _intro_arrays(K: int, n: int):
    """The official notebook: importance 0.9^i, feature probability 20^-linspace(0, 1, K)."""
    return 20.0 ** -np.linspace(0, 1, K), 0.9 ** np.arange(n)


def _geometry_arrays(K: int, n: int):
    """Feature geometry (notebook): 20 sparsities 20^-linspace(0, 1, 20), cycled over seeds; importance 1."""
    return (20.0 ** -np.linspace(0, 1, 20))[np.arange(K) % 20], 1.0


def _computation_arrays(K: int, n: int):
    """Computation in superposition (|x|): densities 1 .. 0.001 (the section's seven) cycled; importance 0.8^i."""
    return np.array([1, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001])[np.arange(K) % 7], 0.8 ** np.arange(n)


def _double_descent_arrays(K: int, n: int):
    """Double descent (Henighan et al. 2023): S = 0.999 (density 0.001), importance 1."""
    return 0.001, 1.0


def _uniform_arrays(K: int, n: int):
    """Uniform superposition: 1/(1 - S) from 1 to 1000, log spaced over the K models; importance 1."""
    return 10.0 ** -np.linspace(0, 3, K), 1.0


@dataclass(frozen=True)
class Workload:
    name: str
    n: int  # features
    m: int  # hidden dimensions
    models: tuple  # K values: one, or several (scaling)
    steps: int  # timed steps per training call
    description: str
    arrays: callable = field(repr=False, compare=False)  # (K, n) -> (feature_probability, importance)
    precisions: tuple = ("ieee",)  # matmul precisions measured on a GPU
    quick_models: tuple = ()
    quick_steps: int = 20
    activation: str = "relu"
    batch_size: int = BATCH_SIZE
    # a model family / data option beyond the plain model (ModelSpec and DataSpec keywords, as tuples of pairs)
    spec_options: tuple = ()
    data_options: tuple = ()

    def model_counts(self, quick: bool = False) -> tuple:
        return self.quick_models if quick else self.models

    def train_config(self, steps: int | None = None, quick: bool = False) -> TrainConfig:
        steps = steps if steps is not None else (self.quick_steps if quick else self.steps)
        return TrainConfig(steps=steps, batch_size=self.batch_size)

    def population(self, K: int, seed: int = 0) -> Population:
        p, importance = self.arrays(K, self.n)
        return Population(ModelSpec(self.n, self.m, self.activation, **dict(self.spec_options)),
                          feature_probability=p, importance=importance, seed=seed, n_models=K,
                          data=DataSpec(**dict(self.data_options)))

    def flops_per_sample(self) -> int:
        return flops_per_sample(self.n, self.m)

    def to_dict(self) -> dict:
        return {"name": self.name, "n": self.n, "m": self.m, "models": list(self.models), "steps": self.steps,
                "batch_size": self.batch_size, "activation": self.activation, "description": self.description,
                "precisions": list(self.precisions)}


def flops_per_sample(n: int, m: int) -> int:
    """FLOPs of one sample's forward and backward, counting the five m x n matrix products only.

    forward h = W x (2mn), z = W^T h (2mn); backward gh = W gz (2mn), dW = h gz^T (2mn) + gh x^T (2mn).
    Element-wise work (bias, ReLU, loss, AdamW, data generation) is not counted.
    """
    return 10 * m * n


WORKLOADS = {w.name: w for w in [
    Workload("intro", 5, 2, (10,), 10_000,
             "the notebook's intro: 10 models, latency-bound; a whole 10,000-step run is timed",
             _intro_arrays, quick_models=(10,)),
    Workload("phase", 2, 1, (GRID * GRID * PHASE_SEEDS,), 1_000,
             "phase diagram n=2, m=1: 40 x 40 grid x 16 seeds", _phase_arrays, quick_models=(64,)),
    Workload("phase3", 3, 2, (GRID * GRID * PHASE_SEEDS,), 1_000,
             "phase diagram n=3, m=2: 40 x 40 grid x 16 seeds", _phase_arrays, quick_models=(64,)),
    Workload("geometry", 200, 20, (200,), 1_000,
             "feature geometry n=200, m=20: 20 sparsities x 10 seeds", _geometry_arrays,
             precisions=("ieee", "tf32"), quick_models=(8,), quick_steps=10),
    Workload("uniform", 400, 30, (64,), 1_000,
             "uniform superposition n=400, m=30: 64 sparsities", _uniform_arrays,
             precisions=("ieee", "tf32"), quick_models=(4,), quick_steps=10),
    Workload("scaling", 2, 1, (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000), 200,
             "n=2, m=1 at K = 1 .. 1,000,000: how cost grows with the number of models",
             _phase_arrays, quick_models=(1, 16, 256, 4096)),
]}


# The phase workload in two issue-13 variants, for the cost model only (`superpos bench --predict`): the
# issue asks each within 1.3x of plain phase's prediction; and the computation section's untied |x| model
# on the tiled kernel. Not in WORKLOADS: the peers train the plain model only, so there is nothing to
# measure them against.
PREDICT_ONLY = {w.name: w for w in [
    Workload("phase-privileged", 2, 1, (GRID * GRID * PHASE_SEEDS,), 1_000,
             "phase with a hidden ReLU (privileged basis)", _phase_arrays, quick_models=(64,),
             spec_options=(("hidden_activation", "relu"),)),
    Workload("phase-correlated", 2, 1, (GRID * GRID * PHASE_SEEDS,), 1_000,
             "phase with features 0 and 1 one correlated set", _phase_arrays, quick_models=(64,),
             data_options=(("correlated_sets", ((0, 1),)),)),
    Workload("computation", 100, 40, (70,), 1_000,
             "|x| in superposition n=100, m=40 (untied, hidden ReLU, x in [-1, 1)): 7 densities x 10 seeds",
             _computation_arrays, precisions=("ieee", "tf32"), quick_models=(7,), quick_steps=10,
             spec_options=(("tied", False), ("hidden_activation", "relu"), ("target", "abs"),
                           ("value_range", "symmetric"))),
    # one group of the double descent at paper size: 3 seeds of n=10,000, m=2 on a dataset of T = 100
    # (the whole dataset each step): a few programs on a GPU, bound by one program's chain over n
    Workload("double-descent", 10_000, 2, (3,), 1_000,
             "double descent n=10,000, m=2: one dataset size (T = 100, full batch) x 3 seeds",
             _double_descent_arrays, quick_models=(3,), quick_steps=10, batch_size=4096,
             data_options=(("dataset_size", 100),)),
]}


def get_workload(name: str) -> Workload:
    known = WORKLOADS | PREDICT_ONLY
    if name not in known:
        raise ValueError(f"workload must be one of {', '.join(known)}, got {name!r}")
    return known[name]
