"""The fused Triton kernels against the reference trainer (CPU: TRITON_INTERPRET=1, set in conftest)."""
import numpy as np
import pytest
import torch

import superpos as sp
from superpos import triton_backend
from superpos.reference import forward_backward, train_torch

from conftest import DEVICE, HAS_CUDA, gpu, rel_err

pytest.importorskip("triton")
from superpos.kernels import philox_data  # noqa: E402
from superpos.kernels.buffers import Hyper, TrainState  # noqa: E402
from superpos.kernels.configs import choose_config  # noqa: E402
from superpos.kernels.train_small import train_small  # noqa: E402
from superpos.kernels.train_tiled import train_tiled  # noqa: E402


def _pop(n, m, K, activation="relu", seed0=0):
    g = np.random.default_rng(n * 1000 + m)
    return sp.Population(sp.ModelSpec(n, m, activation), feature_probability=g.uniform(0.05, 1.0, (K, n)),
                         importance=g.uniform(0.1, 1.0, (K, n)), seed=list(range(seed0, seed0 + K)))


@pytest.mark.parametrize("n,B", [(3, 10), (37, 9), (400, 6)])
def test_kernel_batch_equals_sample_batch(n, B):
    pop = _pop(n, 2, 3)
    data = triton_backend.make_data(pop, B, DEVICE)
    for step in (0, 5, 2**31 + 7):
        out = torch.full((3, B, n), float("nan"), device=DEVICE)
        philox_data.sample_batch(data.seed, data.thr, data.scale, step, B, out=out)
        assert torch.equal(out.cpu(), sp.sample_batch(pop, step, B))


def test_triton_philox_matches_tl_randint4x_and_rand():
    """Our key/counter layout through tl.philox equals tl.randint4x with offset c0 + (step << 32),
    and both equal the reference Philox; tl.rand's float is the documented map of the first word."""
    import triton
    import triton.language as tl

    @triton.jit
    def probe(seed, offset_hi, step, out_ptr, rand_ptr, N: tl.constexpr):
        o = tl.arange(0, N)
        c0 = o.to(tl.uint32) * 7919
        a0, a1, a2, a3 = philox_data.philox_words(seed, c0, step)
        offset = c0.to(tl.int64) + offset_hi
        b0, b1, b2, b3 = tl.randint4x(seed, offset)
        tl.store(out_ptr + o, (a0 == b0) & (a1 == b1) & (a2 == b2) & (a3 == b3))
        tl.store(out_ptr + N + o, a0.to(tl.int32, bitcast=True))
        tl.store(out_ptr + 2 * N + o, a3.to(tl.int32, bitcast=True))
        tl.store(rand_ptr + o, tl.rand(seed, offset))

    N, seed, step = 64, 2**40 + 99, 12345
    out = torch.zeros(3 * N, dtype=torch.int32, device=DEVICE)
    rand = torch.zeros(N, dtype=torch.float32, device=DEVICE)
    probe[(1,)](seed, step << 32, step, out, rand, N=N)
    out, rand = out.cpu().to(torch.int64), rand.cpu()
    assert out[:N].bool().all()
    from superpos import rng
    c0 = torch.arange(N) * 7919
    k0, k1 = rng.split_seed(torch.tensor([seed]))
    z = torch.zeros_like(c0)
    words = rng.philox4x32_torch(c0, z + step, z, z, k0, k1)
    assert torch.equal(out[N:2 * N] & 0xFFFFFFFF, words[0]) and torch.equal(out[2 * N:] & 0xFFFFFFFF, words[3])
    # tl.rand: int32 bits x -> (x < 0 ? -x - 1 : x) * 4.6566127342e-10 in float32
    x = torch.where(words[0] >= 2**31, words[0] - 2**32, words[0])
    x = torch.where(x < 0, -x - 1, x).to(torch.float32)
    assert torch.equal(rand, x * torch.tensor(4.6566127342e-10, dtype=torch.float32))


