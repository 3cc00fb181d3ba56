"""Both kernels' model families and data options against the reference (CPU: TRITON_INTERPRET=1).

Both of its paths: the tiny unrolled one (n <= 5: the Gram form for the tied model without a hidden
activation, the explicit per-sample form otherwise; feature sets known at compile time) and the block
one (n = 10 here), each with its own data generator (kernels.philox_data). Grids and step counts are
small: the interpreter is slow.
"""
import numpy as np
import pytest
import torch

import superpos as sp
from superpos import triton_backend
from superpos.reference import population_forward_backward, train_torch

from conftest import DEVICE, rel_err

pytest.importorskip("triton")
from superpos.kernels import philox_data  # noqa: E402
from superpos.kernels.buffers import Hyper, TrainState  # noqa: E402
from superpos.kernels.configs import choose_config  # noqa: E402
from superpos.kernels.train_small import tiny_sample_batch, train_small  # noqa: E402

FAMILIES = {  # name -> ModelSpec keywords
    "plain": {},
    "privileged": {"hidden_activation": "relu"},
    "untied": {"tied": False, "hidden_activation": "relu"},
    "untied-linear-hidden": {"tied": False},
    "abs": {"tied": False, "hidden_activation": "relu", "target": "abs", "value_range": "symmetric"},
    "tied-abs": {"target": "abs", "value_range": "symmetric"},
}
DATA = {  # name -> (DataSpec keywords, batch size): sets, both dataset regimes, a window that wraps mid-group
    "stream": ({}, 10),
    "sets": ({"correlated_sets": [[0, 1]], "anticorrelated_sets": [[2, 3]]}, 10),
    "whole-dataset": ({"dataset_size": 7}, 10),
    "dataset-window": ({"dataset_size": 13}, 10),
    "sets-dataset": ({"correlated_sets": [[1, 3]], "anticorrelated_sets": [[0, 2]], "dataset_size": 23}, 9),
}
TINY_N, BLOCK_N = 4, 10  # n=4, m=2: the tiny path for every family; n=10, m=5: the block path


def _pop(n, m, K, family="plain", data="stream", activation="relu", seed0=0):
    g = np.random.default_rng(n * 100 + m)
    p = g.uniform(0.1, 0.9, (K, n))
    d = DATA[data][0]
    for s in d.get("correlated_sets", []):
        p[:, s] = p[:, [s[0]]]  # members share one density
    for s in d.get("anticorrelated_sets", []):
        p[:, s] = g.uniform(0.1, 0.45, (K, len(s)))  # sum <= 1
    return sp.Population(sp.ModelSpec(n, m, activation, **FAMILIES[family]), feature_probability=p,
                         importance=g.uniform(0.1, 1.0, (K, n)), seed=list(range(seed0, seed0 + K)),
                         data=sp.DataSpec(**d))


def _path(pop, B):
    s = pop.spec
    return choose_config(s.n_features, s.n_hidden, B, **triton_backend.family_config(s, pop.data))


@pytest.mark.parametrize("data", list(DATA))
@pytest.mark.parametrize("n", [TINY_N, BLOCK_N])
def test_kernel_generators_equal_sample_batch(data, n):
    """Both in-register generators (the tiny path's, and the vectorised one of the block path and the
    tiled kernel) give sp.sample_batch's batch bit for bit, symmetric values included, at steps whose
    dataset windows start anywhere (not only on a group of four) and wrap."""
    for family in ("plain", "abs"):  # unit and symmetric values
        pop = _pop(n, 2, 3, family, data)
        B = DATA[data][1]
        tdata = triton_backend.make_data(pop, B, DEVICE)
        for step in (0, 1, 5, 2**31 + 7):
            want = sp.sample_batch(pop, step, B)
            out = torch.full(want.shape, float("nan"), device=DEVICE)
            assert torch.equal(philox_data.sample_batch_data(tdata, step, out=out).cpu(), want)
            if n <= 5:
                out = torch.full(want.shape, float("nan"), device=DEVICE)
                assert torch.equal(tiny_sample_batch(tdata, step, _path(pop, B), out=out).cpu(), want)
        assert (want != 0).any() and ((want < 0).any() == (family == "abs"))


