"""Every figure renders a non-empty image from small real runs; plot_run draws what a run allows."""
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import superpos as sp  # noqa: E402
from superpos import analysis as A  # noqa: E402
from superpos import plots as P  # noqa: E402
from superpos import run_figures as R  # noqa: E402

STEPS, BATCH = 300, 256  # enough to move off the init; the figures, not the physics, are under test
DPI = 60  # small images keep the suite fast; content checks do not need resolution


@dataclass
class FakeRun:
    """What superpos.load_run returns, as far as plots rely on it; `missing` makes data unreadable."""

    name: str
    table: pd.DataFrame
    W: object
    b: object
    steps: np.ndarray
    losses: object
    missing: tuple = field(default=())

    def weights(self, model_ids):
        if "weights" in self.missing:
            raise FileNotFoundError("weights not stored")
        ids = list(model_ids)
        return self.W[ids], self.b[ids]

    def loss_history(self, model_ids):
        if "loss" in self.missing:
            raise FileNotFoundError("loss history not stored")
        return self.steps, self.losses[list(model_ids)]


def train_run(name, n, m, density, importance, relative_importance=np.nan, importance_decay=np.nan,
              point_id=None, seeds=None, activation="relu"):
    """Train one population for STEPS steps and wrap it as a run with the sweep table's columns."""
    density = np.asarray(density, dtype=float)
    seeds = list(range(len(density))) if seeds is None else list(seeds)
    pop = sp.Population(sp.ModelSpec(n, m, activation), feature_probability=density,
                        importance=importance, seed=seeds)
    cfg = sp.TrainConfig(steps=STEPS, batch_size=BATCH, log_every=50)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and steadier on a shared machine
    try:
        res = sp.train(pop, cfg, backend="torch")
    finally:
        torch.set_num_threads(threads)
    K = len(pop)
    table = pd.DataFrame({
        "model_id": np.arange(K), "point_id": np.arange(K) if point_id is None else point_id,
        "seed_index": 0, "seed": seeds, "n_features": n, "n_hidden": m, "activation": activation,
        "feature_probability": density, "relative_importance": relative_importance,
        "importance_decay": importance_decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
        "steps": cfg.steps, "batch_size": cfg.batch_size, "final_loss": res.final_loss.numpy(),
        "status": res.status, **A.summary_metrics(res.W)})
    return FakeRun(name, table, res.W, res.b, res.loss_steps, res.loss_history)


@pytest.fixture(scope="module")
def intro_run():
    return train_run("intro", 5, 2, 20.0 ** -np.linspace(0, 1, 4), 0.9 ** np.arange(5), importance_decay=0.9)


@pytest.fixture(scope="module")
def phase_run():
    """n=2, m=1 over a 3x3 grid of (density, relative importance), two seeds per point."""
    d, r, seed = np.meshgrid([1.0, 0.1, 0.01], [0.3, 1.0, 3.0], [0, 1], indexing="ij")
    d, r, seed = d.ravel(), r.ravel(), seed.ravel()
    point = np.unique(np.stack([d, r], 1), axis=0, return_inverse=True)[1].ravel()
    importance = np.stack([np.ones_like(r), r], axis=1)
    run = train_run("phase_n2m1", 2, 1, d, importance, relative_importance=r, point_id=point,
                    seeds=100 * point + seed)
    run.table["seed_index"] = seed
    return run


@pytest.fixture(scope="module")
def uniform_run():
    return train_run("uniform", 12, 4, np.repeat([1.0, 0.3, 0.1, 0.03], 2), 1.0)


def assert_image_has_content(path):
    """A rendered figure, not a blank canvas: many distinct colours and real contrast."""
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 20


def save(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=DPI)
    assert_image_has_content(path)
    return path


def test_plot_intro(intro_run, tmp_path):
    save(P.plot_intro(intro_run.W, intro_run.table["feature_probability"]), tmp_path, "intro")


def test_plot_phase_diagram(phase_run, tmp_path):
    t = phase_run.table
    phase = A.classify_phase(phase_run.W)
    fig = P.plot_phase_diagram(t["feature_probability"], t["relative_importance"], phase)
    assert len(fig.axes) == 2  # empirical beside theory
    save(fig, tmp_path, "phase")
    fig3 = P.plot_phase_diagram([1.0, 0.1], [0.5, 2.0], ["dedicated", "superposition"], 3, 2)
    assert len(fig3.axes) == 1  # no closed-form theory for n=3, m=2
    save(fig3, tmp_path, "phase3")