def test_wide_philox_equals_tl_philox():
    """philox_words_wide (64-bit products, one IMAD.WIDE each) returns tl.philox's four words, bit for bit,
    over counters and seeds that set the top bits (carries and the seed's high key word matter)."""
    import triton
    import triton.language as tl

    # a launch specializes an int argument equal to 1 into a constant (a Python int in the kernel): keep
    # step a runtime value here, as the training kernels' own step arguments are (seen on an H100)
    @triton.jit(do_not_specialize=["step"])
    def probe(seed_ptr, step, out_ptr, N: tl.constexpr):
        o = tl.arange(0, N)
        seed = tl.load(seed_ptr + tl.program_id(0))
        c0 = (o.to(tl.uint32) * 2654435761) ^ 0xF0000000
        a = philox_data.philox_words(seed, c0, step)
        b = philox_data.philox_words_wide(seed, c0, step)
        base = out_ptr + tl.program_id(0) * 8 * N
        for j in tl.static_range(4):
            tl.store(base + j * N + o, a[j].to(tl.int32, bitcast=True))
            tl.store(base + (4 + j) * N + o, b[j].to(tl.int32, bitcast=True))

    N = 64
    seeds = torch.tensor([0, 1, 2**32 - 1, 2**62 + 2**40 + 12345, 2**63 - 1], dtype=torch.int64, device=DEVICE)
    for step in (0, 1, 2**32 - 1):
        out = torch.zeros((len(seeds), 8, N), dtype=torch.int32, device=DEVICE)
        probe[(len(seeds),)](seeds, step, out, N=N)
        out = out.cpu()
        assert torch.equal(out[:, :4], out[:, 4:])
        assert out[:, :4].unique().numel() > 4 * N  # the probe really produced words


CASES = [(3, 2, "relu", "constant", 0.01), (5, 2, "linear", "cosine", 0.0), (37, 5, "relu", "cosine", 0.01),
         (400, 30, "relu", "constant", 0.0), (400, 30, "linear", "cosine", 0.01)]


def _assert_close_after_one_step(got, ref, grad64, lr):
    """One AdamW step moves a weight by ~ -lr g / (|g| + eps). Where the float64 gradient is far above
    eps the update is well conditioned: compare by relative error (1e-5; measured ~1e-7..3e-6). Where
    the batch sum cancels to |g| <~ 100 eps (e.g. 2e-9 for a rare feature at B=8), float32 rounding of
    the sum in any order changes g by percent and the update with it: compare those to 0.05 lr."""
    sure = grad64.abs() > 1e-6
    assert rel_err(got[sure], ref[sure]) < 1e-5
    assert (got[~sure] - ref[~sure]).abs().max().item() <= 0.05 * lr if (~sure).any() else True


@pytest.mark.parametrize("n,m,act,schedule,wd", CASES)
def test_kernel_matches_reference(n, m, act, schedule, wd):
    K, B = 2, 8
    pop = _pop(n, m, K, act)
    cfg = sp.TrainConfig(steps=1, batch_size=B, log_every=5, lr_schedule=schedule, weight_decay=wd)
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton")
    x = sp.sample_batch(pop, 0, B).double()
    _, dW, db = forward_backward(pop.W.double(), pop.b.double(), x, pop.importance.double(), act == "relu")
    _assert_close_after_one_step(got.W, ref.W, dW, cfg.lr)
    _assert_close_after_one_step(got.b, ref.b, db, cfg.lr)
    assert rel_err(got.loss_history, ref.loss_history) < 1e-6  # one forward pass: float32 sums, ~1e-7
    # Many steps, several launches: rounding differences stay at float32 level (measured < 1e-6).
    cfg = sp.TrainConfig(steps=50 if n < 400 else 12, batch_size=B, log_every=5, lr_schedule=schedule,
                         weight_decay=wd)
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton", max_steps_per_launch=7)
    for a, b in ((got.W, ref.W), (got.b, ref.b), (got.loss_history, ref.loss_history)):
        assert rel_err(a, b) < 1e-4
    assert got.status == ref.status == ["ok"] * K


@pytest.mark.parametrize("n,m,act,B", [(2, 1, "relu", 301), (2, 1, "linear", 685), (3, 2, "linear", 260),
                                        (5, 2, "relu", 130)])
