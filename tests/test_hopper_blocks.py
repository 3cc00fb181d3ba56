"""Hopper's own tiled blocks (kernels.configs.TILED_SM90_PLAIN: BG 32 at MP=32 ieee, measured faster on an
H200, spilling elsewhere; tf32x3 with gz kept in the scratch under a 168-register cap): chosen only for the plain model on sm_90 (and the Triton versions that compile
them without spills, TILED_SM90_PLAIN_TRITON), and the kernels they give train the
reference's models with every contract (launch modes and alone vs crowd bit-identical) - under the
interpreter, with the Hopper target set as compile_check and the cost model set it. Also Hopper's
32-feature chunks for a finite dataset (kernels.configs.TILED_DATASET_NC, the double descent's config)."""
import numpy as np
import pytest
import torch

import superpos as sp
from superpos.reference import train_torch

from conftest import assert_first_step_like_reference, rel_err

pytest.importorskip("triton")
import triton  # noqa: E402

from superpos.kernels.configs import (TILED_DATASET_NC, TILED_SM90_GZ_KEPT_TRITON, TILED_SM90_PLAIN,  # noqa: E402
                                      TILED_SM90_PLAIN_TRITON, choose_config, target_capability)
from superpos.triton_backend import family_config, launch_capability  # noqa: E402


def test_hopper_blocks_only_for_the_plain_model_on_sm90():
    plain = {"gram": True, "plain": True}
    generic = choose_config(400, 30, 1024, "ieee", **plain)
    hopper = choose_config(400, 30, 1024, "ieee", **plain, capability=(9, 0))
    x3, x3_hopper = (choose_config(400, 30, 1024, "tf32x3", **plain, capability=c) for c in (None, (9, 0)))
    assert not x3.gz_kept and x3.max_registers is None
    if triton.__version__.startswith(TILED_SM90_GZ_KEPT_TRITON):
        assert x3_hopper.gz_kept and x3_hopper.max_registers is None and x3_hopper.BG == x3.BG  # the same slices
        for kw in ({"gram": True, "plain": False}, {"gram": True, "finite_dataset": True}, {"gram": False, "untied": True}):
            assert not choose_config(400, 30, 1024, "tf32x3", **kw, capability=(9, 0)).gz_kept
    else:
        assert x3_hopper == x3
    if not triton.__version__.startswith(TILED_SM90_PLAIN_TRITON):  # this Triton spills them: generic blocks
        assert hopper == generic
        return
    assert (hopper.BG, hopper.num_warps) == TILED_SM90_PLAIN[32, "ieee"][:2] and hopper.BG == 2 * generic.BG
    assert hopper.slice_size == 4 * hopper.BG
    for cap in ((8, 0), (8, 9), (10, 0), None):  # elsewhere the generic blocks (BG 32 spills on sm_80)
        assert choose_config(400, 30, 1024, "ieee", **plain, capability=cap) == generic
    tf32 = choose_config(400, 30, 1024, "tf32", **plain)
    assert choose_config(400, 30, 1024, "tf32", **plain, capability=(9, 0)) == tf32  # tf32 has none
    # an option set (correlated sets spill 208-248 B at BG 32 on sm_90), a finite dataset, another family
    for kw in ({"gram": True, "plain": False}, {"gram": True, "finite_dataset": True},
               {"gram": False, "untied": True}):
        assert choose_config(400, 30, 1024, "ieee", **kw, capability=(9, 0)).BG < hopper.BG
    pop = sp.Population(sp.ModelSpec(400, 30), feature_probability=0.1, importance=1.0, seed=[0])
    assert family_config(pop.spec, pop.data)["plain"] and not family_config(pop.spec)["plain"]
    sets = sp.Population(sp.ModelSpec(400, 30), feature_probability=0.1, importance=1.0, seed=[0], data=sp.DataSpec(correlated_sets=[[0, 1]]))
    assert not family_config(sets.spec, sets.data)["plain"]


def _pop(n, m, K):
    g = np.random.default_rng(11 * n + m)
    return sp.Population(sp.ModelSpec(n, m, "relu"), feature_probability=g.uniform(0.1, 1.0, (K, n)),
                         importance=g.uniform(0.2, 1.0, (K, n)), seed=list(range(K)))


def test_hopper_blocks_train_the_reference_models_in_every_mode():
    n, m, K, B = 40, 20, 3, 300  # MP = 32: BG 32 (Triton 3.6), slices of 128 samples (the last one partial)
    pop = _pop(n, m, K)
    with target_capability((9, 0)):
        assert launch_capability(torch.device("cpu")) == (9, 0)
        assert_first_step_like_reference(pop, B, split=True)
        cfg = sp.TrainConfig(steps=4, batch_size=B, log_every=2)
        split = sp.train(pop, cfg, backend="triton", split=True)
        fused = sp.train(pop, cfg, backend="triton", split=False)
        alone = sp.train(pop.select([K - 1]), cfg, backend="triton", split=True)
    assert launch_capability(torch.device("cpu")) is None  # the target is set only inside the block
    assert torch.equal(split.W, fused.W) and torch.equal(split.loss_history, fused.loss_history)
    assert torch.equal(alone.W[0], split.W[K - 1]) and torch.equal(alone.b[0], split.b[K - 1])
    ref = train_torch(pop, cfg)
    assert rel_err(split.W, ref.W) < 1e-4 and rel_err(split.loss_history, ref.loss_history) < 1e-4
    generic = sp.train(pop, cfg, backend="triton", split=True)  # BG 16: another summation order
    assert rel_err(generic.W, split.W) < 1e-4