def test_plot_dims_and_feature_dimensionality(uniform_run, tmp_path):
    t = uniform_run.table
    save(P.plot_dims_per_feature(t["feature_probability"], t["dims_per_feature"]), tmp_path, "dstar")
    dims = A.feature_dimensionality(uniform_run.W)
    fig = P.plot_feature_dimensionality(t["feature_probability"], dims, t["dims_per_feature"])
    save(fig, tmp_path, "dims")


def test_plot_geometry_graphs(uniform_run, tmp_path):
    fig = P.plot_geometry_graphs(uniform_run.W[::2], labels=["a", "b", "c", "d"])
    assert len(fig.axes) == 4
    save(fig, tmp_path, "geometry")
    # hand-built structures too, so every structure colour is exercised
    pentagon = np.stack([np.cos(2 * np.pi * np.arange(5) / 5), np.sin(2 * np.pi * np.arange(5) / 5)])
    save(P.plot_geometry_graphs([pentagon, np.array([[1.0, -1.0, 0.0]])]), tmp_path, "geometry_hand")


def test_plot_loss_curves(intro_run, tmp_path):
    save(P.plot_loss_curves(intro_run.steps, intro_run.losses, labels=list("abcd")), tmp_path, "loss")
    rng = np.random.default_rng(0)
    many = np.abs(rng.normal(1, 0.1, (P.MAX_LOSS_CURVES + 5, len(intro_run.steps))))
    fig = P.plot_loss_curves(intro_run.steps, many, color_by=rng.uniform(0.01, 1, len(many)))
    assert len(fig.axes) == 2  # the density colourbar
    save(fig, tmp_path, "loss_many")


def figure_names(paths):
    return sorted(p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in paths)


@pytest.mark.parametrize("run_name, expected", [
    ("intro_run", ["feature_vectors", "intro", "loss_curves"]),
    ("phase_run", ["feature_vectors", "intro", "loss_curves", "phase_diagram"]),  # 9 points, best of 2 seeds
    ("uniform_run", ["dims_per_feature", "feature_dimensionality", "feature_vectors", "geometry_graphs", "intro",
                     "loss_curves"]),
])
def test_plot_run_draws_the_figures_the_run_allows(run_name, expected, request, tmp_path):
    run = request.getfixturevalue(run_name)
    written, skipped = R.plot_run(run, tmp_path, dpi=DPI)
    assert figure_names(written) == expected
    assert sorted(expected + [name for name, _ in skipped]) == sorted(name for name, _ in R.FIGURES)
    assert all(reason and not reason.startswith("could not draw") for _, reason in skipped), skipped
    for path in written:
        assert_image_has_content(path)


def test_plot_run_on_a_run_missing_data(uniform_run, tmp_path):
    """No weights stored: the table alone still gives D* and the losses still give their curves;
    the figures that need weights are skipped with the reason."""
    run = FakeRun("uniform", uniform_run.table.drop(columns=["relative_importance"]), uniform_run.W,
                  uniform_run.b, uniform_run.steps, uniform_run.losses, missing=("weights",))
    written, skipped = R.plot_run(run, tmp_path, fmt="svg", dpi=DPI)
    assert figure_names(written) == ["dims_per_feature", "loss_curves"]
    assert all(p.endswith(".svg") for p in written)
    reasons = dict(skipped)
    for name in ("intro", "feature_vectors", "feature_dimensionality", "geometry_graphs"):
        assert "weights not stored" in reasons[name]
    assert "phase diagrams are for (n, m) = (2, 1) or (3, 2)" in reasons["phase_diagram"]


def test_plot_run_with_several_shapes_and_a_diverged_model(intro_run, phase_run, tmp_path):
    """Two shapes in one run get suffixed file names; a diverged model (NaN weights) is left out."""
    W = [intro_run.W[k] for k in range(len(intro_run.W))] + [phase_run.W[k] for k in range(len(phase_run.W))]
    table = pd.concat([intro_run.table, phase_run.table.assign(model_id=phase_run.table.model_id + 4)],
                      ignore_index=True)
    table.loc[0, "status"] = "diverged"
    W[0] = W[0] * np.nan
    run = FakeRun("mixed", table, W=_Indexable(W), b=_Indexable([w[0] * 0 for w in W]), steps=intro_run.steps,
                  losses=np.concatenate([intro_run.losses.numpy(), phase_run.losses.numpy()]), missing=("loss",))
    written, skipped = R.plot_run(run, tmp_path, dpi=DPI)
    assert figure_names(written) == ["feature_vectors_n2_m1_relu", "feature_vectors_n5_m2_relu", "intro_n2_m1_relu",
                                     "intro_n5_m2_relu", "phase_diagram_n2_m1_relu"], skipped
    assert "loss history not stored" in dict(skipped)["loss_curves_n5_m2_relu"]


