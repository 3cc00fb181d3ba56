"""Sweep specs: parsing, validation (errors name the key), grid expansion, seeds, groups and chunk plans."""
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MILLION_SPEC

from superpos.sweep import load_spec, parse_spec, plan_chunks

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

BASE = """
name = "t"
[model]
n_features = 3
n_hidden = 2
[train]
steps = 20
batch_size = 16
"""


def spec(extra: str = "", base: str = BASE, **kw):
    return parse_spec(base + "\n" + extra, **kw)


def test_intro_like_spec_resolves_like_the_notebook():
    s = spec("""
[sweep]
feature_probability = { logspace = [0, -1, 10], base = 20 }
importance_decay = 0.9
""")
    assert s.n_models == 10 and s.n_groups == 1 and s.n_points == 10
    ids = np.arange(10)
    np.testing.assert_array_equal(s.feature_probability(ids)[:, 0], 20.0 ** -np.linspace(0, 1, 10))
    np.testing.assert_allclose(s.importance([0])[0], 0.9 ** np.arange(3))
    cfg = s.groups[0].cfg
    assert (cfg.steps, cfg.batch_size) == (20, 16)
    assert cfg.lr == 1e-3 and cfg.weight_decay == 0.01  # TrainConfig's own defaults, not copies
    pop = s.population(0, 10)
    assert pop.W.shape == (10, 2, 3) and pop.seed.tolist() == list(range(10))


