"""Kernel tests run on the CPU under Triton's interpreter unless a CUDA device is present.

TRITON_INTERPRET must be set before triton is imported, hence here, first.
"""
import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error ||a - b|| / ||b||: robust to entries near zero, unlike max |a-b|/|b|."""
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture
def gen():
    return np.random.default_rng(1234)


# A 1,000,000-model n=2, m=1 grid (1000 densities x 100 importances x 10 seeds) for the scale tests.
MILLION_SPEC = """
name = "million"
[model]
n_features = 2
n_hidden = 1
[sweep]
feature_probability = { logspace = [0, -2, 1000] }
relative_importance = { logspace = [-1, 1, 100] }
seeds = 10
"""

gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