class _Indexable(list):
    """A list of per-model tensors that stacks when indexed by a list of ids (like run.weights)."""

    def __getitem__(self, ids):
        return torch.stack([list.__getitem__(self, i) for i in ids]) if isinstance(ids, list) else list.__getitem__(self, ids)


def test_plot_run_on_an_empty_run(tmp_path):
    """An interrupted run whose table has no finished chunk yet: nothing drawn, one reason given."""
    run = FakeRun("empty", pd.DataFrame({"model_id": pd.Series([], dtype="int64")}), None, None, None, None)
    written, skipped = R.plot_run(run, tmp_path)
    assert written == [] and len(skipped) == 1 and "no finished models" in skipped[0][1]


def test_plot_run_rejects_unknown_format(uniform_run, tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        R.plot_run(uniform_run, tmp_path, fmt="jpg")


# --- W's columns as vectors, readable subsets, --models -------------------------------------------
def test_plane_coordinates():
    a = 2 * np.pi * np.arange(5) / 5
    pentagon = np.stack([np.cos(a), np.sin(a)])
    coords, captured = P.plane_coordinates(pentagon)
    np.testing.assert_array_equal(coords, pentagon)
    assert captured == 1.0
    coords, _ = P.plane_coordinates(pentagon[:1])  # m = 1: the line drawn as the x-axis
    np.testing.assert_array_equal(coords, np.stack([pentagon[0], np.zeros(5)]))
    # a planar W inside m = 4: the projection keeps every dot product and all of ||W||_F^2
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    planar = q[:, :2] @ pentagon
    coords, captured = P.plane_coordinates(planar)
    np.testing.assert_allclose(coords.T @ coords, pentagon.T @ pentagon, atol=1e-12)
    assert captured == pytest.approx(1.0)
    # a generic W: the share is that of the two largest singular values
    W = np.random.default_rng(1).normal(size=(5, 9))
    s = np.linalg.svd(W, compute_uv=False)
    assert P.plane_coordinates(W)[1] == pytest.approx((s[:2] ** 2).sum() / (s**2).sum())


def test_plot_feature_vectors(intro_run, tmp_path):
    fig = P.plot_feature_vectors(intro_run.W, labels=list("abcd"), highlight=4)
    assert len([ax for ax in fig.axes if ax.axison]) == 4
    save(fig, tmp_path, "vectors")
    W = np.random.default_rng(0).normal(size=(13, 5, 20))  # m > 2, wraps after 10 panels
    fig = P.plot_feature_vectors(W)
    assert len(fig.axes) == 20 and all("in plane" in ax.get_title() for ax in fig.axes[:13])
    save(fig, tmp_path, "vectors_projected")


def test_intro_of_many_features_draws_the_first_forty_with_integer_ticks(tmp_path):
    W = np.random.default_rng(0).normal(size=(2, 6, 60))
    fig = P.plot_intro(W, [0.1, 0.01])
    assert fig.axes[0].get_images()[0].get_array().shape == (P.INTRO_MAX_FEATURES,) * 2
    assert "first 40 of 60" in fig.axes[2].get_ylabel()  # row-major: the bottom-left panel
    fig.canvas.draw()
    ticks = fig.axes[2].get_yticks()
    assert len(ticks) > 2 and np.all(ticks == np.round(ticks))
    save(fig, tmp_path, "intro_many")


def many_points_table(points=30, seeds=2):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"model_id": np.arange(points * seeds), "point_id": np.repeat(np.arange(points), seeds),
                         "seed_index": np.tile(np.arange(seeds), points), "status": "ok",
                         "feature_probability": np.repeat(np.geomspace(1, 0.01, points), seeds),
                         "final_loss": rng.uniform(size=points * seeds)})


