"""Checkpoint / resume of a population's training state: stopping at any step and continuing from the
saved state gives the bits of an uninterrupted run (torch backend, and the triton kernels under the
interpreter), and `sp.train(..., progress=True)` shows a bar."""
import numpy as np
import pytest
import torch

import superpos as sp
from superpos.checkpoint import TrainCheckpoint


def population(n=5, m=2, K=3):
    return sp.Population(sp.ModelSpec(n, m), feature_probability=np.linspace(0.2, 0.9, K),
                         importance=0.9 ** np.arange(n), seed=11)


def snapshots(pop, cfg, backend, **kw):
    """An uninterrupted run, recording every state it offers to `checkpoint`."""
    saved = {}
    res = sp.train(pop, cfg, backend=backend, checkpoint=lambda step, snap: saved.setdefault(step, snap()), **kw)
    return res, saved


def assert_same(a, b):
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    assert torch.equal(a.loss_history, b.loss_history) and a.status == b.status


def test_torch_resume_is_bit_identical():
    pop, cfg = population(), sp.TrainConfig(steps=40, batch_size=32, log_every=3, lr=3e-2)
    full, saved = snapshots(pop, cfg, "torch")
    assert sorted(saved) == list(range(1, 40))  # steps // 100 < 1: offered after every step
    for step in (1, 17, 39):
        ckpt = saved[step]
        # the snapshot is a copy taken at that step: history logged after it is still NaN
        logged = cfg.logged_steps()
        assert torch.isnan(ckpt.loss_history[:, logged >= step]).all()
        assert not torch.isnan(ckpt.loss_history[:, logged < step]).any()
        assert_same(sp.train(pop, cfg, backend="torch", resume=ckpt), full)
    # a resumed run offers checkpoints again, from where it started
    again = {}
    sp.train(pop, cfg, backend="torch", resume=saved[30], checkpoint=lambda s, snap: again.setdefault(s, snap()))
    assert sorted(again) == list(range(31, 40))
    assert torch.equal(again[35].W, saved[35].W) and torch.equal(again[35].exp_avg_sq_b, saved[35].exp_avg_sq_b)


def test_triton_resume_is_bit_identical():
    pop, cfg = population(), sp.TrainConfig(steps=6, batch_size=16, log_every=2, lr=3e-2)
    full, saved = snapshots(pop, cfg, "triton", max_steps_per_launch=2)
    assert sorted(saved) == [2, 4]
    for step in (2, 4):
        assert_same(sp.train(pop, cfg, backend="triton", max_steps_per_launch=2, resume=saved[step]), full)
    # the state the kernels hand out is the reference's state at that step (same data, same update)
    ref, ref_saved = snapshots(pop, cfg, "torch")
    torch.testing.assert_close(saved[4].exp_avg_W, ref_saved[4].exp_avg_W, rtol=1e-4, atol=1e-6)


def test_resume_state_of_the_wrong_shape_is_refused():
    pop, cfg = population(), sp.TrainConfig(steps=10, batch_size=8)
    _, saved = snapshots(pop, cfg, "torch")
    with pytest.raises(ValueError, match="resume.W"):
        sp.train(population(K=2), cfg, backend="torch", resume=saved[5])
    with pytest.raises(ValueError, match="resume.step"):
        sp.train(pop, sp.TrainConfig(steps=4, batch_size=8), backend="torch", resume=saved[5])
    with pytest.raises(ValueError, match="resume"):
        sp.train(pop, cfg, backend="torch", resume={"step": 3})
    assert saved[5].select(slice(1, 3)).W.shape == (2, 2, 5)


def test_progress_true_shows_a_bar(capsys):
    pop, cfg = population(), sp.TrainConfig(steps=50, batch_size=8)
    res = sp.train(pop, cfg, backend="torch", progress=True)
    err = capsys.readouterr().err
    assert "training 3 models" in err and "50/50" in err
    assert_same(res, sp.train(pop, cfg, backend="torch"))  # the bar changes nothing
    with pytest.raises(ValueError, match="progress"):
        sp.train(pop, cfg, backend="torch", progress="yes")
