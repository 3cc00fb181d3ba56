"""Every model family of the reference trainer against an independent per-model loop (autograd on the
paper's formulas + torch.optim.AdamW, fed the same batches and init), and the families' init and contracts."""
import numpy as np
import pytest
import torch

import superpos as sp
from superpos.reference import train_torch

from conftest import rel_err

# (hidden_activation, tied, target, value_range, data): privileged basis, untied, the |x| circuit, plus the
# data options on the way (sets, a finite dataset) so that every batch shape reaches the trainer
FAMILIES = {
    "privileged": ("relu", True, "identity", "unit", sp.DataSpec(correlated_sets=[[0, 1]])),
    "untied": ("relu", False, "identity", "unit", sp.DataSpec(anticorrelated_sets=[[2, 3, 4]])),
    "untied_linear_hidden": ("none", False, "identity", "unit", sp.DataSpec(dataset_size=40)),
    "abs": ("relu", False, "abs", "symmetric", sp.DataSpec(correlated_sets=[[4, 5]], dataset_size=100)),
    "tied_abs": ("none", True, "abs", "symmetric", sp.DataSpec()),
}


def independent_loop(pop, cfg):
    """Each model alone: the family written out in plain torch, autograd, torch.optim.AdamW."""
    s = pop.spec
    lrs = cfg.lr_at()
    batches = [sp.sample_batch(pop, t, cfg.batch_size) for t in range(cfg.steps)]
    out = {k: [] for k in pop.params()}
    for k in range(len(pop)):
        params = {name: torch.nn.Parameter(v[k].clone()) for name, v in pop.params().items()}
        opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
        W, b = params["W"], params["b"]
        for t in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = float(lrs[t])
            x = batches[t][k]  # [B, n]
            pre = x @ W.T + (params["b_hidden"] if not s.tied else 0.0)
            h = torch.relu(pre) if s.hidden_activation == "relu" else pre
            y = h @ (W if s.tied else params["W_dec"].T) + b
            if s.activation == "relu":
                y = torch.relu(y)
            target = x.abs() if s.target == "abs" else x
            loss = (pop.importance[k] * (target - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for name, p in params.items():
            out[name].append(p.detach())
    return {name: torch.stack(v) for name, v in out.items()}


# the paper's three families with both output activations; the two extra combinations with ReLU only
CASES = [(f, a) for f in ("privileged", "untied", "abs") for a in ("relu", "linear")] + \
        [("untied_linear_hidden", "relu"), ("tied_abs", "relu")]


@pytest.mark.parametrize("family,activation", CASES)
def test_family_matches_independent_autograd_loop(family, activation, gen):
    hidden, tied, target, value_range, data = FAMILIES[family]
    n, m, K = 6, 3, 2
    spec = sp.ModelSpec(n, m, activation, hidden_activation=hidden, tied=tied, target=target, value_range=value_range)
    p = np.repeat(gen.uniform(0.1, 0.3, (K, 1)), n, axis=1)  # sets need shared densities, sums <= 1
    pop = sp.Population(spec, feature_probability=p, importance=gen.uniform(0.2, 1.5, (K, n)),
                        seed=[21, 22], data=data)
    if not tied:  # a non-zero hidden bias, so that its gradient path is exercised from step 0
        pop = pop.with_weights(pop.W, pop.b, pop.W_dec, torch.tensor(gen.uniform(-0.2, 0.2, (K, m)), dtype=torch.float32))
    cfg = sp.TrainConfig(steps=200, batch_size=64, lr=3e-3, weight_decay=0.01, lr_schedule="cosine")
    res = train_torch(pop, cfg)
    ref = independent_loop(pop, cfg)
    got = {"W": res.W, "b": res.b, **res.extra}
    assert sorted(got) == sorted(ref)
    # as in test_reference: 200 float32 AdamW steps in different summation orders agree to ~1e-6;
    # 1e-4 leaves room for Adam amplifying rounding where a gradient is near eps
    for name in ref:
        assert rel_err(got[name], ref[name]) < 1e-4, name
    assert not torch.equal(got["W"], pop.W)  # it trained
    assert res.status == ["ok"] * K


def test_untied_init_is_seeded_and_independent_of_the_tied_init():
    tied = sp.Population(sp.ModelSpec(40, 10), seed=[5, 6])
    untied = sp.Population(sp.ModelSpec(40, 10, tied=False, hidden_activation="relu"), seed=[5, 6])
    assert torch.equal(tied.W, untied.W)  # the encoder is the tied init
    assert untied.W_dec.shape == (2, 40, 10) and torch.count_nonzero(untied.b_hidden) == 0
    std = np.sqrt(2 / 50)
    dec = untied.W_dec.double()
    assert abs(dec.std() / std - 1) < 0.05
    # the decoder is not a copy or transpose of the encoder: near-zero correlation
    corr = np.corrcoef(dec.transpose(1, 2).flatten().numpy(), untied.W.double().flatten().numpy())[0, 1]
    assert abs(corr) < 4 / np.sqrt(dec.numel())
    alone = sp.Population(untied.spec, seed=[6])
    assert torch.equal(alone.W_dec[0], untied.W_dec[1])


def test_model_alone_equals_model_in_a_crowd_for_every_family():
    for hidden, tied, target, value_range, data in FAMILIES.values():
        spec = sp.ModelSpec(6, 2, hidden_activation=hidden, tied=tied, target=target, value_range=value_range)
        crowd = sp.Population(spec, feature_probability=0.2, seed=list(range(30, 38)), data=data)
        cfg = sp.TrainConfig(steps=20, batch_size=32)
        together = train_torch(crowd, cfg)
        alone = train_torch(crowd.select([5]), cfg)
        assert torch.equal(alone.W[0], together.W[5]) and torch.equal(alone.b[0], together.b[5])
        for name, v in alone.extra.items():
            assert torch.equal(v[0], together.extra[name][5])


def test_default_family_is_the_original_model():
    s = sp.ModelSpec(5, 2)
    assert (s.hidden_activation, s.tied, s.target, s.value_range) == ("none", True, "identity", "unit")
    pop = sp.Population(s, seed=[1])
    assert pop.W_dec is None and pop.b_hidden is None and list(pop.params()) == ["W", "b"]
    assert train_torch(pop, sp.TrainConfig(steps=3, batch_size=8)).extra == {}