def test_readable_subset_is_best_of_seeds_evenly_spread():
    table = many_points_table()
    rows, _, note = R._readable_subset(table)
    assert len(rows) == R.INTRO_MAX_MODELS and "12 of 30 points, best of seeds" in note
    best = table.loc[table.groupby("point_id")["final_loss"].idxmin()]
    assert set(rows["model_id"]) <= set(best["model_id"])
    assert rows["point_id"].iloc[0] == 0 and rows["point_id"].iloc[-1] == 29  # both ends of the sweep
    assert list(rows["feature_probability"]) == sorted(rows["feature_probability"], reverse=True)
    chosen, _, note = R._readable_subset(table, models=[5, 7, 40])
    assert list(chosen["model_id"]) == [5, 7, 40] and "models 5, 7, 40" in note
    with pytest.raises(R.SkipFigure, match="none of the chosen"):
        R._readable_subset(table, models=[1000])


def test_plot_run_with_chosen_models(phase_run, tmp_path):
    written, _ = R.plot_run(phase_run, tmp_path, dpi=DPI, models=[0, 3, 17])
    intro = [p for p in written if p.endswith("intro.png")]
    assert intro and mpimg.imread(intro[0]).shape[1] < mpimg.imread(  # 3 columns, not 9
        R.plot_run(phase_run, tmp_path / "all", dpi=DPI)[0][1]).shape[1]
    with pytest.raises(ValueError, match="models: model 99 is not in the run"):
        R.plot_run(phase_run, tmp_path / "bad", models=[0, 99])
    assert not (tmp_path / "bad").exists()  # nothing written


@pytest.mark.parametrize("text, ids", [("3", [3]), ("0,5,10-12", [0, 5, 10, 11, 12]), (" 1 , 2", [1, 2])])
def test_parse_model_ids(text, ids):
    assert R.parse_model_ids(text) == ids


@pytest.mark.parametrize("text", ["", "a", "3-1", "1,,2", "-1", "2-"])
def test_parse_model_ids_rejects(text):
    with pytest.raises(ValueError, match="--models"):
        R.parse_model_ids(text)


# --- the non-uniform deformation figure and the adversarial figure --------------------------------
@pytest.fixture(scope="module")
def nonuniform_run():
    """n=5, m=2 at density 0.05 with feature 4's density x factor (the nonuniform spec's form)."""
    factor = np.array([0.1, 1.0, 10.0])
    p = np.full((3, 5), 0.05)
    p[:, 4] *= factor
    run = train_run("nonuniform", 5, 2, p.mean(axis=1), 1.0)
    pop = sp.Population(sp.ModelSpec(5, 2), feature_probability=p, importance=1.0, seed=[0, 1, 2])
    res = sp.train(pop, sp.TrainConfig(steps=STEPS, batch_size=BATCH, log_every=50), backend="torch")
    run.W, run.b = res.W, res.b
    run.table["feature_probability"] = np.nan  # as the sweep stores a varying per-feature density
    run.table["feature_probability_list"] = [list(r) for r in p]
    return run


def test_one_feature_scaling_is_found_and_drawn_in_a_row(nonuniform_run, tmp_path):
    feature, base, factor = R._one_feature_scaling(nonuniform_run.table)
    assert (feature, base) == (4, 0.05)
    np.testing.assert_allclose(factor, [0.1, 1.0, 10.0])
    assert R._one_feature_scaling(nonuniform_run.table.assign(
        feature_probability_list=[[0.1] * 5, [0.2] * 5, [0.3] * 5])) is None  # every feature varies
    written, skipped = R.plot_run(nonuniform_run, tmp_path, dpi=DPI)
    assert "feature_vectors" in figure_names(written), skipped
    fig = R._fig_feature_vectors(nonuniform_run, nonuniform_run.table, "n=5, m=2")
    assert [ax.get_title() for ax in fig.axes] == ["×0.1", "×1", "×10"]
    assert "feature 4's density × factor (others 0.05)" in fig._suptitle.get_text()