def test_grid_order_groups_seeds_and_rows():
    s = spec("""
[sweep]
lr = [1e-3, 2e-3]
feature_probability = [1.0, 0.1]
relative_importance = [0.5, 1.0, 2.0]
seeds = 2
base_seed = 100
""")
    assert s.n_groups == 2 and s.points_per_group == 6 and s.n_models == 24 and s.n_points == 12
    assert [(g.start, g.stop, g.cfg.lr) for g in s.groups] == [(0, 12, 1e-3), (12, 24, 2e-3)]
    rows = s.rows(0, 24)
    np.testing.assert_array_equal(rows["model_id"], np.arange(24))
    np.testing.assert_array_equal(rows["seed"], 100 + np.arange(24))  # seed = base_seed + model_id
    np.testing.assert_array_equal(rows["point_id"], np.arange(24) // 2)
    np.testing.assert_array_equal(rows["seed_index"], np.tile([0, 1], 12))
    np.testing.assert_array_equal(rows["lr"], np.repeat([1e-3, 2e-3], 12))
    # within a group: feature_probability outer, relative importance inner, seed innermost
    np.testing.assert_array_equal(rows["feature_probability"][:12], np.repeat([1.0, 0.1], 6))
    np.testing.assert_array_equal(rows["relative_importance"][:12], np.tile(np.repeat([0.5, 1.0, 2.0], 2), 2))
    assert np.isnan(rows["importance_decay"][0]) and rows["importance_decay"][2] == 1.0  # r = 1: all ones
    np.testing.assert_array_equal(s.importance([5])[0], [1.0, 1.0, 2.0])
    pop = s.population(14, 18)
    assert pop.seed.tolist() == [114, 115, 116, 117]
    with pytest.raises(ValueError, match="inside group"):
        s.population(10, 14)


def test_explicit_seed_list_repeats_at_every_point():
    s = spec("[sweep]\nfeature_probability = [1.0, 0.5]\nseeds = [7, 3, 11]")
    np.testing.assert_array_equal(s.seeds_of(np.arange(6)), [7, 3, 11, 7, 3, 11])


def test_per_feature_vectors_and_swept_shapes():
    s = spec("""
[sweep]
feature_probability = [0.5, [0.1, 0.2, 0.3]]
importance = [[1, 1, 1], [3, 2, 1]]
activation = ["linear", "relu"]
""")
    assert s.n_groups == 2 and s.n_models == 8
    rows = s.rows(0, 8)
    assert rows["feature_probability"][0] == 0.5 and np.isnan(rows["feature_probability"][2])
    assert rows["feature_probability_list"][2] == [0.1, 0.2, 0.3]
    assert rows["importance_list"][1] == [3.0, 2.0, 1.0]
    assert list(rows["activation"]) == ["linear"] * 4 + ["relu"] * 4
    np.testing.assert_array_equal(s.population(2, 4).feature_probability.numpy(), [[0.1, 0.2, 0.3]] * 2)


def test_range_forms_and_swept_integers():
    s = spec("""
[sweep]
steps = { range = [10, 40, 10] }
batch_size = { logspace = [2, 4, 3], base = 2 }
weight_decay = { linspace = [0, 0.1, 3] }
feature_probability = { geomspace = [1, 0.01, 3] }
betas = [[0.9, 0.999], [0.8, 0.99]]
""", base='name = "t"\n[model]\nn_features = 3\nn_hidden = 2\n')
    assert s.resolved["sweep"]["steps"] == [10, 20, 30]
    assert s.resolved["sweep"]["batch_size"] == [4, 8, 16]
    np.testing.assert_allclose(s.resolved["sweep"]["feature_probability"], [1, 0.1, 0.01])
    assert s.n_groups == 3 * 3 * 3 * 2
    assert {g.cfg.betas for g in s.groups} == {(0.9, 0.999), (0.8, 0.99)}


def test_quick_table_replaces_keys_wherever_they_were():
    s_full = spec("""
[sweep]
feature_probability = [1.0, 0.1, 0.01]
seeds = 3
[quick]
train = { steps = 5 }
sweep = { steps = [2, 3], seeds = 1 }
""")
    s_quick = spec("""
[sweep]
feature_probability = [1.0, 0.1, 0.01]
seeds = 3
[quick]
train = { steps = 5 }
sweep = { steps = [2, 3], seeds = 1 }
""", quick=True)
    assert s_full.n_models == 9 and s_full.groups[0].cfg.steps == 20
    assert s_quick.n_models == 6 and [g.cfg.steps for g in s_quick.groups] == [2, 3]
    assert s_quick.resolved["quick"] is True and s_full.resolved["quick"] is False
    assert s_full.to_json() != s_quick.to_json()


def test_resolved_spec_is_canonical_and_round_trips():
    from superpos.sweep import Sweep

    a = spec("[sweep]\nfeature_probability = { logspace = [0, -1, 3] }")
    b = spec("[sweep]\nfeature_probability = [1.0, 0.31622776601683794, 0.1]")
    assert a.to_json() == b.to_json()
    c = Sweep(a.resolved)
    assert c.to_json() == a.to_json() and c.n_models == a.n_models


@pytest.mark.parametrize("extra, key", [
    ("[sweep]\nsparsity = [0.1]", "sweep.sparsity: unknown key"),
    ("[train]\nsteps = 5", "spec: invalid TOML"),  # a second [train] table
    ("[sweep]\nlog_every = \"10\"", "sweep.log_every: must be an integer"),
    ("[sweep]\nlr = [1e-3, -1.0]", "sweep.lr[1]: lr must be"),
    ("[sweep]\nactivation = \"gelu\"", "sweep.activation: activation must be one of"),
    ("[sweep]\nactivation = [\"relu\", 3]", "sweep.activation[1]: must be a string"),
    ("[sweep]\nfeature_probability = [0.5, 1.5]", "sweep.feature_probability[1]: must be in (0, 1]"),
    ("[sweep]\nfeature_probability = 0", "sweep.feature_probability: must be in (0, 1]"),
    ("[sweep]\nfeature_probability = { logspace = [0, 1, 3] }", "sweep.feature_probability"),
    ("[sweep]\nfeature_probability = [[0.5, 0.5]]", "sweep.feature_probability: a per-feature list needs n_features = 3"),
    ("[sweep]\nfeature_probability = { logspace = [0, -1, 3], bogus = 2 }", "sweep.feature_probability.bogus: unknown key"),
    ("[sweep]\nfeature_probability = { linspace = [0.1, 1] }", "sweep.feature_probability.linspace: must be"),
    ("[sweep]\nfeature_probability = \"dense\"", "sweep.feature_probability: must be a number"),
    ("[sweep]\nimportance = -1", "sweep.importance: must be >= 0"),
    ("[sweep]\nimportance = [1, 2]", "sweep.importance: a per-feature list needs n_features = 3"),
    ("[sweep]\nimportance_decay = 0.9\nrelative_importance = 2", "sweep.relative_importance: only one of"),
    ("[sweep]\nimportance_decay = 0", "sweep.importance_decay: must be > 0"),
    ("[sweep]\nrelative_importance = nan", "sweep.relative_importance: must be >= 0.0 and finite"),
    ("[sweep]\nseeds = 0", "sweep.seeds: must be >= 1"),
    ("[sweep]\nseeds = 1.5", "sweep.seeds: must be an integer count"),
    ("[sweep]\nseeds = [1, 1]", "sweep.seeds: explicit seeds must be distinct"),
    ("[sweep]\nbase_seed = -1", "sweep.base_seed: must be an integer in"),
    ("[sweep]\nwarmup_steps = { linspace = [1, 10, 5] }", "sweep.warmup_steps.linspace: gives non-integer values"),
    ("[sweep]\nlr = { range = [1, 3] }", "sweep.lr.range: only for integer keys"),
    ("[sweep]\nlr = []", "sweep.lr: must not be an empty list"),
    ("[sweep]\nbetas = [[0.9, 1.5]]", "sweep.betas: betas[1] must be in"),
    ("[sweep]\nlr_schedule = [\"constant\", \"exp\"]", "sweep.lr_schedule[1]: lr_schedule must be one of"),
    ("[quick]\ntrain = { steps = 0 }", "quick.train.steps: steps must be >= 1"),
    ("[quick]\nmodels = { n_features = 2 }", "quick.models: unknown key"),
])
def test_invalid_specs_name_the_key(extra, key):
    with pytest.raises(ValueError) as err:
        spec(extra)
    assert str(err.value).startswith(key), str(err.value)


@pytest.mark.parametrize("text, key", [
    ('name = "x"\n[model]\nn_hidden = 1', "model.n_features: required"),
    ('[model]\nn_features = 2\nn_hidden = 1', "name: required"),
    ('name = "x"\n[model]\nn_features = 2\nn_hidden = 1\nn_layers = 2', "model.n_layers: unknown key"),
    ('name = "x"\n[model]\nn_features = 2.5\nn_hidden = 1', "model.n_features: must be an integer"),
    ('name = "x"\n[model]\nn_features = 2\nn_hidden = 1\n[train]\nlr = "fast"', "train.lr: must be a number"),
    ('name = "x"\n[model]\nn_features = 2\nn_hidden = 1\n[train]\nsteps = -5', "train.steps: steps must be >= 1"),
    ('name = "x"\n[model]\nn_features = 2\nn_hidden = 1\n[train]\nbetas = [0.9]', "train.betas: must be a pair"),
    ('name = "x"\n[model]\nn_features = 2\nn_hidden = 1\n[train]\nlr = 1e-3\n[sweep]\nlr = [1e-3]', "sweep.lr: also set in"),
    ('name = "x"\n[model]\nn_features = 2\nn_hidden = 1\n[train]\nlearning_rate = 0.1', "train.learning_rate: unknown key"),
    ('bogus = 1\nname = "x"\n[model]\nn_features = 2\nn_hidden = 1', "bogus: unknown key"),
    ('description = 3\nname = "x"\n[model]\nn_features = 2\nn_hidden = 1', "description: must be a string"),
    ('name = "x"\nmodel = 3', "model: must be a table"),
    ('name = "x"\n[model\nn_features = 2', "spec: invalid TOML"),
])
def test_invalid_whole_specs(text, key):
    with pytest.raises(ValueError) as err:
        parse_spec(text)
    assert str(err.value).startswith(key), str(err.value)


def test_quick_flag_needs_a_quick_table():
    with pytest.raises(ValueError, match="quick"):
        spec("", quick=True)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="spec file not found"):
        load_spec(tmp_path / "nope.toml")