def test_tiny_kernel_over_full_and_partial_tiles(n, m, act, B):
    """The unrolled tiny-model path: whole tiles (no sample mask) then a partial last tile (B not a multiple
    of the 4 BG samples of a tile, nor of the four Philox lanes), against the reference; the other kernel
    tests use batches smaller than one tile. n=2, B=685: a run of tile_unroll(2) = 4 whole tiles, one whole
    tile left over, then the partial one."""
    cfg_k = choose_config(n, m, B)
    assert cfg_k.tiny and B > 4 * cfg_k.BG and B % (4 * cfg_k.BG)
    pop = _pop(n, m, 2, act)
    cfg = sp.TrainConfig(steps=1, batch_size=B, log_every=1)
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton")
    x = sp.sample_batch(pop, 0, B).double()
    _, dW, db = forward_backward(pop.W.double(), pop.b.double(), x, pop.importance.double(), act == "relu")
    _assert_close_after_one_step(got.W, ref.W, dW, cfg.lr)
    _assert_close_after_one_step(got.b, ref.b, db, cfg.lr)
    assert rel_err(got.loss_history, ref.loss_history) < 1e-6
    cfg = sp.TrainConfig(steps=8, batch_size=B, log_every=3, lr_schedule="cosine")
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton", max_steps_per_launch=3)
    for a, b in ((got.W, ref.W), (got.b, ref.b), (got.loss_history, ref.loss_history)):
        assert rel_err(a, b) < 1e-4


@pytest.mark.parametrize("n,m", [(5, 2), (400, 30)])
def test_every_output_is_written(n, m):
    """Outputs start as NaN; after a launch no NaN is left: every element was written."""
    K, B, steps = 3, 5, 3
    pop = _pop(n, m, K)
    cfg = sp.TrainConfig(steps=steps, batch_size=B, log_every=1)
    data = triton_backend.make_data(pop, B, DEVICE)
    nan = lambda t: torch.full_like(t, float("nan"))
    W, b = pop.W.to(DEVICE), pop.b.to(DEVICE)
    state = TrainState(W, b, nan(W), nan(b), torch.zeros_like(W), torch.zeros_like(W),
                       torch.zeros_like(b), torch.zeros_like(b))
    loss = torch.full((K, steps), float("nan"), device=DEVICE)
    kcfg = choose_config(n, m, B)
    launch = train_small if kcfg.kind == "small" else train_tiled
    hyper = Hyper(2.0 / (B * n), 1.0 / (B * n), 0.9, 0.999, 1e-8)
    launch(state, data, cfg.adamw_constants().to(DEVICE), loss, 0, steps, steps, 1, hyper, kcfg)
    for t in (state.W_out, state.b_out, loss, state.mW, state.vW):
        assert not torch.isnan(t).any()


@pytest.mark.parametrize("n,m,B,prec", [(45, 20, 70, "ieee"), (40, 40, 33, "ieee"), (45, 20, 70, "tf32x3"),
                                        (40, 40, 33, "tf32x3")])
def test_tiled_kernel_over_several_batch_tiles(n, m, B, prec):
    """The tiled kernel with a batch of two tiles, the last one partial and not a multiple of the four
    Philox lanes, n not a multiple of the 16-feature chunk, and both row widths (MP=32 and MP=64); tf32x3
    has its own tiles (4 BG = 32 and 16 samples). (On the CPU its tf32 dots are emulated TF32 mmas:
    tests/conftest.py, superpos/tf32_emulation.py.)"""
    assert choose_config(n, m, B, prec).kind == "tiled"
    pop = _pop(n, m, 2)
    cfg = sp.TrainConfig(steps=1, batch_size=B, log_every=1)
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton", input_precision=prec)
    x = sp.sample_batch(pop, 0, B).double()
    _, dW, db = forward_backward(pop.W.double(), pop.b.double(), x, pop.importance.double(), True)
    _assert_close_after_one_step(got.W, ref.W, dW, cfg.lr)
    _assert_close_after_one_step(got.b, ref.b, db, cfg.lr)
    cfg = sp.TrainConfig(steps=6, batch_size=B, log_every=2, lr_schedule="cosine")
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton", max_steps_per_launch=4,
                                               input_precision=prec)
    for a, b in ((got.W, ref.W), (got.b, ref.b), (got.loss_history, ref.loss_history)):
        assert rel_err(a, b) < 1e-4