@pytest.fixture(scope="module")
def adversarial_run():
    """Linear and ReLU models of one shape at three densities (the adversarial spec's layout)."""
    density = np.array([1.0, 0.3, 0.1])
    linear = train_run("adv", 8, 3, density, 0.9 ** np.arange(8), importance_decay=0.9, activation="linear")
    relu = train_run("adv", 8, 3, density, 0.9 ** np.arange(8), importance_decay=0.9, seeds=[10, 11, 12])
    table = pd.concat([linear.table, relu.table.assign(model_id=relu.table.model_id + 3, point_id=relu.table.point_id + 3)],
                      ignore_index=True)
    return FakeRun("adv", table, torch.cat([linear.W, relu.W]), torch.cat([linear.b, relu.b]), linear.steps,
                   np.concatenate([linear.losses.numpy(), relu.losses.numpy()]))


def test_adversarial_figure(adversarial_run, tmp_path):
    written, skipped = R.plot_run(adversarial_run, tmp_path, dpi=DPI)
    assert "adversarial_n8_m3_relu" in figure_names(written), skipped
    assert "ReLU models" in dict(skipped)["adversarial_n8_m3_linear"]
    fig = P.plot_adversarial([1.0, 0.1], {"L2 attack": [1.0, 1.6]}, [0, 5], [3, 8])
    assert len(fig.axes) == 2
    save(fig, tmp_path, "adversarial")
    alone = FakeRun("adv", adversarial_run.table[adversarial_run.table.activation == "relu"],
                    adversarial_run.W, adversarial_run.b, adversarial_run.steps, adversarial_run.losses)
    _, skipped = R.plot_run(alone, tmp_path / "alone", dpi=DPI)
    assert "needs linear models of the same shape" in dict(skipped)["adversarial"]


def test_dense_regime_note(uniform_run, tmp_path):
    t = uniform_run.table
    fig = P.plot_dims_per_feature(t["feature_probability"], t["dims_per_feature"])
    assert any(text.get_text() == P.DENSE_NOTE for text in fig.axes[0].texts)
    assert min(fig.axes[0].get_yticks()) >= 0  # no tick in the note's band
    sparse = P.plot_dims_per_feature([0.1, 0.01], [0.5, 0.4])
    assert not any(text.get_text() == P.DENSE_NOTE for text in sparse.axes[0].texts)


def test_density_axis_under_a_decade_reads_plain_numbers():
    # 1/(1-S) from 1 to 6 (a run stopped before its sparse end): ticks 1, 2, 3, 4, 6, not 2x10^0
    density = 1.0 / np.array([1.0, 2.0, 3.0, 6.0])
    for fig in (P.plot_dims_per_feature(density, [1.0, 0.5, 0.5, 0.3]),
                P.plot_feature_dimensionality(density, np.full((4, 5), 0.5))):
        fig.canvas.draw()
        ax = fig.axes[0]
        labels = {t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
                  if t.get_text() and 0.9 <= t.get_position()[0] <= 6.5}
        assert {"1", "2", "3", "4", "6"} <= labels, labels


def test_privileged_basis_figure_only_for_a_relu_hidden_layer(tmp_path):
    """A tied model with h = ReLU(W x) gets the per-neuron stacked bars; the plain tied model does not."""
    from superpos.plots import plot_privileged_neurons
    base = {"name": "priv", "model": {"n_features": 4, "n_hidden": 2}, "train": {"steps": 30, "batch_size": 32},
            "sweep": {"feature_probability": [1.0, 0.1], "importance_decay": 0.8}}
    privileged = dict(base, model={"n_features": 4, "n_hidden": 2, "hidden_activation": "relu"})
    run = sp.run_spec(privileged, tmp_path / "p", plot=False, quiet=True)
    written, skipped = R.plot_run(run, tmp_path / "p_plots")
    assert any(w.endswith("privileged_neurons.png") for w in written)
    plain = sp.run_spec(base, tmp_path / "t", plot=False, quiet=True)
    written, skipped = R.plot_run(plain, tmp_path / "t_plots")
    assert "privileged_neurons" in dict(skipped) and not any(w.endswith("privileged_neurons.png") for w in written)
    shares = np.zeros((2, 2, 4))
    shares[:, 0, 0] = shares[:, 1, 1] = 1.0
    fig = plot_privileged_neurons([1.0, 0.1], shares, [0, 0])
    assert len(fig.axes) == 3  # two models' bars and the polysemantic count