def test_hopper_takes_wide_chunks_for_a_finite_dataset():
    """The double descent's config on sm_90: 32-feature chunks, split mode only; elsewhere 16."""
    dd = {"gram": True, "finite_dataset": True}
    wide = choose_config(10_000, 2, 4096, "ieee", **dd, capability=(9, 0))
    assert (wide.kind, wide.MP, wide.NP, wide.fused_ok) == ("tiled", 16, TILED_DATASET_NC, False) and wide.NP > 16
    for cap in (None, (8, 0), (8, 9)):
        assert choose_config(10_000, 2, 4096, "ieee", **dd, capability=cap).NP == 16
    for prec in ("tf32", "tf32x3"):
        assert choose_config(10_000, 2, 4096, prec, **dd, capability=(9, 0)).NP == 16
    assert choose_config(10_000, 2, 4096, "ieee", gram=True, capability=(9, 0)).NP == 16  # no dataset
    assert choose_config(10_000, 2, 4096, "ieee", gram=False, untied=True, finite_dataset=True,
                         capability=(9, 0)).NP == 16
    assert choose_config(10_000, 20, 4096, "ieee", **dd, capability=(9, 0)).NP == 16  # MP = 32


def test_wide_chunks_train_the_reference_models():
    n, m, K, T = 150, 4, 3, 20  # MP = 16; chunks of 32 features, the last one partial
    g = np.random.default_rng(5)
    pop = sp.Population(sp.ModelSpec(n, m, "relu"), feature_probability=g.uniform(0.05, 0.3, (K, n)),
                        importance=g.uniform(0.2, 1.0, (K, n)), seed=list(range(K)),
                        data=sp.DataSpec(dataset_size=T))
    with target_capability((9, 0)):
        assert choose_config(n, m, 64, "ieee", **family_config(pop.spec, pop.data), capability=(9, 0)).NP == 32
        assert_first_step_like_reference(pop, 64)
        cfg = sp.TrainConfig(steps=4, batch_size=64, log_every=2)
        wide = sp.train(pop, cfg, backend="triton")
        alone = sp.train(pop.select([1]), cfg, backend="triton")
    assert torch.equal(alone.W[0], wide.W[1]) and torch.equal(alone.b[0], wide.b[1])
    ref = train_torch(pop, cfg)
    assert rel_err(wide.W, ref.W) < 1e-4 and rel_err(wide.loss_history, ref.loss_history) < 1e-4


@pytest.mark.parametrize("n,B", [(40, 300), (77, 200)])
def test_hopper_tf32x3_wide_dw_products(monkeypatch, n, B):
    """Hopper's tf32x3 block keeps gz beside x and takes both dW products after pass 2 over 64-feature
    chunks, transposed (GZ_KEPT, _wide_dw), from a scratch whose rows are padded to 64 features. The same
    sums as the generic kernel in another order: its first step's loss to the bit (pass 2 is shared), its
    weights to float32 rounding, the reference to 1e-4; and a model's bits are the same alone and in a
    crowd and in either launch mode. The Triton versions that get the block are widened to this one, so
    that both interpreters run the path; n = 40 and 77 pad 24 and 51 columns, B = 300 and 200 end in a
    partial slice."""
    import superpos.kernels.configs as configs
    monkeypatch.setattr(configs, "TILED_SM90_GZ_KEPT_TRITON", (triton.__version__,))
    m, K = 20, 3  # MP = 32, BG 16: slices of 64 samples
    pop = _pop(n, m, K)
    cfg = sp.TrainConfig(steps=3, batch_size=B, log_every=1)
    with target_capability((9, 0)):
        assert choose_config(n, m, B, "tf32x3", gram=True, plain=True, capability=(9, 0)).gz_kept
        kept = sp.train(pop, cfg, backend="triton", input_precision="tf32x3")
        alone = sp.train(pop.select([1]), cfg, backend="triton", input_precision="tf32x3")
        fused = sp.train(pop, cfg, backend="triton", input_precision="tf32x3", split=False)
    generic = sp.train(pop, cfg, backend="triton", input_precision="tf32x3")
    assert torch.equal(fused.W, kept.W) and torch.equal(fused.b, kept.b)  # any launch mode: the same bits
    assert torch.equal(kept.loss_history[:, 0], generic.loss_history[:, 0])
    assert rel_err(kept.W, generic.W) < 1e-6 and rel_err(kept.b, generic.b) < 1e-6
    assert torch.equal(alone.W[0], kept.W[1]) and torch.equal(alone.b[0], kept.b[1])
    assert rel_err(kept.W, train_torch(pop, cfg).W) < 1e-4