@pytest.mark.parametrize("n,m,B,act,prec", [(45, 20, 70, "relu", "ieee"), (40, 40, 33, "linear", "tf32x3")])
def test_tiled_kernel_privileged_basis(n, m, B, act, prec):
    """hidden_activation="relu" (h = ReLU(W x), x' = act(W^T h + b); the backward masks gh where W x <= 0)
    in the tiled kernel, against the reference's forward_backward(hidden_relu=True): the first step by its
    gradient, then a few steps by trajectory. Some hidden pre-activations are negative, so the mask acts."""
    base = _pop(n, m, 2, act)
    pop = sp.Population(sp.ModelSpec(n, m, act, hidden_activation="relu"), base.feature_probability.numpy(),
                        base.importance.numpy(), [int(s) for s in base.seed])
    assert choose_config(n, m, B, prec).kind == "tiled" and triton_backend.unsupported_by_kernels(pop) is None
    x = sp.sample_batch(pop, 0, B).double()
    pre = torch.bmm(x, pop.W.double().transpose(1, 2))
    assert (pre < 0).any() and (pre > 0).any()
    cfg = sp.TrainConfig(steps=1, batch_size=B, log_every=1)
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton", input_precision=prec)
    _, dW, db = forward_backward(pop.W.double(), pop.b.double(), x, pop.importance.double(), act == "relu",
                                 hidden_relu=True)
    _assert_close_after_one_step(got.W, ref.W, dW, cfg.lr)
    _assert_close_after_one_step(got.b, ref.b, db, cfg.lr)
    plain = train_torch(base, cfg)  # the mask changes the result: the test would see it missing
    assert rel_err(plain.W, ref.W) > 1e-5
    cfg = sp.TrainConfig(steps=5, batch_size=B, log_every=2)
    ref, got = train_torch(pop, cfg), sp.train(pop, cfg, backend="triton", max_steps_per_launch=3,
                                               input_precision=prec)
    for a, b in ((got.W, ref.W), (got.b, ref.b), (got.loss_history, ref.loss_history)):
        assert rel_err(a, b) < 1e-4


@pytest.mark.parametrize("n,m,B", [(45, 20, 300), (40, 40, 70)])
def test_tiled_split_and_fused_modes_are_bit_identical(n, m, B):
    """Split (a program per model and batch slice, two launches a step) and fused (a program per model,
    many steps per launch) add the same slice partials in the same order: equal bits, and the slices
    (128 samples) cover a batch that ends in a partial slice and a partial tile."""
    pop = _pop(n, m, 2)
    cfg = sp.TrainConfig(steps=3, batch_size=B, log_every=1, weight_decay=0.01)
    fused = sp.train(pop, cfg, backend="triton", split=False)
    split = sp.train(pop, cfg, backend="triton", split=True, max_steps_per_launch=2)
    for a, b in ((fused.W, split.W), (fused.b, split.b), (fused.loss_history, split.loss_history)):
        assert torch.equal(a, b)
    ref = train_torch(pop, cfg)
    assert rel_err(fused.W, ref.W) < 1e-4 and rel_err(fused.loss_history, ref.loss_history) < 1e-4


def test_launch_mode_choice():
    """Split below 8 models per SM (uniform's 64 models on 132 SMs), fused from there where the fused kernel
    compiles without spills (configs.TILED: MP=16); always split where it would spill (MP=32, 64 and
    tf32x3); the slice is one tile."""
    from superpos.kernels.configs import FUSED_MIN_WAVES, use_split
    cfg = choose_config(400, 16, 1024)
    assert cfg.kind == "tiled" and cfg.fused_ok and cfg.slice_size == 4 * cfg.BG
    assert use_split(cfg, 64, 132) and use_split(cfg, FUSED_MIN_WAVES * 132 - 1, 132)
    assert not use_split(cfg, FUSED_MIN_WAVES * 132, 132)
    for m, prec in ((30, "ieee"), (64, "ieee"), (16, "tf32x3")):
        assert use_split(choose_config(400, m, 1024, prec), 10**6, 132)