def _assert_close_after_one_step(got, ref, grad64, lr):
    """As tests/test_kernels.py: relative error 1e-5 where the float64 gradient is far above AdamW's eps,
    0.05 lr where the batch sum cancels to a few eps (float32 rounding in any order moves it by percent)."""
    sure = grad64.abs() > 1e-6
    assert rel_err(got[sure], ref[sure]) < 1e-5
    assert (got[~sure] - ref[~sure]).abs().max().item() <= 0.05 * lr if (~sure).any() else True


def _check_against_reference(pop, B, steps=6):
    cfg = sp.TrainConfig(steps=1, batch_size=B, log_every=1)
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton")
    params = {k: v.double() for k, v in pop.params().items()}
    x = sp.sample_batch(pop, 0, B).double()
    _, *grads = population_forward_backward(pop.spec, params, x, pop.importance.double())
    got_p = {"W": got.W, "b": got.b, **got.extra}
    ref_p = {"W": ref.W, "b": ref.b, **ref.extra}
    assert set(got_p) == set(pop.params())
    for name, g in zip(params, grads):
        _assert_close_after_one_step(got_p[name], ref_p[name], g, cfg.lr)
    assert rel_err(got.loss_history, ref.loss_history) < 1e-6
    # several launches: rounding differences stay at float32 level
    cfg = sp.TrainConfig(steps=steps, batch_size=B, log_every=2, lr_schedule="cosine")
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton", max_steps_per_launch=4)
    for name in ref_p:
        a = got.W if name == "W" else got.b if name == "b" else got.extra[name]
        b = ref.W if name == "W" else ref.b if name == "b" else ref.extra[name]
        assert rel_err(a, b) < 1e-4, name
    assert rel_err(got.loss_history, ref.loss_history) < 1e-4
    assert got.status == ref.status == ["ok"] * len(pop)


@pytest.mark.parametrize("family,activation", [("privileged", "relu"), ("privileged", "linear"),
                                               ("untied", "relu"), ("untied-linear-hidden", "linear"),
                                               ("abs", "relu"), ("tied-abs", "linear")])
@pytest.mark.parametrize("n,m", [(TINY_N, 2), (BLOCK_N, 5)])
def test_family_matches_reference(family, activation, n, m):
    pop = _pop(n, m, 2, family, activation=activation)
    assert _path(pop, 10).tiny == (n <= 5)
    _check_against_reference(pop, 10)


@pytest.mark.parametrize("data", [d for d in DATA if d != "stream"])
@pytest.mark.parametrize("n,m", [(TINY_N, 2), (BLOCK_N, 5)])
def test_data_option_matches_reference(data, n, m):
    """Feature sets and finite datasets (loss and gradient normalised by the real batch size: the whole
    dataset when it is smaller than the batch), with the Gram form (tiny) and the block path."""
    pop = _pop(n, m, 2, "plain", data)
    _check_against_reference(pop, DATA[data][1])


def test_tiny_explicit_form_over_full_and_partial_tiles():
    """The explicit form over whole tiles (no sample mask) then a partial last tile, with every option."""
    pop = _pop(4, 2, 2, "abs", "sets")
    B = 4 * _path(pop, 150).BG + 22
    assert _path(pop, B).tiny
    _check_against_reference(pop, B, steps=3)


@pytest.mark.parametrize("n,m", [(TINY_N, 2), (BLOCK_N, 5)])
def test_alone_and_in_a_crowd_are_bit_identical(n, m):
    pop = _pop(n, m, 4, "abs", "sets-dataset")
    cfg = sp.TrainConfig(steps=3, batch_size=9, log_every=1)
    crowd = sp.train(pop, cfg, backend="triton")
    alone = sp.train(pop.select([2]), cfg, backend="triton")
    assert torch.equal(alone.W[0], crowd.W[2]) and torch.equal(alone.b[0], crowd.b[2])
    for k in ("W_dec", "b_hidden"):
        assert torch.equal(alone.extra[k][0], crowd.extra[k][2])
    assert torch.equal(alone.loss_history[0], crowd.loss_history[2])


