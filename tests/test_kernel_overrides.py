"""Hand-set kernel blocks (`kernel_config`, for measuring other settings on a GPU: bench/tune_gpu.py)
still train the same models: against the reference, under the interpreter on the CPU."""
import numpy as np
import pytest
import torch

import superpos as sp
from superpos.reference import train_torch

from conftest import assert_first_step_like_reference, rel_err

pytest.importorskip("triton")
from superpos.kernels.configs import TUNABLE, choose_config, with_overrides  # noqa: E402


def _pop(n, m, K):
    g = np.random.default_rng(7 * n + m)
    return sp.Population(sp.ModelSpec(n, m, "relu"), feature_probability=g.uniform(0.1, 1.0, (K, n)),
                         importance=g.uniform(0.2, 1.0, (K, n)), seed=list(range(K)))


def test_overrides_replace_only_the_named_fields():
    tiny = choose_config(2, 1, 1024)
    got = with_overrides(tiny, {"BG": 64, "num_warps": 2, "max_registers": 128})
    assert (got.BG, got.num_warps, got.max_registers) == (64, 2, 128)
    assert (got.kind, got.MP, got.NP, got.tiny) == (tiny.kind, tiny.MP, tiny.NP, tiny.tiny)
    tiled = choose_config(400, 30, 1024)
    assert with_overrides(tiled, {"BG": 8}).slice_size == 32  # a slice is one tile of 4 BG samples
    assert with_overrides(tiled, None) is tiled and with_overrides(tiled, {}) is tiled


@pytest.mark.parametrize("bad, message", [({"MP": 8}, "kernel_config keys must be among"),
                                          ({"BG": 48}, "kernel_config BG must be a positive int (a power of 2)"),
                                          ({"num_warps": 0}, "kernel_config num_warps must be"),
                                          ({"max_registers": "many"}, "kernel_config max_registers must be"),
                                          ({"BG": True}, "kernel_config BG must be a positive int"),
                                          ({"fp_fusion": 1}, "kernel_config fp_fusion must be True or False"),
                                          ({"tile_unroll": 0}, "kernel_config tile_unroll must be a positive int"),
                                          ({"gz_kept": 0}, "kernel_config gz_kept must be True or False"),
                                          ({"x_kept": "no"}, "kernel_config x_kept must be True or False"),
                                          ({"x_kept": False}, "x_kept applies to the tiled kernel only")])
