"""The data options: correlated and anticorrelated feature sets, symmetric values and finite datasets -
their documented Philox layout rebuilt from an independent NumPy Philox, their statistics, and their
independence of the other models, the CPU path (numba or torch) and the device."""
import numpy as np
import pytest
import torch
from scipy import stats

import superpos as sp
from superpos import rng

from conftest import HAS_CUDA
from test_rng import philox_numpy


def expected_samples(seed, p, js, c1, c2, corr=(), anti=(), symmetric=False):
    """Samples js of one model, from the layout in superpos/rng.py written out feature by feature."""
    n = len(p)
    js = np.asarray(js)
    q, lane = js // 4, js % 4
    out = np.zeros((len(js), n), dtype=np.float32)
    T = np.clip(np.round(np.asarray(p) * 2.0**32), 1, 2.0**32).astype(np.int64)
    for s_i, (qq, ll) in enumerate(zip(q, lane)):
        words = philox_numpy([qq * n + np.arange(n), np.full(n, c1), np.full(n, c2), np.zeros(n)],
                             [seed & 0xFFFFFFFF, seed >> 32])
        r = np.stack(words)[ll].astype(np.int64)  # [n] this sample's words
        gate = {}
        for st in corr:
            for j, i in enumerate(st):
                gate[i] = ("corr", st[0], j == 0)
        for st in anti:
            for i in st:
                gate[i] = ("anti", st, None)
        for i in range(n):
            kind = gate.get(i, ("ind", i, True))
            if kind[0] == "anti":
                members = kind[1]
                u = r[members[0]]
                lo = int(sum(T[x] for x in members[:members.index(i)]))
                hi = min(lo + int(T[i]), 2**32)
                active, value = lo <= u < hi, np.float32(u - lo) * np.float32(1.0 / (hi - lo))
            else:
                lead = kind[1]
                active = r[lead] < T[lead]
                scale = 1.0 / T[lead] if kind[2] else 2.0**-32
                value = np.float32(r[i]) * np.float32(scale)
            value = np.minimum(value, np.float32(rng.ONE_BELOW))
            if symmetric:
                value = np.float32(2) * value - np.float32(1)
            out[s_i, i] = value if active else 0.0
    return out


SEEDS = [3, 2**40 + 11, 2**63 - 1]
P = np.array([[0.3, 0.3, 0.2, 0.5, 0.25, 0.7, 0.01],
              [0.05, 0.05, 0.4, 0.1, 0.5, 1.0, 0.9],
              [1.0, 1.0, 0.01, 0.98, 0.01, 0.3, 0.3]])
DATA = sp.DataSpec(correlated_sets=[[1, 0]], anticorrelated_sets=[[2, 4, 3]])


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("symmetric", [False, True])
def test_sets_follow_the_documented_layout(use_numba, symmetric):
    if use_numba and rng.numba is None:
        pytest.skip("numba not installed")
    for step in (0, 77):
        got = rng.sample_batch_raw(torch.tensor(SEEDS), torch.tensor(P), step, 9, use_numba=use_numba,
                                   correlated_sets=DATA.correlated_sets, anticorrelated_sets=DATA.anticorrelated_sets,
                                   symmetric=symmetric)
        for k, seed in enumerate(SEEDS):
            exp = expected_samples(seed, P[k], range(9), step, 0, [[0, 1]], [[2, 3, 4]], symmetric)
            np.testing.assert_array_equal(got[k].numpy(), exp)


@pytest.mark.parametrize("use_numba", [True, False])
def test_finite_dataset_follows_the_documented_layout(use_numba):
    if use_numba and rng.numba is None:
        pytest.skip("numba not installed")
    T, B = 11, 4
    for step in (0, 3, 2**31 - 5):
        got = rng.sample_batch_raw(torch.tensor(SEEDS), torch.tensor(P), step, B, use_numba=use_numba,
                                   anticorrelated_sets=DATA.anticorrelated_sets, dataset_size=T)
        js = [(step * B + b) % T for b in range(B)]
        for k, seed in enumerate(SEEDS):
            exp = expected_samples(seed, P[k], js, 0, rng.STREAM_DATASET, (), [[2, 3, 4]])
            np.testing.assert_array_equal(got[k].numpy(), exp)


def _big_batch(data, p, n=8, value_range="unit", K=4, steps=4, B=2000):
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), (n,))[None]  # one per-feature vector for every model
    pop = sp.Population(sp.ModelSpec(n, 2, value_range=value_range), feature_probability=p,
                        seed=list(range(K)), data=data)
    return torch.cat([sp.sample_batch(pop, t, B) for t in range(steps)]).reshape(-1, n).numpy()


def _within_4_sigma(active: np.ndarray, p: float):
    N = active.size
    assert abs(active.mean() - p) < 4 * np.sqrt(p * (1 - p) / N) + 1e-12