@pytest.mark.parametrize("n,m", [(TINY_N, 2), (BLOCK_N, 5)])
def test_resume_with_snapshots_equals_an_uninterrupted_run(n, m):
    """Through the triton backend: stop after step 3, resume from the checkpoint, and get the bits of an
    uninterrupted run, the snapshots of W, b, W_dec and b_hidden included."""
    pop = _pop(n, m, 2, "untied", "dataset-window")
    cfg = sp.TrainConfig(steps=7, batch_size=10, log_every=2, snapshot_steps=[0, 2, 5, 6])
    whole = sp.train(pop, cfg, backend="triton", max_steps_per_launch=3)
    saved = {}
    sp.train(pop, cfg, backend="triton", max_steps_per_launch=3,
             checkpoint=lambda step, snap: saved.setdefault(step, snap()))
    assert 3 in saved and set(saved[3].params) == {"W", "b", "W_dec", "b_hidden"}
    resumed = sp.train(pop, cfg, backend="triton", max_steps_per_launch=3, resume=saved[3])
    assert torch.equal(resumed.W, whole.W) and torch.equal(resumed.b, whole.b)
    assert torch.equal(resumed.loss_history, whole.loss_history)
    for k in ("W_dec", "b_hidden"):
        assert torch.equal(resumed.extra[k], whole.extra[k])
    assert set(whole.snapshots) == {"steps", "W", "b", "W_dec", "b_hidden"}
    for k, v in whole.snapshots.items():
        assert torch.equal(resumed.snapshots[k], v) and not torch.isnan(v.float()).any(), k
    ref = train_torch(pop, cfg)
    assert rel_err(whole.snapshots["W_dec"], ref.snapshots["W_dec"]) < 1e-4


@pytest.mark.parametrize("n,m", [(TINY_N, 2), (BLOCK_N, 5)])
def test_every_output_is_written_untied(n, m):
    """Outputs start as NaN; after a launch every parameter, moment and logged loss was written."""
    K, B, steps = 3, 5, 3
    pop = _pop(n, m, K, "untied", "sets")
    cfg = sp.TrainConfig(steps=steps, batch_size=B, log_every=1)
    data = triton_backend.make_data(pop, B, DEVICE)
    params = {k: v.to(DEVICE) for k, v in pop.params().items()}
    zeros = {k: torch.zeros_like(v) for k, v in params.items()}
    state = TrainState.start(params, zeros, zeros)
    loss = torch.full((K, steps), float("nan"), device=DEVICE)
    hyper = Hyper(2.0 / (B * n), 1.0 / (B * n), 0.9, 0.999, 1e-8)
    train_small(state, data, cfg.adamw_constants().to(DEVICE), loss, 0, steps, steps, 1, hyper, _path(pop, B))
    outs = [state.W_out, state.b_out, state.Wd_out, state.bh_out, loss, state.mW, state.vW, state.mWd, state.vWd,
            state.mbh, state.vbh]
    for t in outs:
        assert not torch.isnan(t).any()


def test_both_kernels_cover_every_option():
    """One place declares what each kernel implements (triton_backend.KERNEL_SUPPORTS): the small kernel
    (tiny and block paths) and the tiled one (n=200, m=20) take every family and data option."""
    data = sp.DataSpec(correlated_sets=[[0, 1]], anticorrelated_sets=[[2, 3]], dataset_size=9)
    for n, m, kind in ((4, 2, "small"), (10, 5, "small"), (200, 20, "tiled")):
        for family in FAMILIES.values():
            spec = sp.ModelSpec(n, m, **family)
            assert triton_backend.kernel_kind(spec) == kind
            assert triton_backend.unsupported_option(spec, data) is None
    assert set(triton_backend.KERNEL_SUPPORTS["small"]) == set(triton_backend.KERNEL_SUPPORTS["tiled"]) == set(
        triton_backend.OPTIONS)


TILED_N, TILED_M = 40, 20  # the smallest kind of shape the tiled kernel takes (MP=32, NC=16: three chunks)