def test_feature_sets_figure_for_correlated_and_anticorrelated_runs(tmp_path):
    """A run with feature sets draws W coloured by set beside the within/across |cos| statistic; a run
    without sets skips it with its reason."""
    spec = {"name": "sets", "model": {"n_features": 4, "n_hidden": 2}, "train": {"steps": 30, "batch_size": 32},
            "sweep": {"feature_probability": [0.3, 0.1], "anticorrelated_sets": [[[0, 1], [2, 3]]]}}
    run = sp.run_spec(spec, tmp_path / "a", plot=False, quiet=True)
    written, _ = R.plot_run(run, tmp_path / "a_plots")
    assert any(w.endswith("feature_sets.png") for w in written)
    plain = dict(spec, sweep={"feature_probability": [0.3, 0.1]})
    _, skipped = R.plot_run(sp.run_spec(plain, tmp_path / "b", plot=False, quiet=True), tmp_path / "b_plots")
    assert "correlated_sets" in dict(skipped)["feature_sets"]
    # the statistic drawn is analysis.set_cosines: an antipodal pair inside each set, orthogonal sets
    W = np.array([[[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]]])
    fig = P.plot_feature_sets([0.1], W, [[0, 1], [2, 3]], "anticorrelated")
    assert len(fig.axes) == 2
    within, across = A.set_cosines(W, [[0, 1], [2, 3]])
    assert within[0] == pytest.approx(1.0) and across[0] == pytest.approx(0.0)


def test_learning_dynamics_figure_needs_snapshots(tmp_path):
    spec = {"name": "dyn", "model": {"n_features": 6, "n_hidden": 2}, "sweep": {"feature_probability": 0.3},
            "train": {"steps": 40, "batch_size": 32, "log_every": 5, "snapshots": 6}}
    run = sp.run_spec(spec, tmp_path / "a", plot=False, quiet=True)
    written, _ = R.plot_run(run, tmp_path / "a_plots")
    assert any(w.endswith("learning_dynamics.png") for w in written)
    plain = dict(spec, train={"steps": 40, "batch_size": 32})
    _, skipped = R.plot_run(sp.run_spec(plain, tmp_path / "b", plot=False, quiet=True), tmp_path / "b_plots")
    assert "snapshots" in dict(skipped)["learning_dynamics"]
    # one line per feature in the D_i panel, at the snapshot steps
    fig = P.plot_learning_dynamics([0, 9, 39], np.full((3, 6), 0.5), [0, 20, 39], [1.0, 0.5, 0.4])
    assert len(fig.axes[0].get_lines()) == 6 + len(A.PAPER_FRACTIONS)


def test_learning_dynamics_one_column_per_density(tmp_path):
    """A sweep of densities with seeds draws one column per density (densest first), each the best seed's
    snapshots: its D_i lines are those of the model's own snapshots."""
    spec = {"name": "dyn", "model": {"n_features": 6, "n_hidden": 2},
            "sweep": {"feature_probability": [0.3, 0.05], "seeds": 2},
            "train": {"steps": 40, "batch_size": 32, "log_every": 5, "snapshots": 6}}
    run = sp.run_spec(spec, tmp_path / "a", plot=False, quiet=True)
    fig = R._fig_dynamics(run, run.table, "here")
    tops = [ax for ax in fig.axes if ax.get_ylabel() == "feature dimensionality $D_i$" or ax.get_title()]
    titles = [ax.get_title() for ax in tops]
    assert len(fig.axes) == 4 and len(titles) == 2
    assert "1−S = 0.3" in titles[0] and "1−S = 0.05" in titles[1]
    best = R._best(run.table, "feature_probability").sort_values("feature_probability", ascending=False)
    for ax, model_id in zip(tops, best["model_id"]):
        D = A.feature_dimensionality(run.snapshots([int(model_id)])["W"][0])
        drawn = np.stack([line.get_ydata() for line in ax.get_lines()[:6]], axis=1)
        assert f"model {int(model_id)}," in ax.get_title()
        np.testing.assert_allclose(drawn, D, rtol=1e-6)


