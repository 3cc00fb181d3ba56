"""Checkpoint / resume of a population's training state: stopping at any step and continuing from the
saved state gives the bits of an uninterrupted run (torch backend, and the triton kernels under the
interpreter), and `sp.train(..., progress=True)` shows a bar."""
import numpy as np
import pytest
import torch

import superpos as sp


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
    assert torch.equal(again[35].W, saved[35].W) and torch.equal(again[35].exp_avg_sq["b"], saved[35].exp_avg_sq["b"])


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
    with pytest.raises(ValueError, match=r"resume\.params\.W"):
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


# --- a real `superpos run` killed mid-chunk --------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from superpos.store import RunStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
ONE_CHUNK = """
name = "one_chunk"
[model]
n_features = 4
n_hidden = 2
[train]
steps = 3000
batch_size = 64
log_every = 50
[sweep]
feature_probability = [1.0, 0.3, 0.05]
seeds = 2
"""


def run_cli(spec, out, *extra):
    return [sys.executable, "-m", "superpos", "run", str(spec), "--out", str(out), "--backend", "torch", "--quiet",
            "--no-plot", *extra]


def test_kill_mid_chunk_resumes_from_its_checkpoint_bit_identically(tmp_path):
    """CPU default: one chunk. A kill -9 in the middle of it keeps the work up to the last checkpoint."""
    spec = tmp_path / "spec.toml"
    spec.write_text(ONE_CHUNK)
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(run_cli(spec, ref, "--checkpoint-every", "inf"), cwd=ROOT, env=ENV, check=True, timeout=600)
    assert json.loads((ref / "plan.json").read_text())["chunks"] == [[0, 0, 6]]
    assert not (ref / "chunks" / "c000000.ckpt").exists()

    p = subprocess.Popen(run_cli(spec, out, "--checkpoint-every", "0"), cwd=ROOT, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = RunStore(out)
    deadline = time.monotonic() + 300
    while store.checkpoint_step(0) < 600 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, f"run ended before it could be killed: {p.communicate()}"
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    saved = store.checkpoint_step(0)
    assert 600 <= saved < 3000 and not store.chunk_done(0)

    subprocess.run(run_cli(spec, out), cwd=ROOT, env=ENV, check=True, timeout=600)
    info = json.loads((out / "chunks" / "c000000.json").read_text())
    assert info["resumed_from_step"] == saved  # the rerun continued, it did not start over
    assert not (out / "chunks" / "c000000.ckpt").exists()  # removed once the chunk is finished
    for name in ("chunks/c000000.safetensors", "chunks/c000000.parquet", "models.parquet"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_a_damaged_checkpoint_is_ignored_and_the_chunk_retrained(tmp_path):
    from superpos.driver import run_sweep
    from superpos.sweep import parse_spec

    sweep = parse_spec(ONE_CHUNK.replace("steps = 3000", "steps = 60"))
    ref = tmp_path / "ref"
    run_sweep(sweep, ref, backend="torch", quiet=True)
    out = tmp_path / "out"
    store = RunStore(out)
    saved = {}
    with pytest.raises(KeyboardInterrupt):  # stop after the checkpoint at step 30 was written
        def stop_at_30(pop, cfg, checkpoint=None, **kw):
            def ckpt(step, snap):
                checkpoint(step, snap)
                if step == 30:
                    saved["bytes"] = store.chunk_path(0, "ckpt").read_bytes()
                    raise KeyboardInterrupt
            return sp.train(pop, cfg, checkpoint=ckpt, **kw)
        run_sweep(sweep, out, backend="torch", quiet=True, checkpoint_every=0, train_fn=stop_at_30)
    assert store.checkpoint_step(0) == 30
    data = bytearray(saved["bytes"])
    data[-5] ^= 0x01  # a bit flip in the state: the checkpoint's own checksum rejects it
    store.chunk_path(0, "ckpt").write_bytes(bytes(data))
    assert store.read_checkpoint(0, 0, 6) is None and not store.chunk_path(0, "ckpt").exists()
    store.chunk_path(0, "ckpt").write_bytes(saved["bytes"])
    assert store.read_checkpoint(0, 0, 5) is None  # another model range: not this chunk's
    store.chunk_path(0, "ckpt").write_bytes(bytes(data))
    run_sweep(sweep, out, backend="torch", quiet=True)
    assert json.loads((out / "chunks" / "c000000.json").read_text())["resumed_from_step"] == 0
    assert (out / "models.parquet").read_bytes() == (ref / "models.parquet").read_bytes()


def test_resume_of_an_untied_model_with_snapshots_is_bit_identical():
    """The state carries every parameter of the family (W_dec, b_hidden too) and the snapshots taken
    before the stop, so a resumed run stores the same snapshots as an uninterrupted one."""
    spec = sp.ModelSpec(6, 3, tied=False, hidden_activation="relu", target="abs", value_range="symmetric")
    pop = sp.Population(spec, feature_probability=[0.3, 0.6], importance=1.0, seed=5)
    cfg = sp.TrainConfig(steps=30, batch_size=16, log_every=4, snapshot_steps=[0, 7, 20, 29])
    full, saved = snapshots(pop, cfg, "torch")
    assert set(saved[12].params) == {"W", "b", "W_dec", "b_hidden"}
    resumed = sp.train(pop, cfg, backend="torch", resume=saved[12])
    assert_same(resumed, full)
    for k in ("W_dec", "b_hidden"):
        assert torch.equal(resumed.extra[k], full.extra[k])
    for k, v in full.snapshots.items():
        assert torch.equal(resumed.snapshots[k], v)
