"""The new keys are validated like the old ones: a ValueError naming the key and what is allowed, and
through the CLI one line, exit 2, nothing written. The triton backend refuses what it has no kernel for,
and "auto" says so in one line and uses the torch path."""
import importlib

import numpy as np
import pytest
import torch

import superpos as sp
from superpos.cli import main
from superpos.reference import train_torch

train_module = importlib.import_module("superpos.train")  # the module, not sp.train the function

SPEC = """
name = "opts"
[model]
n_features = 6
n_hidden = 2
[train]
steps = 20
batch_size = 16
[sweep]
feature_probability = [0.2, 0.1]
"""


def _with(model="", train="", sweep=""):
    return (SPEC.replace("[model]\n", "[model]\n" + model).replace("[train]\n", "[train]\n" + train)
            .replace("[sweep]\n", "[sweep]\n" + sweep))


BAD_SPECS = {
    "overlapping_sets": (_with(sweep="correlated_sets = [[0, 1]]\nanticorrelated_sets = [[1, 2]]\n"),
                         "sweep.anticorrelated_sets", "disjoint"),
    "overlap_within_kind": (_with(sweep="correlated_sets = [[0, 1], [2, 1]]\n"), "sweep.correlated_sets", "disjoint"),
    "out_of_range_set": (_with(sweep="correlated_sets = [[4, 6]]\n"), "sweep.correlated_sets", "out of range"),
    "negative_index": (_with(sweep="anticorrelated_sets = [[-1, 2]]\n"), "sweep.anticorrelated_sets", ">= 0"),
    "set_of_one": (_with(sweep="correlated_sets = [[3]]\n"), "sweep.correlated_sets", "at least 2"),
    "anticorrelated_sum_above_1": (_with(sweep="anticorrelated_sets = [[0, 1, 2, 3, 4, 5]]\n"),
                                   "sweep.anticorrelated_sets", "sum to <= 1"),
    "correlated_unequal_p": (_with(sweep="correlated_sets = [[0, 1]]\n").replace(
        "[0.2, 0.1]", "[[0.2, 0.1, 0.2, 0.2, 0.2, 0.2]]"), "sweep.correlated_sets", "share one"),
    "abs_on_unit_inputs": (_with(model='target = "abs"\n'), "model.target", "symmetric"),
    "abs_axis_on_unit_inputs": (_with(sweep='target = ["identity", "abs"]\n'), "sweep.target", "symmetric"),
    "unknown_hidden_activation": (_with(model='hidden_activation = "gelu"\n'), "model.hidden_activation", "none, relu"),
    "tied_not_bool": (_with(model="tied = 0\n"), "model.tied", "true or false"),
    "value_range": (_with(model='value_range = "signed"\n'), "model.value_range", "unit, symmetric"),
    "dataset_size_0": (_with(sweep="dataset_size = 0\n"), "sweep.dataset_size", ">= 1"),
    "dataset_size_axis": (_with(sweep="dataset_size = [10, -3]\n"), "sweep.dataset_size[1]", ">= 1"),
    "snapshot_step_at_steps": (_with(train="snapshot_steps = [0, 20]\n"), "train.snapshot_steps", "[0, 20)"),
    "snapshot_step_negative": (_with(train="snapshot_steps = [-1, 5]\n"), "train.snapshot_steps", "[0, 20)"),
    "snapshot_step_vs_swept_steps": (_with(train="snapshot_steps = [15]\n").replace("steps = 20\n", "")
                                     .replace("[sweep]\n", "[sweep]\nsteps = [30, 10]\n"), "train.snapshot_steps", "[0, 10)"),
    "snapshots_and_steps": (_with(train="snapshots = 3\nsnapshot_steps = [1]\n"), "train.snapshot", "not both"),
    "one_snapshot": (_with(train="snapshots = 1\n"), "train.snapshots", ">= 2"),
    "sets_in_model": (_with(model="correlated_sets = [[0, 1]]\n"), "model.correlated_sets", "unknown key"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_option_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    text, key, allowed = BAD_SPECS[case]
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--backend", "torch", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superpos: error: "), lines
    assert key in lines[0] and allowed in lines[0], lines[0]
    assert not out.exists()


def test_good_options_resolve_and_defaults_keep_the_old_spec():
    from superpos.sweep import parse_spec

    old = parse_spec(SPEC)
    explicit = parse_spec(_with(model='hidden_activation = "none"\ntied = true\n', train="snapshots = 0\n"))
    assert explicit.to_json() == old.to_json()  # spelled-out defaults are the same spec: old runs resume
    axes = parse_spec(_with(sweep="correlated_sets = [[[0, 1]], [[2, 3, 4]], []]\ndataset_size = [5, 500]\n"))
    assert axes.n_groups == 6
    assert [g.data.correlated_sets for g in axes.groups[::2]] == [((0, 1),), ((2, 3, 4),), ()]


@pytest.mark.parametrize("kwargs,field", [
    (dict(hidden_activation="tanh"), "hidden_activation"), (dict(tied="yes"), "tied"),
    (dict(target="square"), "target"), (dict(value_range="wide"), "value_range"),
    (dict(target="abs"), "target"),
])
def test_model_spec_options(kwargs, field):
    with pytest.raises(ValueError, match=field):
        sp.ModelSpec(5, 2, **kwargs)


@pytest.mark.parametrize("kwargs,p,field", [
    (dict(correlated_sets=[[0, 1], [1, 2]]), 0.1, "correlated_sets"),
    (dict(correlated_sets=[[0, 5]]), 0.1, "correlated_sets"),
    (dict(correlated_sets=[[0, 1]]), [[0.1, 0.2, 0.1, 0.1, 0.1]], "correlated_sets"),
    (dict(anticorrelated_sets=[[0, 1, 2]]), [[0.5, 0.3, 0.3, 0.1, 0.1]], "anticorrelated_sets"),
    (dict(anticorrelated_sets=[[2]]), 0.1, "anticorrelated_sets"),
    (dict(anticorrelated_sets=[[1, 1]]), 0.1, "anticorrelated_sets"),
    (dict(dataset_size=0), 0.1, "dataset_size"),
    (dict(dataset_size=2.5), 0.1, "dataset_size"),
])
def test_data_spec_and_population(kwargs, p, field):
    with pytest.raises(ValueError, match=field):
        sp.Population(sp.ModelSpec(5, 2), feature_probability=p, data=sp.DataSpec(**kwargs))


def test_untied_parameters_are_checked():
    with pytest.raises(ValueError, match="W_dec"):
        sp.Population(sp.ModelSpec(5, 2, tied=False), W=np.zeros((1, 2, 5)), b=np.zeros((1, 5)),
                      W_dec=np.zeros((1, 2, 5)), b_hidden=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="W_dec"):
        sp.Population(sp.ModelSpec(5, 2), W_dec=np.zeros((1, 5, 2)))


# Both kernels implement every option today (tests/test_kernel_variants.py); the refusal is kept for the
# next option one of them lacks, and checked here by withdrawing `tied` from the tiled kernel's declaration
# (triton_backend.KERNEL_SUPPORTS, the one place that says what each kernel has).
NO_KERNEL = [
    (sp.ModelSpec(200, 20, tied=False), sp.DataSpec(), "tied=False"),
    (sp.ModelSpec(200, 20, tied=False, hidden_activation="relu"), sp.DataSpec(correlated_sets=[[0, 1]]), "tied=False"),
]


@pytest.fixture
def tiled_without_untied(monkeypatch):
    from superpos import triton_backend
    monkeypatch.setitem(triton_backend.KERNEL_SUPPORTS, "tiled", triton_backend.KERNEL_SUPPORTS["tiled"] - {"tied"})


@pytest.mark.parametrize("spec,data,option", NO_KERNEL)
def test_triton_refuses_what_it_has_no_kernel_for(spec, data, option, tiled_without_untied):
    pop = sp.Population(spec, feature_probability=0.3, seed=[1], data=data)
    with pytest.raises(ValueError, match="no kernel for " + option.replace("[", r"\[").replace("]", r"\]")) as e:
        sp.train(pop, sp.TrainConfig(steps=2, batch_size=8), backend="triton")
    assert "\n" not in str(e.value) and "tiled kernel" in str(e.value)


def test_auto_says_once_and_uses_the_torch_path_on_the_same_device(monkeypatch, capsys, tiled_without_untied):
    # pretend "auto" picked triton (a CUDA machine); the run stays on the CPU device it was given
    monkeypatch.setattr(train_module, "resolve_backend", lambda b: "triton" if b == "auto" else b)
    monkeypatch.setattr(train_module, "_TOLD", set())
    pop = sp.Population(sp.ModelSpec(200, 20, tied=False), feature_probability=0.3, seed=[1, 2])
    cfg = sp.TrainConfig(steps=5, batch_size=8)
    first = sp.train(pop, cfg, backend="auto", device="cpu")
    second = sp.train(pop, cfg, backend="auto", device="cpu")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no triton kernel for tied=False" in lines[0] and "torch" in lines[0]
    ref = train_torch(pop, cfg)
    assert first.backend == "torch" and torch.equal(first.W, ref.W) and torch.equal(second.W, ref.W)
