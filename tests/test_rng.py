"""The Philox stream: against an independent NumPy Philox4x32-10 (with Random123's known answers),
against Triton's own tl.philox/tl.randint4x/tl.rand, and the statistics of the batches it makes."""
import numpy as np
import pytest
import torch
from scipy import stats

import superpos as sp
from superpos import rng


def philox_numpy(ctr, key, rounds=10):
    """Independent Philox4x32 (Salmon et al. 2011), written from the paper's round function."""
    M0, M1, W0, W1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57), 0x9E3779B9, 0xBB67AE85
    c = [np.asarray(x, dtype=np.uint64) for x in ctr]
    k0, k1 = (np.asarray(x, dtype=np.uint64) for x in key)
    mask = np.uint64(0xFFFFFFFF)
    for _ in range(rounds):
        p0, p1 = M0 * c[0], M1 * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & mask, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & mask]
        k0, k1 = (k0 + np.uint64(W0)) & mask, (k1 + np.uint64(W1)) & mask
    return [x.astype(np.uint32) for x in c]


# Random123's kat_vectors for philox4x32_10: (counter, key, expected output)
KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_numpy_philox_known_answers(ctr, key, expected):
    assert [int(x) for x in philox_numpy(ctr, key)] == list(expected)


def test_torch_philox_matches_numpy(gen):
    ctr = gen.integers(0, 2**32, size=(4, 1000), dtype=np.uint64)
    key = gen.integers(0, 2**32, size=(2, 1000), dtype=np.uint64)
    as_t = lambda a: torch.tensor(a.astype(np.int64))
    got = rng.philox4x32_torch(*map(as_t, ctr), *map(as_t, key))
    for g, e in zip(got, philox_numpy(ctr, key)):
        np.testing.assert_array_equal(g.numpy().astype(np.uint32), e)


def _expected_batch(seed, p, step, B):
    """The documented layout, rebuilt from the NumPy Philox: counter (g n + i, step, 0, 0), b = 4 g + lane."""
    n = p.shape[0]
    g, i = np.meshgrid(np.arange((B + 3) // 4), np.arange(n), indexing="ij")
    words = philox_numpy([g * n + i, np.full_like(g, step), np.zeros_like(g), np.zeros_like(g)],
                         [seed & 0xFFFFFFFF, seed >> 32])
    r = np.stack(words, axis=1).reshape(-1, n)[:B].astype(np.int64)  # sample b = 4 g + lane
    T = np.clip(np.round(p * 2.0**32), 1, 2.0**32)
    val = np.minimum(r.astype(np.float32) * (1.0 / T).astype(np.float32), np.float32(rng.ONE_BELOW))
    return np.where(r < T, val, 0.0).astype(np.float32)


@pytest.mark.parametrize("use_numba", [True, False])
def test_sample_batch_follows_documented_layout(use_numba):
    if use_numba and rng.numba is None:
        pytest.skip("numba not installed")
    seeds = torch.tensor([0, 7, 2**40 + 3, 2**63 - 1])
    p = torch.tensor([[1.0, 0.5, 0.01], [0.3, 0.3, 0.3], [0.9, 1e-3, 0.2], [0.05, 0.6, 1.0]], dtype=torch.float64)
    for step in (0, 1, 12345):
        got = rng.sample_batch_raw(seeds, p, step, 13, use_numba=use_numba)
        for k in range(4):
            np.testing.assert_array_equal(got[k].numpy(), _expected_batch(int(seeds[k]), p[k].numpy(), step, 13))


def test_batch_of_a_model_ignores_its_neighbours():
    spec = sp.ModelSpec(6, 2)
    big = sp.Population(spec, feature_probability=np.linspace(0.1, 1, 9), seed=list(range(100, 109)))
    alone = sp.Population(spec, feature_probability=big.feature_probability[4:5].numpy(), seed=[104])
    assert torch.equal(sp.sample_batch(big, 3, 50)[4], sp.sample_batch(alone, 3, 50)[0])


@pytest.mark.parametrize("p", [1.0, 0.5, 0.1, 0.01])
def test_data_statistics(p):
    pop = sp.Population(sp.ModelSpec(50, 2), feature_probability=p, seed=list(range(4)))
    x = torch.cat([sp.sample_batch(pop, t, 1000) for t in range(3)]).numpy()
    N = x.size
    frac = (x > 0).mean()  # an exact zero among active values has probability 2^-32 per draw
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / N) + 1e-12
    vals = x[x > 0]
    assert vals.max() < 1.0
    assert stats.kstest(vals, "uniform").pvalue > 1e-3


def test_init_is_xavier_normal_and_seeded():
    a = sp.Population(sp.ModelSpec(400, 30), seed=[1, 2])
    b = sp.Population(sp.ModelSpec(400, 30), seed=[2])
    assert torch.equal(a.W[1], b.W[0]) and not torch.equal(a.W[0], a.W[1])
    w = a.W.flatten().double()
    std = np.sqrt(2 / 430)
    assert abs(w.mean()) < 4 * std / np.sqrt(w.numel())
    assert abs(w.std() / std - 1) < 0.02
    assert stats.kstest((w / std).numpy(), "norm").pvalue > 1e-3
    assert torch.count_nonzero(a.b) == 0


@pytest.mark.parametrize("use_numba", [True, False])
@pytest.mark.parametrize("data", [sp.DataSpec(), sp.DataSpec(correlated_sets=[[0, 1]], anticorrelated_sets=[[2, 3]]),
                                  sp.DataSpec(dataset_size=50)])
def test_batch_sampler_draws_what_sample_batch_draws(use_numba, data):
    """The trainer's sampler (tables built once) gives each step's batch bit for bit, steps in any order."""
    pop = sp.Population(sp.ModelSpec(6, 2), feature_probability=np.linspace(0.1, 0.4, 3), seed=[4, 5, 6], data=data)
    draw = rng.batch_sampler(pop.seed, pop.feature_probability, 32, use_numba=use_numba,
                             correlated_sets=data.correlated_sets, anticorrelated_sets=data.anticorrelated_sets,
                             dataset_size=data.dataset_size)
    for step in (3, 0, 7, 3):
        want = rng.sample_batch_raw(pop.seed, pop.feature_probability, step, 32, use_numba=not use_numba,
                                    correlated_sets=data.correlated_sets,
                                    anticorrelated_sets=data.anticorrelated_sets, dataset_size=data.dataset_size)
        assert torch.equal(draw(step), want)
        assert torch.equal(sp.spec.batch_sampler(pop, 32)(step), sp.sample_batch(pop, step, 32))
