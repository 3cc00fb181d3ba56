"""The benchmark suite: peers agree with the reference, metrics arithmetic, reports, the --quick CLI."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch

import superpos as sp
from superpos.bench import harness, report
from superpos.bench.cli import main as bench_main
from superpos.bench.peers import make_peer, train_peer
from superpos.bench.workloads import WORKLOADS, flops_per_sample, get_workload
from superpos.reference import train_torch

HAS_JAX = importlib.util.find_spec("jax") is not None


# --- peers against the reference trainer ------------------------------------------------------------
def _small_problem(schedule="linear", steps=60):
    """Six intro-like models (n=5, m=2), densities 1 .. 1/20, importance 0.9^i; batch 256."""
    pop = sp.Population(sp.ModelSpec(5, 2), feature_probability=20.0 ** -np.linspace(0, 1, 6),
                        importance=0.9 ** np.arange(5), seed=11)
    cfg = sp.TrainConfig(steps=steps, batch_size=256, log_every=20, lr_schedule=schedule)
    return pop, cfg


def _assert_matches_reference(name, pop, cfg):
    ref = train_torch(pop, cfg)
    got = train_peer(name, pop, cfg, batches="reference")
    # Tolerance: the peers compute the same float32 products and sums in another order (autograd's or
    # XLA's), a few ulps (~1e-7 relative) per gradient entry. Adam normalises gradients, so weights drift
    # apart by about lr x that relative error per step: observed max |dW| 9e-8 (torch, 60 steps), 3e-7
    # (torch.compile, 41 steps), 1e-6 (jax, 60 steps) on the CPU. 1e-5 leaves a 10x margin and is still
    # 100x smaller than one lr step (1e-3) and than what skipping weight decay would change
    # (lr wd |W| steps ~ 3e-4).
    assert (got.W - ref.W).abs().max().item() < 1e-5
    assert (got.b - ref.b).abs().max().item() < 1e-5
    assert (got.W - pop.W).abs().max().item() > 1e-2  # it did train
    # losses at the steps both recorded (0, 20, 40): same batches, nearly the same weights
    cols = [list(ref.loss_steps).index(s) for s in got.loss_steps]
    torch.testing.assert_close(got.loss_history, ref.loss_history[:, cols], rtol=1e-4, atol=1e-7)


def test_torch_peer_matches_reference():
    _assert_matches_reference("torch", *_small_problem("linear"))


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
def test_jax_peer_matches_reference():
    _assert_matches_reference("jax", *_small_problem("cosine"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_torch_compile_peer_matches_reference():
    # a cosine schedule exercises the tensor learning rate the compiled optimizer reads each step
    _assert_matches_reference("torch-compile", *_small_problem("cosine", steps=41))


def test_peers_random_mode_draws_the_library_distribution_and_trains():
    pop, cfg = _small_problem("constant", steps=60)
    peer = make_peer("torch", pop, sp.TrainConfig(steps=1, batch_size=8192))
    x = peer.sample()  # [K, B, n] from torch.rand: feature active with probability p, then U[0, 1)
    p = pop.feature_probability.to(torch.float32).unsqueeze(1)  # [K, 1, n]
    active = (x > 0).float().mean(1)
    # 5 sigma of a binomial proportion over 8192 samples: a wrong density would be off by far more
    assert ((active - p[:, 0]).abs() <= 5 * (p[:, 0] * (1 - p[:, 0]) / 8192).sqrt() + 1e-6).all()
    mean_active = x.sum(1) / (x > 0).sum(1)
    assert ((mean_active - 0.5).abs() < 5 * (1 / 12 / (p[:, 0] * 8192)).sqrt()).all()
    assert x.max() < 1.0 + 1e-6 and x.min() >= 0.0
    for name in ["torch"] + (["jax"] if HAS_JAX else []):
        got = train_peer(name, pop, cfg, batches="random")
        assert torch.isfinite(got.W).all() and torch.isfinite(got.loss_history).all()
        assert got.loss_history[:, -1].mean() < got.loss_history[:, 0].mean()  # it learns


# --- workloads ------------------------------------------------------------------------------------
def test_workloads_are_the_issue_s():
    shapes = {w.name: (w.n, w.m, w.models, w.batch_size) for w in WORKLOADS.values()}
    assert shapes["intro"] == (5, 2, (10,), 1024)
    assert shapes["phase"] == (2, 1, (25_600,), 1024)
    assert shapes["phase3"] == (3, 2, (25_600,), 1024)
    assert shapes["geometry"] == (200, 20, (200,), 1024)
    assert shapes["uniform"] == (400, 30, (64,), 1024)
    assert shapes["scaling"][:2] == (2, 1) and min(shapes["scaling"][2]) == 1
    assert max(shapes["scaling"][2]) == 1_000_000
    cfgs = {w.name: w.train_config() for w in WORKLOADS.values()}
    assert {tuple(sorted((k, str(v)) for k, v in c.to_dict().items() if k != "steps")) for c in cfgs.values()} == {
        tuple(sorted((k, str(v)) for k, v in sp.TrainConfig().to_dict().items() if k != "steps"))}
    phase = get_workload("phase").population(25_600)
    cells = {(p, i) for p, i in zip(phase.feature_probability[:, 0].tolist(), phase.importance[:, -1].tolist())}
    assert len(cells) == 1600 and len(set(phase.seed.tolist())) == 25_600
    intro = get_workload("intro").population(10)
    np.testing.assert_allclose(intro.feature_probability[:, 0].numpy(), 20.0 ** -np.linspace(0, 1, 10))
    for w in WORKLOADS.values():
        for K in w.quick_models:
            assert len(w.population(K)) == K
    with pytest.raises(ValueError, match="workload"):
        get_workload("nope")


# --- metrics arithmetic ---------------------------------------------------------------------------
def test_metrics_arithmetic():
    assert flops_per_sample(5, 2) == 100
    got = harness.metrics([2.0, 1.0, 3.0], K=10, batch_size=1024, steps=1000, n=5, m=2, peak_flops=1e9,
                          measured_peak_flops=5e8)
    assert got["ms_per_1000_steps"] == pytest.approx(2000.0)
    assert got["ms_per_1000_steps_min"] == pytest.approx(1000.0)
    assert got["ms_per_1000_steps_max"] == pytest.approx(3000.0)
    assert got["spread_pct"] == pytest.approx(100.0)
    assert got["model_steps_per_s"] == pytest.approx(5000.0)  # 10 models x 1000 steps / 2 s
    assert got["samples_per_s"] == pytest.approx(5000.0 * 1024)
    assert got["flop_per_s"] == pytest.approx(100 * 5000.0 * 1024)
    assert got["fp32_peak_fraction"] == pytest.approx(0.512)
    assert got["fp32_measured_peak_fraction"] == pytest.approx(1.024)
    assert harness.metrics([1.0], 1, 1, 1, 1, 1)["fp32_peak_fraction"] is None


def test_peer_ratios_within_groups():
    def row(backend, speed, precision="ieee", status="ok"):
        return {"run_id": "r", "workload": "w", "K": 8, "precision": precision, "backend": backend,
                "status": status, "model_steps_per_s": speed}
    rows = harness.add_peer_ratios([row("torch", 100.0), row("jax", 200.0), row("triton", 2000.0),
                                    row("torch-compile", None, status="oom"), row("triton", 50.0, "tf32"),
                                    row("torch", 25.0, "tf32")])
    by = {(r["backend"], r["precision"]): r for r in rows}
    assert by["triton", "ieee"]["ratio_to_fastest_peer"] == pytest.approx(10.0)
    assert by["torch", "ieee"]["ratio_to_fastest_peer"] == pytest.approx(0.5)
    assert by["jax", "ieee"]["ratio_to_fastest_peer"] == pytest.approx(1.0)
    assert by["torch-compile", "ieee"]["ratio_to_fastest_peer"] is None
    assert all(r["fastest_peer"] == "jax" for r in rows if r["precision"] == "ieee")
    assert by["triton", "tf32"]["ratio_to_fastest_peer"] == pytest.approx(2.0)


def test_peak_table_and_timers():
    assert harness.table_peak("NVIDIA H100 80GB HBM3") == ("H100 SXM", 67e12)
    assert harness.table_peak("NVIDIA H100 PCIe") == ("H100 PCIe", 51e12)
    assert harness.table_peak("NVIDIA H200") == ("H200 SXM", 67e12)
    assert harness.table_peak("NVIDIA L40S")[0] == "L40S" and harness.table_peak("NVIDIA L4")[0] == "L4"
    assert harness.table_peak("Some Future GPU") == (None, None)
    assert harness.time_call(lambda: sum(range(1000)), "cpu") > 0
    flops, source = harness.measure_fp32_peak("cpu", size=128, iters=2)
    assert flops > 0 and "TF32 off" in source


# --- report: JSON lines, table, plot --------------------------------------------------------------
def _row(backend, K, speed, status="ok", timestamp="2026-01-01T00:00:00+00:00", precision="ieee"):
    steps, B = 200, 1024
    t = K * steps / speed if speed else None
    row = {"workload": "scaling", "backend": backend, "precision": precision, "K": K, "n": 2, "m": 1,
           "batch_size": B, "steps": steps, "status": status, "device": "NVIDIA H100 80GB HBM3",
           "quick": False, "versions": {"torch": "2.x", "triton": "3.6", "jax": None, "python": "3.11"},
           "commit": "abc123", "timestamp": timestamp, "config": {}, "peak_memory_bytes": 3 * 2**20,
           "fp32_peak_flops": 67e12, "fp32_peak_source": "table", "ratio_to_fastest_peer": None,
           "model_steps_per_s": None, "samples_per_s": None, "ms_per_1000_steps": None,
           "fp32_peak_fraction": None}
    if status == "ok":
        row.update(harness.metrics([t], K, B, steps, 2, 1, 67e12))
    return row


def test_report_table_and_plot(tmp_path):
    rows = [_row("torch", K, 1e5 * K ** 0.8) for K in (1, 10, 100)] + \
           [_row("triton", K, 1e6 * K ** 0.95) for K in (1, 10, 100)] + [_row("jax", 100, None, status="oom")]
    rows = harness.add_peer_ratios([{**r, "run_id": "a"} for r in rows])
    stale = {**rows[0], "model_steps_per_s": 1.0, "timestamp": "2025-01-01T00:00:00+00:00"}
    path = report.append_rows(tmp_path / "r.jsonl", [stale] + rows)
    loaded = report.load_rows(path)
    assert len(loaded) == 8 and json.loads(path.read_text().splitlines()[1])["backend"] == "torch"
    table = report.markdown_table(loaded)
    assert "NVIDIA H100 80GB HBM3" in table and "| scaling | 100 | 2×1 | jax | 200 | oom |" in table
    assert table.count("| scaling | 1 | 2×1 | torch |") == 1  # the stale duplicate is dropped
    assert "; 2026-01-01.\n" in table  # the day of the rows shown (the stale row's is not)
    later = {**rows[1], "backend": "jax", "timestamp": "2026-01-03T00:00:00+00:00"}
    assert "2026-01-01 to 2026-01-03 (" in report.markdown_table(loaded + [later])
    ratio = 1e6 * 100 ** 0.95 / (1e5 * 100 ** 0.8)
    assert f"{ratio:.2f}×" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.TABLE_BEGIN}\nold\n{report.TABLE_END}\noutro\n")
    report.update_readme(readme, table)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("outro\n") and table in text
    png = report.plot_throughput(loaded, tmp_path / "scaling.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="lacks fields"):
        report.append_rows(tmp_path / "bad.jsonl", [{"workload": "x"}])
    with pytest.raises(ValueError, match="no successful rows"):
        report.plot_throughput(loaded, tmp_path / "x.png", workload="intro")


# --- the CLI, end to end --------------------------------------------------------------------------
def test_quick_cli_end_to_end(tmp_path, capsys):
    out, png = tmp_path / "quick.jsonl", tmp_path / "scaling.png"
    backends = "torch,jax" if HAS_JAX else "torch"
    rc = bench_main(["--quick", "--workload", "intro,scaling", "--backend", backends, "--steps", "3",
                     "--models", "1,64", "--repeats", "1", "--out", str(out), "--plot", str(png), "--table"])
    assert rc == 0
    rows = report.load_rows(out)
    n_points = 2 * 2  # two workloads x two model counts
    assert len(rows) == n_points * len(backends.split(","))
    for row in rows:
        assert set(report.FIELDS) <= set(row)
        assert row["status"] == "ok" and row["quick"] and row["device"].startswith("CPU")
        assert row["steps"] == 3 and row["batch_size"] == 1024 and row["config"]["train"]["steps"] == 3
        assert row["model_steps_per_s"] > 0 and row["fp32_peak_fraction"] > 0
        assert row["ratio_to_fastest_peer"] <= 1.0 + 1e-12
        assert row["versions"]["torch"] == torch.__version__
    assert png.exists() and "CPU smoke test" in capsys.readouterr().out
    assert bench_main(["--report", str(out)]) == 0
    assert bench_main(["--quick", "--workload", "nope"]) == 2
    assert bench_main(["--quick", "--backend", "triton"]) == 2
    assert bench_main(["--steps", "0"]) == 2
    assert "superpos bench: error:" in capsys.readouterr().err
