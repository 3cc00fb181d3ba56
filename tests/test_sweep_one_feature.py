"""The one-feature scaling form of feature_probability: {value, feature, factor} -> per-feature vectors."""
from pathlib import Path

import numpy as np
import pytest

from superpos.sweep import load_spec, parse_spec

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
BASE = """
name = "t"
[model]
n_features = 4
n_hidden = 2
[train]
steps = 20
batch_size = 16
[sweep]
"""


def test_one_feature_scaled_against_the_others():
    s = parse_spec(BASE + "feature_probability = { value = 0.05, feature = 2, factor = { logspace = [-1, 1, 5] } }\n"
                          "seeds = 2")
    factors = np.logspace(-1, 1, 5)
    expected = np.full((5, 4), 0.05)
    expected[:, 2] = 0.05 * factors
    assert s.n_models == 10
    np.testing.assert_allclose(s.feature_probability(np.arange(0, 10, 2)), expected, rtol=1e-15)
    rows = s.rows(0, 10)
    assert rows["feature_probability_list"][2] == list(expected[1])  # models 2, 3: the second factor
    # the same as writing the vectors out by hand
    by_hand = parse_spec(BASE + f"feature_probability = {expected.tolist()}\nseeds = 2")
    assert by_hand.to_json() == s.to_json()


def test_nonuniform_experiment_resolves_to_its_documented_grid():
    s = load_spec(EXPERIMENTS / "nonuniform.toml")
    p = s.feature_probability(np.arange(0, s.n_models, s.n_seeds))
    np.testing.assert_allclose(p[:, :4], 0.05)
    np.testing.assert_allclose(p[:, 4], 0.05 * np.logspace(-1.5, 1, 30), rtol=1e-12)
    assert load_spec(EXPERIMENTS / "nonuniform.toml", quick=True).n_points == 10


@pytest.mark.parametrize("form, message", [
    ("{ value = 0.05, feature = 4, factor = 2 }", r"sweep.feature_probability.feature: must be an integer in \[0, 4\)"),
    ("{ value = 0.05, feature = 1.5, factor = 2 }", "sweep.feature_probability.feature: must be an integer"),
    ("{ value = 0.05, feature = 0, factor = [1, 30] }",
     r"sweep.feature_probability.factor\[1\]: value \* factor = 1.5 is not a probability in \(0, 1\]"),
    ("{ value = 0.05, feature = 0, factor = [1, -2] }", r"sweep.feature_probability.factor\[1\]: must be > 0"),
    ("{ value = 0, feature = 0, factor = 1 }", r"sweep.feature_probability.value: must be in \(0, 1\]"),
    ("{ value = [0.1], feature = 0, factor = 1 }", "sweep.feature_probability.value: must be one number"),
    ("{ value = 0.05, feature = 0, factor = 1, scale = 2 }", "sweep.feature_probability.scale: unknown key"),
    ("{ value = 0.05, factor = 1 }", "sweep.feature_probability.feature: missing key"),
    ("{ value = 0.05, feature = 0, factor = { logspace = [0, 1] } }", "sweep.feature_probability.factor.logspace: must be"),
])
def test_bad_one_feature_forms_name_the_key(form, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(BASE + f"feature_probability = {form}")


def test_one_feature_form_needs_one_n_features():
    text = BASE.replace("n_features = 4\n", "") + "n_features = [3, 4]\nfeature_probability = { value = 0.1, feature = 0, factor = 2 }"
    with pytest.raises(ValueError, match=r"sweep.feature_probability.factor: needs a single n_features, got \[3, 4\]"):
        parse_spec(text)