def test_bad_overrides_are_refused_in_one_line(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with_overrides(choose_config(2, 1, 1024), bad)
    with pytest.raises(ValueError, match="tile_unroll applies to the small kernel's tiny path only"):
        with_overrides(choose_config(400, 30, 1024), {"tile_unroll": 2})  # a tiled shape: no tile loop to unroll
    with pytest.raises(ValueError, match="gz_kept=True applies to the tiled kernel at tf32x3 only"):
        with_overrides(choose_config(400, 30, 1024, "ieee", plain=True, capability=(9, 0)), {"gz_kept": True})
    with pytest.raises(ValueError, match="x_kept=False needs gz_kept=False"):
        with_overrides(choose_config(400, 30, 1024, "tf32x3", plain=True), {"gz_kept": True, "x_kept": False})
    assert set(TUNABLE) == {"BG", "num_warps", "max_registers", "num_stages", "fp_fusion", "tile_unroll", "gz_kept",
                            "x_kept"}


def test_gz_kept_switches_hoppers_wide_dw_products():
    """gz_kept (for the GPU's tune step: the live scratch it doubles) turns Hopper's wide dW products off,
    which leaves the generic tf32x3 kernel's blocks, and back on; elsewhere it is off by default."""
    import triton

    from superpos.kernels.configs import TILED_SM90_GZ_KEPT_TRITON
    hopper = choose_config(400, 30, 1024, "tf32x3", plain=True, capability=(9, 0))
    assert hopper.gz_kept == triton.__version__.startswith(TILED_SM90_GZ_KEPT_TRITON)  # the checked versions
    assert with_overrides(hopper, {"gz_kept": True}).gz_kept
    off = with_overrides(hopper, {"gz_kept": False})
    assert not off.gz_kept and (off.BG, off.num_warps, off.max_registers) == (hopper.BG, hopper.num_warps,
                                                                             hopper.max_registers)
    generic = choose_config(400, 30, 1024, "tf32x3", plain=True)
    assert not generic.gz_kept and with_overrides(generic, {"gz_kept": True}).gz_kept


@pytest.mark.parametrize("unroll", [1, 2, 3])
def test_tile_unroll_changes_no_bit(unroll):
    """The tiny path's tiles per loop trip (default 4 for phase's plain model) is code layout only: the
    slots sum their tiles in the same order, so parameters and losses are bit-identical.
    B = 685: runs of whole tiles, whole tiles left over and the masked last tile all occur."""
    K = 3
    pop = _pop(2, 1, K)
    cfg = sp.TrainConfig(steps=4, batch_size=685, log_every=2)
    assert choose_config(2, 1, 685).tiny
    base = sp.train(pop, cfg, backend="triton")
    got = sp.train(pop, cfg, backend="triton", kernel_config={"tile_unroll": unroll})
    for a, b in ((got.W, base.W), (got.b, base.b), (got.loss_history, base.loss_history)):
        assert torch.equal(a, b)
    assert rel_err(got.W, train_torch(pop, cfg).W) < 1e-4  # and it is training: near the reference


@pytest.mark.parametrize("prec", ["ieee", "tf32x3"])
def test_x_drawn_in_every_pass_changes_no_bit(prec):
    """x_kept=False draws x again in passes 2 and 3 instead of reading pass 1's scratch tile back: the same
    values, so the same bits, in both launch modes. n = 45 (a masked last feature chunk), B = 70 (several
    slices, the last one partial)."""
    K = 2
    pop = _pop(45, 20, K)
    cfg = sp.TrainConfig(steps=2, batch_size=70, log_every=1)
    assert not with_overrides(choose_config(45, 20, 70, prec), {"x_kept": False}).x_kept
    for split in (True, False):
        base = sp.train(pop, cfg, backend="triton", input_precision=prec, split=split)
        got = sp.train(pop, cfg, backend="triton", input_precision=prec, split=split,
                       kernel_config={"x_kept": False})
        for a, b in ((got.W, base.W), (got.b, base.b), (got.loss_history, base.loss_history)):
            assert torch.equal(a, b)
    assert rel_err(base.W, train_torch(pop, cfg).W) < 1e-3  # and it is training: near the reference


@pytest.mark.parametrize("n,m,B,override", [
    (2, 1, 300, {"BG": 64, "num_warps": 2}),     # tiny path: 2 warps per model, a partial tile
    (3, 2, 260, {"BG": 64}),                      # tiny path: two sample groups per thread
    (45, 20, 70, {"BG": 8, "num_warps": 8}),      # tiled: a smaller tile, more warps, several slices
    (45, 20, 70, {"fp_fusion": False}),           # tiled without FMA contraction
])
def test_overridden_blocks_match_the_reference(n, m, B, override):
    K = 2
    pop = _pop(n, m, K)
    assert_first_step_like_reference(pop, B, kernel_config=override)
    cfg = sp.TrainConfig(steps=6, batch_size=B, log_every=2)
    got, ref = sp.train(pop, cfg, backend="triton", kernel_config=override), train_torch(pop, cfg)
    for a, b in ((got.W, ref.W), (got.b, ref.b), (got.loss_history, ref.loss_history)):
        assert rel_err(a, b) < 1e-4
    assert got.status == ["ok"] * K
    assert torch.isfinite(got.W).all()


CAPTURE = """
import sys, superpos as sp
from superpos.launch_capture import capture_launches
pop = sp.Population(sp.ModelSpec(40, 20, "relu"), feature_probability=0.1, seed=[0, 1])
cfg = sp.TrainConfig(steps=2, batch_size=64)
for split in (False, True):
    for override in (None, {"max_registers": 200}):
        caps = [lc.kwargs.get("maxnreg") for lc in capture_launches(pop, cfg, split=split, kernel_config=override)
                if "grads" in lc.name or "train_tiled" in lc.name]
        print(split, override is not None, sorted(set(caps), key=str))
phase = sp.Population(sp.ModelSpec(2, 1, "relu"), feature_probability=0.1, seed=[0])
for override in (None, {"tile_unroll": 2}):
    print([lc.kwargs["UNROLL"] for lc in capture_launches(phase, cfg, kernel_config=override)])
"""


def test_register_cap_reaches_the_tiled_kernel_in_either_mode():
    """A kernel_config max_registers is the launch's maxnreg whichever mode runs (the fused kernel's
    default is 255, the split gradient kernel's the table's: none at MP=32 ieee). Launches are captured in
    a subprocess: the interpreter has no JIT launches to record."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", CAPTURE], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:4] == ["False False [255]", "False True [200]", "True False [None]",
                                          "True True [200]"]
    # and a tile_unroll reaches the tiny path's UNROLL (phase's default: 4 tiles per trip)
    assert out.stdout.split("\n")[4:6] == ["[4]", "[2]"]


def test_every_setting_the_gpu_tune_step_times_is_valid():
    """bench/tune_gpu.py's VARIANTS are refused nowhere (a GPU session's minutes are too few to lose one
    to a setting that fails in one line): each is a valid kernel_config for its workload's shape."""
    import importlib.util
    from pathlib import Path

    from superpos.bench.workloads import get_workload
    from superpos.triton_backend import family_config
    path = Path(__file__).resolve().parents[1] / "bench" / "tune_gpu.py"
    spec = importlib.util.spec_from_file_location("tune_gpu", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    assert tune.VARIANTS
    for (name, precision, _), variants in tune.VARIANTS.items():
        workload = get_workload(name)
        pop = workload.population(2)
        cfg = choose_config(workload.n, workload.m, workload.train_config().batch_size, precision,
                            **family_config(pop.spec, pop.data), capability=(9, 0))
        for variant in variants:
            with_overrides(cfg, variant)  # raises on a setting this shape refuses
