"""Every bad value raises a ValueError that names the field."""
import math

import numpy as np
import pytest

import superpos as sp

SPEC = sp.ModelSpec(5, 2)


@pytest.mark.parametrize("kwargs,field", [
    (dict(n_features=0, n_hidden=2), "n_features"),
    (dict(n_features=5, n_hidden=0), "n_hidden"),
    (dict(n_features=5.5, n_hidden=2), "n_features"),
    (dict(n_features=5, n_hidden=2, activation="gelu"), "activation"),
])
def test_model_spec(kwargs, field):
    with pytest.raises(ValueError, match=field):
        sp.ModelSpec(**kwargs)


@pytest.mark.parametrize("kwargs,field", [
    (dict(feature_probability=0.0), "feature_probability"),
    (dict(feature_probability=1.5), "feature_probability"),
    (dict(feature_probability=-0.1), "feature_probability"),
    (dict(feature_probability=math.nan), "feature_probability"),
    (dict(feature_probability=np.ones((2, 4))), "feature_probability"),
    (dict(feature_probability="dense"), "feature_probability"),
    (dict(importance=-1.0), "importance"),
    (dict(importance=math.nan), "importance"),
    (dict(importance=math.inf), "importance"),
    (dict(importance=[1.0, 2.0]), "importance"),
    (dict(seed=1.5), "seed"),
    (dict(seed=[1, "a"]), "seed"),
    (dict(seed=-1), "seed"),
    (dict(seed=2**63), "seed"),
    (dict(seed=[1, 2], feature_probability=[0.1, 0.2, 0.3]), "disagree"),
    (dict(W=np.zeros((1, 3, 5))), "W"),
])
def test_population(kwargs, field):
    with pytest.raises(ValueError, match=field):
        sp.Population(SPEC, **kwargs)


def test_population_broadcasts_scalars():
    pop = sp.Population(SPEC, feature_probability=[0.1, 0.5, 1.0], importance=0.9 ** np.arange(5), seed=7)
    assert pop.W.shape == (3, 2, 5) and pop.b.shape == (3, 5)
    assert pop.seed.tolist() == [7, 8, 9]
    assert pop.feature_probability[1].tolist() == [0.5] * 5


@pytest.mark.parametrize("kwargs,field", [
    (dict(steps=0), "steps"), (dict(steps=2.5), "steps"), (dict(batch_size=0), "batch_size"),
    (dict(lr=-1e-3), "lr"), (dict(lr=math.nan), "lr"), (dict(betas=(0.9,)), "betas"),
    (dict(betas=(0.9, 1.0)), r"betas\[1\]"), (dict(eps=0.0), "eps"), (dict(weight_decay=-0.1), "weight_decay"),
    (dict(lr_schedule="step"), "lr_schedule"), (dict(warmup_steps=-1), "warmup_steps"),
    (dict(log_every=0), "log_every"),
])
def test_train_config(kwargs, field):
    with pytest.raises(ValueError, match=field):
        sp.TrainConfig(**kwargs)


def test_train_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        sp.train(sp.Population(SPEC), sp.TrainConfig(steps=1), backend="cuda")


def test_sample_batch_rejects_bad_step():
    with pytest.raises(ValueError, match="step"):
        sp.sample_batch(sp.Population(SPEC), step=-1, batch_size=4)