@pytest.mark.parametrize("family,data,activation", [
    ("tied-abs", "stream", "relu"), ("plain", "sets", "relu"), ("plain", "whole-dataset", "relu"),
    ("privileged", "dataset-window", "relu"), ("tied-abs", "sets-dataset", "relu"),
    ("untied", "stream", "relu"), ("untied-linear-hidden", "stream", "linear"), ("abs", "dataset-window", "relu")])
def test_tiled_kernel_families_and_data_options_match_reference(family, data, activation):
    """The tiled kernel's families (hidden ReLU, untied with b_hidden and W_dec, the |x| target) and data
    options (sets, symmetric values, finite datasets; through philox_data.batch_block_general) against the
    reference."""
    pop = _pop(TILED_N, TILED_M, 2, family, data, activation=activation)
    assert _path(pop, 10).kind == "tiled"
    _check_against_reference(pop, DATA[data][1], steps=3)


def _param(res, name):
    """A trained result's parameter by name (W, b, or one of the untied family's extras)."""
    return res.W if name == "W" else res.b if name == "b" else res.extra[name]


@pytest.mark.parametrize("family", ["tied-abs", "abs"])
def test_tiled_kernel_options_alone_crowd_and_modes_are_bit_identical(family):
    pop = _pop(TILED_N, TILED_M, 3, family, "sets-dataset")
    cfg = sp.TrainConfig(steps=2, batch_size=9, log_every=1)
    crowd = sp.train(pop, cfg, backend="triton", split=True)
    alone = sp.train(pop.select([1]), cfg, backend="triton", split=True)
    fused = sp.train(pop, cfg, backend="triton", split=False)
    assert set(crowd.extra) == set(pop.params()) - {"W", "b"}
    for name in pop.params():
        c, a, f = (_param(r, name) for r in (crowd, alone, fused))
        assert torch.equal(a[0], c[1]) and torch.equal(f, c), name
    assert torch.equal(fused.loss_history, crowd.loss_history)


@pytest.mark.parametrize("family", ["privileged", "untied", "abs"])
def test_tiled_tf32x3_with_gz_kept_trains_every_family(family):
    """gz kept beside x (Hopper's tf32x3 block; kernel_config gz_kept=True, which the GPU's tune step
    sets) for the families beyond the plain model: the hidden ReLU masks gh before the wide dW products,
    untied takes pWd = h^T gz and pW = gh^T x. The same sums as the generic tf32x3 kernel in another
    order: the first step's loss to the bit (pass 2 is shared), every parameter to float32 rounding, and
    both launch modes bit-identical; and the reference to 1e-4. B = 70: a whole and a partial 64-sample
    slice."""
    pop = _pop(TILED_N, TILED_M, 2, family, "stream")
    cfg = sp.TrainConfig(steps=3, batch_size=70, log_every=1)
    kept = sp.train(pop, cfg, backend="triton", input_precision="tf32x3", kernel_config={"gz_kept": True})
    fused = sp.train(pop, cfg, backend="triton", input_precision="tf32x3", kernel_config={"gz_kept": True},
                     split=False)
    generic = sp.train(pop, cfg, backend="triton", input_precision="tf32x3")
    assert torch.equal(kept.loss_history[:, 0], generic.loss_history[:, 0])
    for name in pop.params():
        k, f, g = (_param(r, name) for r in (kept, fused, generic))
        assert torch.equal(f, k), name
        assert rel_err(k, g) < 1e-6, name
    ref = train_torch(pop, cfg)
    for name in pop.params():
        assert rel_err(_param(kept, name), _param(ref, name)) < 1e-4, name
    assert kept.status == ["ok"] * 2


def test_gate_src_code_packs_the_tables():
    from superpos import rng
    tab = rng.data_tables(torch.full((1, 5), 0.2), [(1, 4)], [(0, 2, 3)])
    code = philox_data.gate_src_code(tab.gate, tab.src, [True, False, True, True, False])
    for i in range(5):
        byte = (code >> (8 * i)) & 255
        assert (byte & 7, (byte >> 3) & 7, (byte >> 6) & 1) == (int(tab.gate[i]), int(tab.src[i]), int(i in (0, 2, 3)))
