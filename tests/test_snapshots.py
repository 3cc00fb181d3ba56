"""Snapshots over training: the steps, what each snapshot holds (torch and triton backends), and the store."""
import numpy as np
import pytest
import torch

import superpos as sp
from superpos.reference import train_torch
from superpos.snapshots import snapshot_schedule
from superpos.sweep import parse_spec


@pytest.mark.parametrize("steps,N", [(10_000, 20), (5, 2), (5, 5), (1000, 7), (3, 10)])
def test_log_spaced_steps_include_first_and_last(steps, N):
    at = snapshot_schedule(steps, N, ())
    assert at[0] == 0 and at[-1] == steps - 1
    assert (np.diff(at) > 0).all() and len(at) <= N
    if steps >= 10 * N:  # away from the small steps (rounded to integers) the ratios are constant
        r = np.diff(np.log(at + 1))[len(at) // 2:]
        assert len(at) == N and r.max() / r.min() < 1.05


def test_explicit_steps_win_and_none_is_empty():
    assert snapshot_schedule(100, 0, (3, 50)).tolist() == [3, 50]
    assert snapshot_schedule(100, 0, ()).size == 0
    assert sp.TrainConfig(steps=9).snapshot_at().size == 0


def _pop(tied=True):
    spec = sp.ModelSpec(5, 2, hidden_activation="relu", tied=tied)
    return sp.Population(spec, feature_probability=[0.3, 0.1, 0.05], seed=[4, 5, 6])


@pytest.mark.parametrize("tied", [True, False])
def test_a_snapshot_is_the_state_at_the_start_of_its_step(tied):
    pop = _pop(tied)
    cfg = sp.TrainConfig(steps=30, batch_size=16, snapshot_steps=[0, 7, 29])
    res = train_torch(pop, cfg)
    snap = res.snapshots
    assert snap["steps"].tolist() == [0, 7, 29]
    assert sorted(snap) == sorted(["steps", *pop.params()])
    for name, init in pop.params().items():
        assert snap[name].shape == (3, 3) + tuple(init.shape[1:])
        assert torch.equal(snap[name][:, 0], init)
    for j, t in ((1, 7), (2, 29)):  # constant schedule: the first t steps do not depend on cfg.steps
        short = train_torch(pop, sp.TrainConfig(steps=t, batch_size=16))
        got = {"W": short.W, "b": short.b, **short.extra}
        for name in got:
            assert torch.equal(snap[name][:, j], got[name]), (name, t)
    plain = train_torch(pop, sp.TrainConfig(steps=30, batch_size=16))
    assert torch.equal(plain.W, res.W) and plain.snapshots is None  # snapshots change nothing else


def test_triton_backend_snapshots_match_the_torch_path():
    pop = sp.Population(sp.ModelSpec(3, 2), feature_probability=[0.5, 0.2], seed=[1, 2])
    cfg = sp.TrainConfig(steps=9, batch_size=8, snapshots=3)
    tri = sp.train(pop, cfg, backend="triton", max_steps_per_launch=4)
    plain = sp.train(pop, sp.TrainConfig(steps=9, batch_size=8), backend="triton", max_steps_per_launch=4)
    assert torch.equal(tri.W, plain.W) and torch.equal(tri.b, plain.b)  # extra launch boundaries change nothing
    ref = train_torch(pop, cfg)
    assert tri.snapshots["steps"].tolist() == ref.snapshots["steps"].tolist()
    for name in ("W", "b"):
        # few float32 steps, different summation orders: ~1e-6 agreement
        d = (tri.snapshots[name] - ref.snapshots[name]).abs().max()
        assert d < 1e-4 * ref.snapshots[name].abs().max(), name


SPEC = """
name = "snap"
[model]
n_features = 4
n_hidden = 2
tied = false
hidden_activation = "relu"
[train]
steps = 25
batch_size = 16
log_every = 5
snapshots = 4
[sweep]
feature_probability = [0.5, 0.1]
seeds = 2
"""


def test_run_stores_snapshots_readable_by_load_run(tmp_path):
    from superpos.driver import run_sweep

    sweep = parse_spec(SPEC)
    run_sweep(sweep, tmp_path / "run", backend="torch", quiet=True, chunk_size=3)
    run = sp.load_run(tmp_path / "run")
    ids = [3, 0, 2]
    snap = run.snapshots(ids)
    ref = train_torch(sweep.population(0, 4), sweep.groups[0].cfg)
    assert snap["steps"].tolist() == ref.snapshots["steps"].tolist() == [0, 2, 8, 24]
    for name in ("W", "b", "W_dec", "b_hidden"):
        assert torch.equal(snap[name], ref.snapshots[name][ids]), name
    params = run.parameters(ids)
    assert torch.equal(params["W_dec"], ref.extra["W_dec"][ids]) and torch.equal(params["W"], ref.W[ids])


def test_load_run_without_snapshots_says_so(tmp_path):
    from superpos.driver import run_sweep

    run_sweep(parse_spec(SPEC.replace("snapshots = 4\n", "")), tmp_path / "run", backend="torch", quiet=True)
    with pytest.raises(ValueError, match="no snapshots"):
        sp.load_run(tmp_path / "run").snapshots([0])