def test_computation_figure_for_abs_models_only(tmp_path):
    """A run trained toward |x| gets the per-neuron weight heatmaps beside the computation counts; a run
    toward x skips it with its reason."""
    model = {"n_features": 5, "n_hidden": 4, "tied": False, "hidden_activation": "relu", "target": "abs",
             "value_range": "symmetric"}
    spec = {"name": "abs", "model": model, "train": {"steps": 30, "batch_size": 32},
            "sweep": {"feature_probability": [1.0, 0.1], "importance_decay": 0.8}}
    run = sp.run_spec(spec, tmp_path / "a", plot=False, quiet=True)
    written, _ = R.plot_run(run, tmp_path / "a_plots")
    assert any(w.endswith("computation.png") for w in written)
    plain = dict(spec, model=dict(model, target="identity"))
    _, skipped = R.plot_run(sp.run_spec(plain, tmp_path / "b", plot=False, quiet=True), tmp_path / "b_plots")
    assert "target" in dict(skipped)["computation"]
    # the heatmap rows are the neurons sorted by main feature, ReLU(x) before ReLU(-x), dead ones last
    W = np.array([[[0.0, -1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    assert P._neuron_order(W[0]).tolist() == [2, 3, 0, 1]
    fig = P.plot_computation([1.0], W)
    save(fig, tmp_path, "computation")
    assert len(fig.axes) == 3  # one heatmap, its colorbar, the counts


def test_double_descent_figure_needs_a_dataset_size_axis(tmp_path):
    spec = {"name": "dd", "model": {"n_features": 20, "n_hidden": 2},
            "train": {"steps": 60, "batch_size": 64, "lr_schedule": "cosine", "warmup_steps": 10},
            "sweep": {"feature_probability": 0.1, "dataset_size": [3, 10, 40]}}
    run = sp.run_spec(spec, tmp_path / "a", plot=False, quiet=True)
    written, _ = R.plot_run(run, tmp_path / "a_plots")
    path = [w for w in written if w.endswith("double_descent.png")]
    assert path
    assert_image_has_content(path[0])
    _, skipped = R.plot_run(sp.run_spec(dict(spec, sweep={"feature_probability": 0.1, "dataset_size": 10}),
                                        tmp_path / "b", plot=False, quiet=True), tmp_path / "b_plots")
    assert "dataset_size" in dict(skipped)["double_descent"]
    # the training examples drawn are the model's dataset: the trainer's full batch
    train_x, test_x = R._training_and_test_data(run, 1)
    pop = run.sweep.population(1, 2)
    np.testing.assert_array_equal(train_x, sp.sample_batch(pop, 5, 64)[0].numpy())
    assert train_x.shape == (10, 20) and test_x.shape == (R.TEST_SAMPLES, 20)
    assert not np.isin(test_x[test_x > 0], train_x[train_x > 0]).any()  # fresh samples, not the dataset


def test_double_descent_figure_draws_the_median_of_seeds_and_panels_around_the_peak(tmp_path):
    # the panels: the smallest and largest T, the peak and halfway to it on each side
    assert P.double_descent_panels(np.arange(12), 6) == [0, 3, 6, 9, 11]
    assert P.double_descent_panels(np.arange(12), 0) == [0, 6, 11]
    assert P.double_descent_panels(np.arange(12), 11) == [0, 5, 11]
    assert P.double_descent_panels(np.arange(3), 1, count=3) == [0, 1, 2]
    # two seeds per T: each model a dot, the line through the medians, the peak marked at the median's T
    T = np.array([3, 3, 10, 10, 30, 30])
    test = np.array([0.02, 0.04, 0.5, 0.1, 0.01, 0.03])  # medians 0.03, 0.3, 0.02: peak at T = 10
    train = np.array([1e-12, 1e-11, 1e-3, 2e-3, 0.01, 0.02])
    rng = np.random.default_rng(0)
    panels = [(t, rng.normal(size=(2, 8)), rng.normal(size=(2, t))) for t in (3, 10, 30)]
    fig = P.plot_double_descent(T, test, train, np.full(6, 0.1), np.full(6, 0.2), panels)
    save(fig, tmp_path, "double_descent")
    loss_ax = fig.axes[0]
    test_line = loss_ax.get_lines()[0]
    np.testing.assert_allclose(test_line.get_xdata(), [3, 10, 30])
    np.testing.assert_allclose(test_line.get_ydata(), [0.03, 0.3, 0.02])
    assert [line.get_xdata()[0] for line in loss_ax.get_lines() if line.get_linestyle() == ":"] == [10]
    # a memorised training loss (1e-12) does not stretch the axis down past the test loss's range
    assert loss_ax.get_ylim()[0] == pytest.approx(0.02 / P.DOUBLE_DESCENT_LOSS_RANGE)
    assert [ax.get_title() for ax in fig.axes[2::2]] == ["T = 3", "T = 10 (peak)", "T = 30"]
