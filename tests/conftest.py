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

if os.environ.get("TRITON_INTERPRET") == "1":
    try:  # float kernel arguments as float32 scalars, as on a GPU (superpos/interpreter_args.py)
        # and the interpreter's per-call repeats done once (35-50% of its time; superpos/interpreter_shortcuts.py)
        from superpos.interpreter_args import interpret_as_a_gpu_launch
        interpret_as_a_gpu_launch()
        # tl.dot(..., input_precision="tf32") as TF32 mmas compute it (truncated operands, each k=8 step
        # rounded toward zero), not in float32: tf32x3's operand split is then put to the test here too
        from superpos.tf32_emulation import emulate_tf32_dots_from_now
        emulate_tf32_dots_from_now("rz")
    except ImportError:  # no triton: the kernel tests skip themselves
        pass


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error ||a - b|| / ||b||: robust to entries near zero, unlike max |a-b|/|b|."""
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_first_step_like_reference(pop, B: int, **train_options):
    """One triton step of `pop` at batch B: where AdamW's first step is well conditioned (the float64
    gradient above 1e-6, see test_kernels.py) its weights agree with the reference's to 1e-5, and the
    logged loss with the float64 loss."""
    import superpos as sp
    from superpos.reference import forward_backward, train_torch
    cfg = sp.TrainConfig(steps=1, batch_size=B, log_every=1)
    got = sp.train(pop, cfg, backend="triton", **train_options)
    ref = train_torch(pop, cfg)
    x = sp.sample_batch(pop, 0, B).double()
    loss, dW, _ = forward_backward(pop.W.double(), pop.b.double(), x, pop.importance.double(), True)
    sure = dW.abs() > 1e-6
    assert rel_err(got.W[sure], ref.W[sure]) < 1e-5
    assert rel_err(got.loss_history[:, 0], loss.float()) < 1e-5


def once_per_session(tmp_path_factory, name: str, compute):
    """compute()'s JSON-able result, computed once per test session. pytest-xdist sets a module fixture
    up once on every worker that runs one of the module's tests, and its loadgroup mode, which could
    keep them on one worker, silently stops grouping under pytest 9.2 (pytest-xdist issue 1386): so the
    first worker computes under a file lock and leaves the result beside the workers' temporary folders,
    and the others read it."""
    import fcntl
    import json
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return compute()
    root = tmp_path_factory.getbasetemp().parent
    done = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if done.exists():
            return json.loads(done.read_text())
        value = compute()
        tmp = root / f"{name}.json.partial"
        tmp.write_text(json.dumps(value))
        tmp.replace(done)  # whole or absent
        return value


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
