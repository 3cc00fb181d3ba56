"""The results store and the driver in-process: layout, load_run, best-of-seeds, refusals, lock,
divergence, OOM splitting, and the 1M-row table size."""
import json
import time

import numpy as np
import pandas as pd
import pytest

from conftest import MILLION_SPEC
import torch

import superpos as sp
from superpos.driver import run_sweep
from superpos.store import RunError, RunLock, best_of_seeds, drop_worst, load_run, table_bytes
from superpos.sweep import parse_spec

TINY = """
name = "tiny"
[model]
n_features = 3
n_hidden = 2
[train]
steps = 30
batch_size = 32
log_every = 10
[sweep]
feature_probability = [1.0, 0.2]
relative_importance = [0.5, 2.0]
seeds = 2
"""


def tiny(extra="", text=TINY):
    return parse_spec(text + extra)


def run(sweep, out, **kw):
    kw.setdefault("quiet", True)
    kw.setdefault("backend", "torch")
    return run_sweep(sweep, out, **kw)


def test_layout_table_and_weights_round_trip(tmp_path):
    sweep = tiny()
    out = tmp_path / "run"
    summary = run(sweep, out, chunk_size=3)  # 8 models -> chunks of 2, 3, 3
    assert summary["complete"] and summary["n_chunks"] == 3 and summary["models_trained"] == 8
    names = sorted(p.name for p in out.iterdir())
    assert names == ["chunks", "manifest.json", "models.parquet", "plan.json", "spec.json", "spec.toml"]
    chunk_files = sorted(p.name for p in (out / "chunks").iterdir())
    assert chunk_files == [f"c00000{i}.{s}" for i in range(3) for s in ("json", "parquet", "safetensors")]
    assert not list(out.rglob(".*tmp*")) and not (out / ".lock").exists()

    r = load_run(out)
    assert r.name == "tiny" and r.complete and r.spec == json.loads(sweep.to_json())
    t = r.table
    assert len(t) == 8 and t["model_id"].tolist() == list(range(8))
    for col in ("model_id", "point_id", "seed_index", "seed", "n_features", "n_hidden", "activation",
                "feature_probability", "relative_importance", "importance_decay", "lr", "weight_decay",
                "steps", "batch_size", "lr_schedule", "final_loss", "status", "chunk"):
        assert col in t.columns, col
    assert t["chunk"].tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert (t["status"] == "ok").all() and t["relative_importance"].tolist() == [0.5, 0.5, 2.0, 2.0] * 2

    m = r.manifest
    assert m["status"] == "complete" and m["backend"] == "torch" and m["n_models"] == 8
    assert m["versions"]["torch"] and m["device"]["type"] == "cpu" and "git" in m
    assert m["runs"][-1]["chunks_trained"] == 3 and 0 <= m["runs"][-1]["overhead_fraction"] < 1

    # the stored models are exactly what training them directly gives (bit for bit)
    ids = [7, 2, 3]
    W, b = r.weights(ids)
    pop = sweep.population(0, 8)
    res = sp.train(pop, sweep.groups[0].cfg, backend="torch")
    assert W.dtype == torch.float32 and W.shape == (3, 2, 3) and b.shape == (3, 3)
    assert torch.equal(W, res.W[ids]) and torch.equal(b, res.b[ids])
    steps, losses = r.loss_history(ids)
    np.testing.assert_array_equal(steps, [0, 10, 20, 29])
    np.testing.assert_array_equal(losses, res.loss_history[ids].numpy())
    np.testing.assert_array_equal(t["final_loss"].to_numpy(), res.loss_history[:, -10:].mean(dim=1).double().numpy())
    np.testing.assert_array_equal(r.importance([2])[0], [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(r.feature_probability([5])[0], [0.2] * 3)


def test_best_of_seeds_and_drop_worst():
    t = pd.DataFrame({"model_id": range(6), "point_id": [0, 0, 0, 1, 1, 1],
                      "final_loss": [0.3, 0.1, np.nan, 0.5, 0.2, 0.4],
                      "status": ["ok", "ok", "diverged", "ok", "ok", "diverged"]})
    best = best_of_seeds(t)
    assert best["model_id"].tolist() == [1, 4]
    kept = drop_worst(t, 1)
    assert kept["model_id"].tolist() == [0, 1, 3, 4]
    t2 = t.assign(status="diverged")
    assert len(best_of_seeds(t2)) == 0


def test_summary_metric_columns(tmp_path):
    pytest.importorskip("superpos.analysis")
    from superpos.analysis import summary_metrics

    run(tiny(), tmp_path / "r")
    r = load_run(tmp_path / "r")
    W, _ = r.weights(range(8))
    expect = summary_metrics(W)
    for k, v in expect.items():
        np.testing.assert_array_equal(r.table[k].to_numpy(), np.asarray(v))


def test_different_spec_in_existing_dir_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(tiny(), out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(RunError, match="different spec.*sweep.feature_probability"):
        run(tiny(text=TINY.replace("[1.0, 0.2]", "[1.0, 0.3]")), out)
    if not torch.cuda.is_available():
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(ValueError, match="needs a CUDA device"):
            run(tiny(), out, backend="triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RunError, match="started with backend 'torch'"):
        run(tiny(), out, backend="triton")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    summary = run(tiny(), out)  # the same spec again: nothing left to do
    assert summary["chunks_trained"] == 0 and summary["complete"]


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a superpos run directory"):
        run(tiny(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_lock_refuses_a_concurrent_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        with pytest.raises(RunError, match="another run is writing"):
            run(tiny(), out)
        assert not (out / "spec.json").exists()
        with pytest.raises(RunError):
            RunLock(out).acquire()
    run(tiny(), out)  # released
    assert load_run(out).complete


def test_diverging_models_are_recorded_not_fatal(tmp_path):
    sweep = tiny("lr = [1e-3, 1e12]\n")
    summary = run(sweep, tmp_path / "r")
    assert summary["complete"] and summary["diverged"] == 8 and summary["ok"] == 8
    t = load_run(tmp_path / "r").table
    assert (t.loc[t["lr"] == 1e12, "status"] == "diverged").all()
    assert (t.loc[t["lr"] == 1e-3, "status"] == "ok").all()
    best = best_of_seeds(t)
    assert (best["lr"] == 1e-3).all() and len(best) == 4


def test_out_of_memory_chunks_are_split_and_give_the_same_results(tmp_path):
    calls = []

    def small_device_train(pop, cfg, **kw):
        calls.append(len(pop))
        if len(pop) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return sp.train(pop, cfg, **kw)

    run(tiny(), tmp_path / "a", chunk_size=8)
    run(tiny(), tmp_path / "b", chunk_size=8, train_fn=small_device_train)
    assert calls[0] == 8 and max(calls[1:]) <= 4 and sum(c for c in calls if c <= 2) == 8
    a, b = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    pd.testing.assert_frame_equal(a.table, b.table)
    assert torch.equal(a.weights(range(8))[0], b.weights(range(8))[0])
    info = json.loads((tmp_path / "b" / "chunks" / "c000000.json").read_text())
    assert info["oom_splits"] > 0

    def broken(pop, cfg, **kw):
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        run(tiny(), tmp_path / "c", train_fn=broken)


def test_incomplete_run_loads_its_finished_chunks(tmp_path):
    def dies_on_third(pop, cfg, **kw):
        if int(pop.seed[0]) >= 4:
            raise KeyboardInterrupt
        return sp.train(pop, cfg, **kw)

    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(), out, chunk_size=2, train_fn=dies_on_third)
    assert not (out / ".lock").exists()
    with pytest.warns(UserWarning, match="incomplete"):
        r = load_run(out)
    assert r.table["model_id"].tolist() == [0, 1, 2, 3] and not r.complete
    with pytest.raises(ValueError, match="not finished"):
        r.weights([5])
    summary = run(tiny(), out)
    assert summary["chunks_trained"] == 2 and load_run(out).complete


def test_million_row_table_size(tmp_path):
    """Issue 4's scale figure: the per-model table of a 1,000,000-model n=2, m=1 grid is < 200 MB.

    The rows are the real ones the driver writes (sweep.rows), with synthetic losses and metrics.
    """
    text = MILLION_SPEC
    sweep = parse_spec(text)
    t0 = time.perf_counter()
    rows = sweep.rows(0, sweep.n_models)
    rng = np.random.default_rng(0)
    k = sweep.n_models
    rows.update(chunk=np.arange(k, dtype=np.int32) // 20_000, final_loss=rng.random(k),
                status=np.where(rng.random(k) < 0.01, "diverged", "ok").astype(object),
                dims_per_feature=rng.random(k), frobenius_sq=rng.random(k) * 2,
                n_represented=rng.integers(0, 3, k), mean_dimensionality=rng.random(k),
                total_dimensionality=rng.random(k), n_superposed=rng.integers(0, 3, k))
    data = table_bytes(rows)
    elapsed = time.perf_counter() - t0
    size_mb = len(data) / 1e6
    print(f"1M-row table: {size_mb:.1f} MB, built and encoded in {elapsed:.1f} s")
    assert size_mb < 200