@pytest.mark.parametrize("n,m", [(5, 2), (45, 20)])
def test_fault_isolation_and_independence(n, m):
    """A diverging model leaves the others bit-identical; a model alone equals itself among others."""
    K = 6 if n < 40 else 3
    pop = _pop(n, m, K)
    imp = pop.importance.numpy().copy()
    imp[2] = 1e38
    bad = sp.Population(pop.spec, pop.feature_probability.numpy(), imp, [int(s) for s in pop.seed])
    cfg = sp.TrainConfig(steps=4 if n < 40 else 2, batch_size=8)
    good_res = sp.train(pop, cfg, backend="triton")
    bad_res = sp.train(bad, cfg, backend="triton")
    keep = [k for k in range(K) if k != 2]
    assert torch.equal(good_res.W[keep], bad_res.W[keep]) and torch.equal(good_res.b[keep], bad_res.b[keep])
    assert bad_res.status[2] == "diverged" and [bad_res.status[k] for k in keep] == ["ok"] * (K - 1)
    alone = sp.train(pop.select([K - 1]), cfg, backend="triton")
    assert torch.equal(alone.W[0], good_res.W[K - 1]) and torch.equal(alone.b[0], good_res.b[K - 1])
    if n >= 40:  # the tiled kernel in split mode isolates faults too
        split = sp.train(bad, cfg, backend="triton", split=True)
        assert torch.equal(split.W[keep], good_res.W[keep]) and split.status == bad_res.status


# tf32x3 is near-float32, not float32: on an H200 (2026-11-27) its first update missed the float32 bar
# (0.05 lr) where the batch sum cancels, at both sizes; bench/accuracy_trace.py measures by how much, and
# then this bar is set for it. That kernel chained each pass's tf32 products into one truncating
# accumulator; since 36bee5c each _dot starts a fresh one, and emulated (superpos/tf32_emulation.py, rz,
# n=400, K=8) the deviation fell from 0.073 lr (past the bar, as measured) to 0.004 lr: the mark stays
# until a GPU confirms. n=400 ieee failed there too: the kernels' AdamW computed 1 - beta2 in
# float32 (1.3e-5 short; the interpreter did it in float64), fixed since (bench README, "Second GPU session").
_TF32X3_BELOW_FP32 = pytest.mark.xfail(reason="tf32x3 is near-float32 (H200, 2026-11-27)", strict=False)


@gpu
@pytest.mark.parametrize("n,m,K,prec", [(2, 1, 4096, "ieee"), (5, 2, 2048, "ieee"), (20, 5, 1024, "ieee"),
                                        (400, 30, 64, "ieee"),
                                        pytest.param(400, 30, 64, "tf32x3", marks=_TF32X3_BELOW_FP32),
                                        pytest.param(200, 20, 200, "tf32x3", marks=_TF32X3_BELOW_FP32)])