def test_plan_cuts_groups_into_even_contiguous_chunks():
    s = spec("[sweep]\nlr = [1e-3, 2e-3]\nfeature_probability = { logspace = [0, -2, 7] }")
    plan = plan_chunks(s, lambda g: 3)  # 7 models per group -> 3 chunks of 2, 2, 3
    assert plan.tolist() == [[0, 0, 2], [0, 2, 4], [0, 4, 7], [1, 7, 9], [1, 9, 11], [1, 11, 14]]


def test_every_experiment_spec_loads_in_both_forms():
    paths = sorted(EXPERIMENTS.glob("*.toml"))
    names = {p.stem for p in paths}
    assert {"intro", "basic_results", "phase_n2m1", "phase_n3m2", "uniform", "geometry"} <= names
    for p in paths:
        full, quick = load_spec(p), load_spec(p, quick=True)
        assert quick.n_models <= full.n_models and full.name == quick.name
        # quick work (model-steps x samples a step trains on x (n + m)) must stay a few minutes of this
        # CPU's time; a finite dataset of T < batch_size samples trains on T (data.batch_size)
        work = sum(g.n_models * g.cfg.steps * g.data.batch_size(g.cfg.batch_size) * (g.spec.n + g.spec.m)
                   for g in quick.groups)
        assert work <= 1e10, p.name


def test_intro_experiment_is_the_notebooks():
    s = load_spec(EXPERIMENTS / "intro.toml")
    g = s.groups[0]
    assert s.n_models == 10 and (g.spec.n, g.spec.m, g.spec.activation) == (5, 2, "relu")
    assert (g.cfg.steps, g.cfg.batch_size) == (10_000, 1024)
    ids = np.arange(10)
    np.testing.assert_array_equal(s.feature_probability(ids)[:, 0], 20.0 ** -np.linspace(0, 1, 10))
    np.testing.assert_allclose(s.importance(ids), np.tile(0.9 ** np.arange(5), (10, 1)))
    ph = load_spec(EXPERIMENTS / "phase_n2m1.toml")
    assert ph.n_seeds == 10 and ph.groups[0].spec.n == 2 and ph.groups[0].spec.m == 1


def test_million_model_grid_expands_and_schedules():
    """A 1,000,000-model n=2, m=1 grid expands and is planned into contiguous chunks (its time is
    printed with -s; speed is reported from measurements, not asserted here)."""
    text = MILLION_SPEC
    from superpos.driver import make_plan
    import torch

    t0 = time.perf_counter()
    s = parse_spec(text)
    plan = make_plan(s, "torch", torch.device("cpu"))
    elapsed = time.perf_counter() - t0
    assert s.n_models == 1_000_000
    assert plan[:, 1].tolist()[0] == 0 and plan[-1, 2] == 1_000_000
    assert (plan[1:, 1] == plan[:-1, 2]).all()
    print(f"1,000,000-model grid: parse + plan {elapsed:.3f} s, {len(plan)} chunks")