def test_correlated_sets_share_their_mask_and_keep_independent_uniform_values():
    p = 0.2
    x = _big_batch(sp.DataSpec(correlated_sets=[[1, 4, 6], [2, 3]]), p)
    active = x != 0  # an active value is exactly 0 with probability 2^-32 per draw
    assert (active[:, 1] == active[:, 4]).all() and (active[:, 1] == active[:, 6]).all()
    assert (active[:, 2] == active[:, 3]).all()
    assert not (active[:, 1] == active[:, 2]).all()  # different sets draw independently
    for i in (0, 1, 2, 4):
        _within_4_sigma(active[:, i], p)
        assert stats.kstest(x[active[:, i], i], "uniform").pvalue > 1e-3
    both = active[:, 1]
    # the members' values are independent of each other (the leader's value does not leak)
    assert abs(stats.pearsonr(x[both, 1], x[both, 4])[0]) < 4 / np.sqrt(both.sum())


def test_anticorrelated_members_are_never_co_active_and_keep_their_densities():
    p = np.array([0.3, 0.1, 0.25, 0.05, 0.2, 0.2, 0.2, 0.2])
    x = _big_batch(sp.DataSpec(anticorrelated_sets=[[0, 1, 2, 3]]), p)
    active = x != 0
    assert active[:, :4].sum(axis=1).max() == 1
    for i in range(8):
        _within_4_sigma(active[:, i], p[i])
        assert stats.kstest(x[active[:, i], i], "uniform").pvalue > 1e-3
    _within_4_sigma(active[:, :4].any(axis=1), p[:4].sum())


def test_symmetric_values_are_uniform_on_minus_one_one():
    x = _big_batch(sp.DataSpec(correlated_sets=[[0, 1]], anticorrelated_sets=[[2, 3]]), 0.3, value_range="symmetric")
    active = x != 0
    for i in range(8):
        _within_4_sigma(active[:, i], 0.3)
        vals = x[active[:, i], i]
        assert vals.min() >= -1 and vals.max() < 1
        assert stats.kstest(vals, "uniform", args=(-1, 2)).pvalue > 1e-3


def test_finite_dataset_batches_repeat_when_the_counter_wraps():
    T, B = 10, 4
    pop = sp.Population(sp.ModelSpec(5, 2), feature_probability=0.5, seed=[7, 8], data=sp.DataSpec(dataset_size=T))
    whole = sp.sample_batch(pop, 0, 64)  # T <= B: the batch is the whole dataset, in order
    assert whole.shape == (2, T, 5)
    assert torch.equal(sp.sample_batch(pop, 9, 64), whole)
    for t in range(12):
        batch = sp.sample_batch(pop, t, B)
        assert torch.equal(batch, whole[:, [(t * B + b) % T for b in range(B)]])
        assert torch.equal(batch, sp.sample_batch(pop, t + 5, B))  # 5 B = 2 T: the counter wrapped
    # the dataset differs between models and from the stream of fresh batches
    assert not torch.equal(whole[0], whole[1])
    fresh = sp.sample_batch(sp.Population(pop.spec, feature_probability=0.5, seed=[7, 8]), 0, T)
    assert not torch.equal(fresh, whole)


def test_data_options_ignore_the_other_models():
    data = sp.DataSpec(correlated_sets=[[0, 5]], anticorrelated_sets=[[1, 2]], dataset_size=50)
    spec = sp.ModelSpec(6, 2, value_range="symmetric", target="abs")
    big = sp.Population(spec, feature_probability=np.linspace(0.05, 0.5, 9), seed=list(range(100, 109)), data=data)
    alone = big.select([4])
    for t in (0, 13):
        assert torch.equal(sp.sample_batch(big, t, 32)[4], sp.sample_batch(alone, t, 32)[0])


def test_cpu_paths_and_devices_agree():
    seeds, p = torch.tensor(SEEDS), torch.tensor(P)
    kw = dict(correlated_sets=DATA.correlated_sets, anticorrelated_sets=DATA.anticorrelated_sets, symmetric=True,
              dataset_size=37)
    a = rng.sample_batch_raw(seeds, p, 5, 16, use_numba=False, **kw)
    if rng.numba is not None:
        assert torch.equal(a, rng.sample_batch_raw(seeds, p, 5, 16, use_numba=True, **kw))
    if HAS_CUDA:
        assert torch.equal(a, rng.sample_batch_raw(seeds, p, 5, 16, device="cuda", **kw).cpu())


def test_full_batch_training_draws_the_dataset_once_with_the_same_result(monkeypatch):
    """T <= batch: the reference trainer draws the dataset once (DataSpec.fixed_batch); the weights are
    bit-identical to drawing it again at every step."""
    data = sp.DataSpec(dataset_size=20)
    assert data.fixed_batch(20) and not data.fixed_batch(19) and not sp.DataSpec().fixed_batch(10**6)
    pop = sp.Population(sp.ModelSpec(8, 3), feature_probability=0.3, seed=[1, 2], data=data)
    cfg = sp.TrainConfig(steps=25, batch_size=64, log_every=5)
    once = sp.train(pop, cfg, backend="torch")
    monkeypatch.setattr(sp.DataSpec, "fixed_batch", lambda self, batch_size: False)
    every_step = sp.train(pop, cfg, backend="torch")
    assert torch.equal(once.W, every_step.W) and torch.equal(once.b, every_step.b)
    assert torch.equal(once.loss_history, every_step.loss_history)