def test_gpu_kernel_matches_reference_at_scale(n, m, K, prec):
    """ieee (FMA) is float32-accurate; tf32x3 (tensor cores) is held to the same bars, expected to miss
    them where sums cancel (marked above). On the CPU the emulated TF32 arithmetic predicts that today's
    tf32x3 passes (tests/test_tf32_emulation.py); only a GPU measures it.

    One step from the same state: the update agrees with the float64 gradient's to float32 rounding.
    Fifty steps: judged per model against a float64 oracle (the reference trainer in float64 on the same
    data). Two float32 paths part for good when a ReLU input z of an *active* feature sits within their
    rounding of 0 (the gradient jumps by coef I x there): on the CPU interpreter, n=400, m=30, B=256, one
    model of 4 jumped from 2.5e-7 to 1.2e-5 after step 18 on three such masks (|z| ~ 1e-6) while the
    kernel's gradients matched the float64 ones to 1e-7 at every step. (Compared norm-wise over all
    models with the float32 reference at 1e-4, an H100 run failed n=400 ieee at 1.2e-4 - one model
    parted like that weighs ~1e-3 / sqrt(64) - and tf32x3 at n=400 and n=200.) So: the typical (median)
    model within 3x the float32 reference's median distance, at most 10% of models parted (beyond 1e-3),
    and tf32x3 at least 5x closer than tf32 (what its three products buy)."""
    pop = _pop(n, m, K)
    cfg = sp.TrainConfig(steps=1, batch_size=1024, log_every=1)
    got = sp.train(pop, cfg, backend="triton", input_precision=prec)
    x = sp.sample_batch(pop, 0, cfg.batch_size, device="cuda").double()
    _, dW, db = forward_backward(pop.W.double().cuda(), pop.b.double().cuda(), x, pop.importance.double().cuda(),
                                 True)
    ref1 = sp.train(pop, cfg, backend="torch", device="cuda")
    _assert_close_after_one_step(got.W, ref1.W, dW.cpu(), cfg.lr)
    _assert_close_after_one_step(got.b, ref1.b, db.cpu(), cfg.lr)

    cfg = sp.TrainConfig(steps=50, batch_size=1024, log_every=10)
    oracle = train_torch(pop, cfg, device="cuda", dtype=torch.float64)
    flags = (f"torch tf32 flags: matmul {torch.backends.cuda.matmul.allow_tf32}, "
             f"{torch.get_float32_matmul_precision()}")

    def distances(res):  # per model, over W and b together
        a = torch.cat([res.W.flatten(1), res.b], 1).double()
        o = torch.cat([oracle.W.flatten(1), oracle.b], 1).cpu()
        return ((a - o).norm(dim=1) / o.norm(dim=1)).numpy()

    e_ref = distances(sp.train(pop, cfg, backend="torch", device="cuda"))
    got = sp.train(pop, cfg, backend="triton", input_precision=prec)
    e_got = distances(got)
    parted = np.flatnonzero(e_got > 1e-3)
    assert np.median(e_got) <= 3 * np.median(e_ref) + 1e-7, (
        f"median model: triton {prec} {np.median(e_got):.3g} from the float64 oracle, the float32 reference "
        f"{np.median(e_ref):.3g}; {flags}")
    assert len(parted) <= 0.1 * K, f"{len(parted)} of {K} models parted: {e_got[parted][:10]}"
    assert rel_err(got.loss_history, oracle.loss_history) < 1e-3
    if prec == "tf32x3":
        e_tf32 = distances(sp.train(pop, cfg, backend="triton", input_precision="tf32"))
        assert np.median(e_got) * 5 <= np.median(e_tf32), (np.median(e_got), np.median(e_tf32))


@gpu
@pytest.mark.parametrize("prec", ["ieee", "tf32"])
def test_gpu_split_and_fused_modes_are_bit_identical(prec):
    """On the GPU the two modes are different compiled kernels sharing _slice_grads/_update: same bits."""
    pop = _pop(400, 30, 64)
    cfg = sp.TrainConfig(steps=20, batch_size=1024, log_every=5)
    fused = sp.train(pop, cfg, backend="triton", split=False, input_precision=prec)
    split = sp.train(pop, cfg, backend="triton", split=True, input_precision=prec)
    assert torch.equal(fused.W, split.W) and torch.equal(fused.loss_history, split.loss_history)


@pytest.mark.skipif(HAS_CUDA, reason="CPU-only behaviour")
def test_auto_backend_falls_back_to_torch_without_cuda():
    assert sp.resolve_backend("auto") == "torch"


@gpu
@pytest.mark.parametrize("n,m", [(2, 1), (5, 2), (400, 30)])
def test_gpu_every_launched_specialization_runs(n, m):
    """Steps 0, 1 and 2 as separate launches (an int equal to 1 is what the JIT would specialize) give the
    same bits as one three-step launch, in every launch mode."""
    pop = _pop(n, m, 8)
    cfg = sp.TrainConfig(steps=3, batch_size=1024, log_every=1)
    whole = sp.train(pop, cfg, backend="triton")
    modes = [{}] if n < 40 else [{"split": True}, {"split": False}]
    for mode in modes:
        stepwise = sp.train(pop, cfg, backend="triton", max_steps_per_launch=1, **mode)
        assert torch.equal(stepwise.W, whole.W) and torch.equal(stepwise.loss_history, whole.loss_history)


def test_launcher_refuses_gpus_it_cannot_build_for():
    """One line naming the capability instead of a compile error deep inside Triton."""
    from superpos.triton_backend import unsupported_reason
    assert "7.5 or newer" in unsupported_reason((7, 0)) and "sm_70" in unsupported_reason((7, 0))
    assert "'tf32'" in unsupported_reason((7, 5), "tf32") and unsupported_reason((7, 5), "ieee") == ""
    assert unsupported_reason((8, 0), "tf32") == unsupported_reason((9, 0), "tf32") == ""
    assert "'tf32x3'" in unsupported_reason((7, 5), "tf32x3") and unsupported_reason((8, 6), "tf32x3") == ""
