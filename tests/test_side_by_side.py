"""Chunks trained side by side (superpos.side_by_side): the same results as one at a time, a failing chunk
stops the others and the run resumes to the same results, and the automatic count fills a GPU only where
chunks are small (the double descent's one group per dataset size)."""
import json
from pathlib import Path

import pytest
import torch

import superpos as sp
from superpos import side_by_side
from superpos.driver import chunks_side_by_side, run_sweep
from superpos.store import load_run
from superpos.sweep import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
# one group per dataset size, as the double descent: 4 groups x 2 seeds
TEXT = """
name = "sbs"
[model]
n_features = 6
n_hidden = 2
[train]
steps = 12
batch_size = 16
log_every = 4
[sweep]
feature_probability = 0.3
dataset_size = [3, 5, 8, 13]
seeds = 2
"""


def _results(out):
    run = load_run(out)
    table = run.table.sort_values("model_id").reset_index(drop=True)
    ids = list(table["model_id"])
    return table, run.weights(ids)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_side_by_side_equals_one_at_a_time(tmp_path, backend):
    sweep = parse_spec(TEXT)
    run_sweep(sweep, tmp_path / "one", backend=backend, quiet=True, side_by_side_count=1)
    summary = run_sweep(sweep, tmp_path / "three", backend=backend, quiet=True, side_by_side_count=3)
    assert summary["complete"] and summary["models_trained"] == sweep.n_models
    (t1, w1), (t3, w3) = _results(tmp_path / "one"), _results(tmp_path / "three")
    assert len(sweep.groups) == 4 and len(t1) == sweep.n_models
    for col in ("final_loss", "status", "dataset_size", "seed"):
        assert list(t1[col]) == list(t3[col]), col
    assert torch.equal(w1[0], w3[0]) and torch.equal(w1[1], w3[1])  # W and b, bit for bit
    manifest = json.loads((tmp_path / "three" / "manifest.json").read_text())
    assert manifest["runs"][-1]["side_by_side"] == 3


def test_a_failing_chunk_stops_the_others_and_the_run_resumes(tmp_path):
    sweep = parse_spec(TEXT)
    out = tmp_path / "r"

    def fail_on_T8(pop, cfg, **kw):
        if pop.data.dataset_size == 8:
            raise RuntimeError("planted failure")
        return sp.train(pop, cfg, **kw)

    with pytest.raises(RuntimeError, match="planted failure"):
        run_sweep(sweep, out, backend="torch", quiet=True, side_by_side_count=2, train_fn=fail_on_T8)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"][-1]["status"] == "failed" and "planted failure" in manifest["runs"][-1]["error"]
    summary = run_sweep(sweep, out, backend="torch", quiet=True, side_by_side_count=2)
    assert summary["complete"]
    run_sweep(sweep, tmp_path / "ref", backend="torch", quiet=True)
    (t, w), (t_ref, w_ref) = _results(out), _results(tmp_path / "ref")
    assert list(t["final_loss"]) == list(t_ref["final_loss"]) and torch.equal(w[0], w_ref[0])


def test_auto_count_fills_the_gpu_only_with_small_chunks():
    # 19 chunks of 3 programs (double descent, small T): 8 at once, the most threads
    assert side_by_side.auto_count([(3, 10**6)] * 19, sms=132, free_bytes=10**11) == side_by_side.MAX_SIDE_BY_SIDE
    # chunks that fill the GPU alone (phase: 25,600 programs; uniform's 1,024): one at a time
    assert side_by_side.auto_count([(25_600, 10**6)] * 3, sms=132, free_bytes=10**11) == 1
    assert side_by_side.auto_count([(1_024, 10**6)] * 3, sms=132, free_bytes=10**11) == 1
    # 88 programs: two at once fill 132 SMs about twice (2 * 132 // 88 = 3, at most the 3 chunks)
    assert side_by_side.auto_count([(88, 10**6)] * 5, sms=132, free_bytes=10**11) == 3
    # memory: the largest chunk 30 GB of 100 GB free -> 1 (half the free memory holds one)
    assert side_by_side.auto_count([(3, 3 * 10**10)] * 19, sms=132, free_bytes=10**11) == 1
    assert side_by_side.auto_count([(3, 10**6)], sms=132, free_bytes=10**11) == 1


def test_programs_per_launch_counts_the_split_grid():
    from superpos.kernels.configs import choose_config
    from superpos.triton_backend import family_config

    sweep = load_spec(ROOT / "experiments" / "double_descent.toml")
    for grp in sweep.groups:
        T = grp.data.dataset_size
        kcfg = choose_config(grp.spec.n_features, grp.spec.n_hidden, grp.cfg.batch_size,
                             **family_config(grp.spec, grp.data))
        assert kcfg.kind == "tiled"
        # 3 models split (far below 8 per SM): a program per (model, slice of the T samples)
        assert side_by_side.programs_per_launch(grp, 3, 132) == 3 * -(-min(T, grp.cfg.batch_size) // kcfg.slice_size)


def test_programs_per_launch_uses_the_gpus_blocks():
    """On Hopper (Triton 3.6) the plain n=400, m=30 model takes BG 32 (TILED_SM90_PLAIN): a slice of 128
    samples, so half the programs of the generic 64-sample slice."""
    from superpos.kernels.configs import choose_config

    grp = load_spec(ROOT / "experiments" / "uniform.toml").groups[0]
    B = grp.cfg.batch_size
    for capability in (None, (8, 0), (9, 0)):
        slice_size = choose_config(400, 30, B, plain=True, capability=capability).slice_size
        assert side_by_side.programs_per_launch(grp, 4, 132, capability) == 4 * -(-B // slice_size)
    import triton
    from superpos.kernels.configs import TILED_SM90_PLAIN_TRITON
    hopper_blocks = triton.__version__.startswith(TILED_SM90_PLAIN_TRITON)  # else this Triton keeps BG 16
    assert (side_by_side.programs_per_launch(grp, 4, 132, (9, 0)) * (2 if hopper_blocks else 1)
            == side_by_side.programs_per_launch(grp, 4, 132))


def test_count_is_one_on_the_cpu_unless_asked():
    sweep = parse_spec(TEXT)
    import numpy as np
    plan = np.array([[g, 2 * g, 2 * g + 2] for g in range(4)])
    cpu = torch.device("cpu")
    assert chunks_side_by_side(sweep, plan, [0, 1, 2, 3], "triton", cpu, None) == 1
    assert chunks_side_by_side(sweep, plan, [0, 1, 2, 3], "torch", cpu, 3) == 3
    assert chunks_side_by_side(sweep, plan, [0, 1], "torch", cpu, 8) == 2
    with pytest.raises(ValueError, match="side_by_side_count"):
        run_sweep(sweep, "unused-dir", backend="torch", side_by_side_count=0)
