"""What a stored run draws: `plot_run(run, outdir)` decides, per model shape, which of the paper's figures
the run's axes allow, picks their models (best of seeds, a readable subset, or --models), reads what they
need (weights, losses, snapshots; fresh test samples for the double descent) and draws them with
superpos.plots. A figure the run does not allow, or cannot read, is skipped with the reason.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import analysis as A
from .plots import (density_label, median_per_size, double_descent_panels, plot_adversarial,
                    plot_computation, plot_dims_per_feature, plot_double_descent,
                    plot_feature_dimensionality, plot_feature_sets, plot_feature_vectors,
                    plot_geometry_graphs, plot_intro, plot_learning_dynamics_panels, plot_loss_curves,
                    plot_phase_diagram, plot_privileged_neurons)

FORMATS = ("png", "pdf", "svg")
INTRO_MAX_MODELS = 12  # more columns than this stop being readable: a run with more draws a subset
MAX_CHOSEN_MODELS = 60  # --models: panels beyond this are too small to read
GEOMETRY_PANELS = 4  # feature-geometry graphs drawn for this many sparsities
_numpy = A._as_numpy  # float64 numpy from a tensor, array, list or pandas Series
TEST_SAMPLES = 2048  # fresh samples per model for the test loss (n = 10,000: 80 MB, drawn one model at a time)


# --- a whole run ----------------------------------------------------------------------------------
class SkipFigure(Exception):
    """A run lacks what a figure needs; the message says what (reported by plot_run)."""


def _column(rows, name: str, default=np.nan) -> np.ndarray:
    return rows[name].to_numpy() if name in rows else np.full(len(rows), default)


def _ok(rows):
    """Rows of models that trained without diverging, densest first."""
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    if rows.empty:
        raise SkipFigure("no model of this shape finished with status ok")
    if "feature_probability" in rows:
        rows = rows.sort_values("feature_probability", ascending=False, kind="stable")
    return rows


def _weights(run, rows, biases: bool = False):
    W, b = run.weights(rows["model_id"].tolist())
    return (_numpy(W), _numpy(b)) if biases else _numpy(W)


def _varies(values) -> bool:
    values = np.asarray(values, dtype=np.float64)
    return np.unique(values[np.isfinite(values)]).size > 1


def _uniform_density(rows):
    """Rows of a sparsity sweep (one density per model, several densities), densest first."""
    rows = _ok(rows)
    if not _varies(_column(rows, "feature_probability")):
        raise SkipFigure("feature_probability does not vary")
    return rows[np.isfinite(_column(rows, "feature_probability"))]


def _uniform_sweep(rows):
    """Rows of a sparsity sweep with uniform importance (what the D* and D_i figures are about)."""
    rows = _uniform_density(rows)
    for name in ("importance_decay", "relative_importance"):
        values = _column(rows, name)
        if np.any(np.isfinite(values) & (values != 1.0)):
            raise SkipFigure(f"importance is not uniform ({name} set)")
    return rows


def _best(rows, by):
    """Lowest final_loss row per group (best of seeds); all rows when final_loss is missing."""
    if "final_loss" not in rows:
        return rows.drop_duplicates(by)
    return rows.sort_values("final_loss", kind="stable").drop_duplicates(by).sort_index()


def _fig_loss_curves(run, rows, where):
    if _varies(_column(rows, "steps")):  # histories of different lengths cannot share one call
        rows = rows[rows["steps"] == rows["steps"].max()]
        where = f"{where}, {int(rows['steps'].iloc[0])}-step models"
    rows = rows.sort_values("feature_probability", ascending=False) if "feature_probability" in rows else rows
    steps, losses = run.loss_history(rows["model_id"].tolist())
    density = _column(rows, "feature_probability")
    labels = [density_label(p) for p in density]
    return plot_loss_curves(steps, losses, labels, color_by=density, title=f"training loss, {where}")


def _one_feature_scaling(rows):
    """(feature, others' density, (k,) factors) when each row's densities are one value everywhere but at
    one feature, the same feature and value in every row, and that feature's density varies
    (sweep.feature_probability = {value, feature, factor}); else None."""
    if "feature_probability_list" not in rows or rows["feature_probability_list"].isna().any():
        return None
    p = np.array(rows["feature_probability_list"].tolist(), dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        return None
    for f in range(p.shape[1]):
        others = np.delete(p, f, axis=1)
        if np.all(others == others[0, 0]) and np.unique(p[:, f]).size > 1:
            return f, float(others[0, 0]), p[:, f] / others[0, 0]
    return None


def _annotate(rows):
    """(rows in display order with a `_label` column, highlighted feature or None, a note for titles).

    Densest first and labelled by density; a one-feature-scaled sweep in increasing factor, labelled by
    the factor, its feature highlighted."""
    scaled = _one_feature_scaling(rows)
    if scaled is None:
        return rows.assign(_label=[density_label(p) for p in _column(rows, "feature_probability")]), None, ""
    feature, base, factor = scaled
    rows = rows.assign(_label=[f"×{f:.3g}" for f in factor], _factor=factor)
    note = f"feature {feature}'s density × factor (others {base:.3g})"
    return rows.sort_values("_factor", kind="stable"), feature, note


def _readable_subset(rows, models=None):
    """(rows, note): the models chosen with --models, else the best of seeds per grid point and, past
    INTRO_MAX_MODELS points, an even sample of INTRO_MAX_MODELS of them across the display order."""
    rows = _ok(rows)
    if models is not None:
        rows = rows[rows["model_id"].isin(list(models))]
        if rows.empty:
            raise SkipFigure("none of the chosen --models has this shape")
        if len(rows) > MAX_CHOSEN_MODELS:
            raise SkipFigure(f"{len(rows)} models chosen; at most {MAX_CHOSEN_MODELS} panels are drawn")
        rows, highlight, note = _annotate(rows)
        return rows, highlight, f"models {', '.join(str(i) for i in rows['model_id'])}" + (f"; {note}" if note else "")
    best = _best(rows, "point_id" if "point_id" in rows else "model_id")
    best, highlight, note = _annotate(best)
    seeds = "best of seeds" if len(best) < len(rows) else ""
    if len(best) > INTRO_MAX_MODELS:
        pick = np.unique(np.linspace(0, len(best) - 1, INTRO_MAX_MODELS).round().astype(int))
        seeds = f"{len(pick)} of {len(best)} points, " + (seeds or "one model each") + " (choose with --models)"
        best = best.iloc[pick]
    return best, highlight, "; ".join(t for t in (note, seeds) if t)


def _fig_intro(run, rows, where, models=None):
    rows, _, note = _readable_subset(rows, models)
    return plot_intro(_weights(run, rows), _column(rows, "feature_probability"), labels=list(rows["_label"]),
                      title=f"{run.name}: {where}" + (f"\n{note}" if note else ""))


def _fig_feature_vectors(run, rows, where, models=None):
    """Every grid point (best of seeds) of a one-feature-scaled sweep in a row - the paper's deformation
    figure - or the intro's readable subset."""
    ok = _ok(rows)
    if models is None and _one_feature_scaling(ok) is not None:
        best = _best(ok, "point_id" if "point_id" in ok else "model_id")
        rows, highlight, note = _annotate(best)
        note += "; best of seeds" if len(best) < len(ok) else ""
    else:
        rows, highlight, note = _readable_subset(rows, models)
    return plot_feature_vectors(_weights(run, rows), list(rows["_label"]), highlight,
                                title=f"{run.name}: W's columns, {where}" + (f"\n{note}" if note else ""))


def _fig_phase(run, rows, where):
    n, m = int(rows["n_features"].iloc[0]), int(rows["n_hidden"].iloc[0])
    if (n, m) not in ((2, 1), (3, 2)):
        raise SkipFigure(f"phase diagrams are for (n, m) = (2, 1) or (3, 2), not ({n}, {m})")
    if not _varies(_column(rows, "relative_importance")):
        raise SkipFigure("relative_importance does not vary")
    rows = _ok(rows)
    rows = rows[np.isfinite(_column(rows, "relative_importance"))]
    best = _best(rows, "point_id" if "point_id" in rows else ["feature_probability", "relative_importance"])
    phase = A.classify_phase(_weights(run, best))
    return plot_phase_diagram(best["feature_probability"], best["relative_importance"], phase, n, m,
                              title=f"{run.name}: {where}")


def _fig_dims_per_feature(run, rows, where):
    rows = _uniform_sweep(rows)
    dstar = _column(rows, "dims_per_feature")
    if not np.isfinite(dstar).all():
        dstar = A.dimensions_per_feature(_weights(run, rows))
    return plot_dims_per_feature(rows["feature_probability"], dstar, title=f"{run.name}: {where}")


def _fig_feature_dimensionality(run, rows, where):
    rows = _uniform_sweep(rows)
    W = _weights(run, rows)
    return plot_feature_dimensionality(rows["feature_probability"], A.feature_dimensionality(W),
                                       A.dimensions_per_feature(W), title=f"{run.name}: {where}")


def _fig_geometry(run, rows, where):
    rows = _best(_uniform_sweep(rows), "feature_probability")
    rows = rows.sort_values("feature_probability", ascending=False)
    pick = np.unique(np.linspace(0, len(rows) - 1, min(GEOMETRY_PANELS, len(rows))).round().astype(int))
    rows = rows.iloc[pick]
    labels = [density_label(p) for p in rows["feature_probability"]]
    return plot_geometry_graphs(_weights(run, rows), labels, title=f"{run.name}: {where}")


def _mean_gains(run, rows, activation: str) -> dict:
    """Per row: the mean over single-feature inputs of the exact L2 and L-infinity gains."""
    W, b = _weights(run, rows, biases=True)
    return {norm: A.adversarial_gain(W, b, activation, norm=norm).mean(axis=1) for norm in ("l2", "linf")}


def _fig_adversarial(run, rows, where):
    act = str(rows["activation"].iloc[0]) if "activation" in rows else "relu"
    if act != "relu":
        raise SkipFigure("drawn for the ReLU models (beside the linear models of the same shape)")
    table = run.table
    n, m = int(rows["n_features"].iloc[0]), int(rows["n_hidden"].iloc[0])
    linear = table[(_column(table, "activation", "relu") == "linear") & (table["n_features"] == n)
                   & (table["n_hidden"] == m)]
    if linear.empty:
        raise SkipFigure("needs linear models of the same shape in the run (activation = [\"linear\", \"relu\"])")
    relu = _best(_uniform_density(rows), "feature_probability")
    linear = _best(_uniform_density(linear), "feature_probability").set_index("feature_probability")
    relu = relu[relu["feature_probability"].isin(linear.index)].sort_values("feature_probability")
    if len(relu) < 2:
        raise SkipFigure("fewer than two densities with both a ReLU and a linear model")
    gains = _mean_gains(run, relu, "relu")
    reference = _mean_gains(run, linear.loc[relu["feature_probability"]].reset_index(), "linear")
    ratio = {"L2 attack": gains["l2"] / reference["l2"], "L∞ attack": gains["linf"] / reference["linf"]}
    summary = A.summary_metrics(_weights(run, relu))
    return plot_adversarial(relu["feature_probability"], ratio, summary["n_superposed"], summary["n_represented"],
                            title=f"{run.name}: {where} (best of seeds; exact gains at the {n} single-feature "
                                  f"inputs, averaged)")


def _sets_text(sets) -> str:
    """[[0, 1], [2..9]]: a set of consecutive features longer than 3 written as a range (titles stay one line)."""
    def one(members):
        consecutive = len(members) > 3 and list(members) == list(range(members[0], members[0] + len(members)))
        return f"[{members[0]}..{members[-1]}]" if consecutive else str(list(members))
    return "[" + ", ".join(one(list(m)) for m in sets) + "]"


def _fig_feature_sets(run, rows, where):
    import json
    for kind in ("correlated", "anticorrelated"):
        values = {str(v) for v in _column(rows, f"{kind}_sets", "[]")}
        sets = [json.loads(v) for v in values if v not in ("[]", "nan", "None", "")]
        if sets:
            break
    else:
        raise SkipFigure("no correlated_sets or anticorrelated_sets in the run")
    if len(values) > 1:
        raise SkipFigure(f"several {kind}_sets values: drawn for a run with one")
    rows = _ok(rows)  # one density is enough here: the statistic is drawn per model
    best = _best(rows[np.isfinite(_column(rows, "feature_probability"))], "feature_probability")
    best = best.sort_values("feature_probability", ascending=False)
    return plot_feature_sets(best["feature_probability"], _weights(run, best), sets[0], kind,
                             title=f"{run.name}: {where}\n{kind} sets {_sets_text(sets[0])} (best of seeds)")


DYNAMICS_MAX_PANELS = 4  # columns of the learning-dynamics figure (densities, densest first)


def _fig_dynamics(run, rows, where):
    rows = _ok(rows)
    if _column(rows, "snapshots", 0).max() == 0 and not any(str(v) not in ("[]", "nan", "0") for v in
                                                             _column(rows, "snapshot_steps", "[]")):
        raise SkipFigure("no snapshots (set [train] snapshots or snapshot_steps)")
    rows = rows.assign(feature_probability=_column(rows, "feature_probability"))
    best = _best(rows, "feature_probability").sort_values("feature_probability", ascending=False)
    if len(best) > DYNAMICS_MAX_PANELS:  # an even sample of the densities, both ends kept
        best = best.iloc[np.unique(np.linspace(0, len(best) - 1, DYNAMICS_MAX_PANELS).round().astype(int))]
    ids = best["model_id"].tolist()
    snaps = run.snapshots(ids)
    loss_steps, loss = run.loss_history(ids)
    panels = []
    for k, model_id in enumerate(ids):
        D = A.feature_dimensionality(_numpy(snaps["W"][k]))  # (S, n): the snapshots as a batch of models
        p = float(best["feature_probability"].iloc[k])
        label = f"model {int(model_id)}" + (f", 1−S = {p:.3g}" if np.isfinite(p) else "")
        panels.append((label, snaps["steps"], D, loss_steps, loss[k]))
    return plot_learning_dynamics_panels(panels, title=f"{run.name}: {where} ({len(snaps['steps'])} snapshots, "
                                                       f"best of seeds per density)")


def _fig_privileged(run, rows, where):
    if (_column(rows, "hidden_activation", "none") != "relu").any() or (~_column(rows, "tied", True).astype(bool)).any():
        raise SkipFigure("drawn for tied models with a ReLU hidden layer (hidden_activation = \"relu\")")
    best = _best(_uniform_density(rows), "feature_probability").sort_values("feature_probability", ascending=False)
    W = _weights(run, best)
    return plot_privileged_neurons(best["feature_probability"], A.neuron_feature_weights(W),
                                   A.polysemantic_neurons(W), title=f"{run.name}: {where} (best of seeds)")


def _fig_computation(run, rows, where):
    if (_column(rows, "target", "identity") != "abs").any():
        raise SkipFigure("drawn for models trained toward |x| (target = \"abs\")")
    rows = _ok(rows)
    best = _best(rows, "feature_probability").sort_values("feature_probability", ascending=False)
    return plot_computation(best["feature_probability"], _weights(run, best),
                            title=f"{run.name}: {where}, target |x| (best of seeds)")


def _training_and_test_data(run, model_id: int):
    """(training examples (T, n), fresh samples (TEST_SAMPLES, n)) of one stored model of a finite dataset."""
    from dataclasses import replace

    from .spec import Population, sample_batch
    pop = run.sweep.population(model_id, model_id + 1)
    T = pop.data.dataset_size
    fresh = Population(pop.spec, pop.feature_probability.numpy(), pop.importance.numpy(), [int(pop.seed[0])],
                       data=replace(pop.data, dataset_size=None))
    return sample_batch(pop, 0, T)[0].numpy(), sample_batch(fresh, 0, TEST_SAMPLES)[0].numpy()


def _fig_double_descent(run, rows, where):
    rows = _ok(rows)
    if not _varies(_column(rows, "dataset_size")):
        raise SkipFigure("dataset_size does not vary (set a [sweep] dataset_size axis)")
    if (_column(rows, "hidden_activation", "none") != "none").any() or (~_column(rows, "tied", True).astype(bool)).any():
        raise SkipFigure("drawn for the plain tied model")
    rows = rows[np.isfinite(_column(rows, "dataset_size"))].sort_values(["dataset_size", "model_id"])
    T = rows["dataset_size"].to_numpy().astype(np.int64)
    act = str(_column(rows, "activation", "relu")[0])
    test, fdim, ddim, params = [], [], [], {}
    for model_id in rows["model_id"].tolist():  # every seed: the loss and dimensionality dots
        W, b = _weights(run, rows[rows["model_id"] == model_id], biases=True)
        train_x, test_x = _training_and_test_data(run, int(model_id))
        H = A.hidden_vectors(W, train_x)
        test.append(A.reconstruction_loss(W, b, test_x, run.importance([model_id]), act)[0])
        fdim.append(A.weighted_dimensionality(W)[0])
        ddim.append(A.weighted_dimensionality(H)[0])
        params[int(model_id)] = (W[0], H[0])
    sizes, median_test = median_per_size(T, test)
    best = _best(rows, "dataset_size").sort_values("dataset_size")  # the panels: best of seeds per T
    panels = [(sizes[k], *params[int(best["model_id"].iloc[k])])
              for k in double_descent_panels(sizes, int(np.nanargmax(median_test)))]
    seeds = "median of seeds per T, panels best of seeds" if len(sizes) < len(T) else "one seed per T"
    return plot_double_descent(T, test, rows["final_loss"].to_numpy(), fdim, ddim, panels,
                               n_hidden=int(rows["n_hidden"].iloc[0]),
                               title=f"{run.name}: {where}, 1−S = {float(rows['feature_probability'].iloc[0]):.3g} "
                                     f"({seeds}; test loss on {TEST_SAMPLES} fresh samples)")


FIGURES = (("loss_curves", _fig_loss_curves), ("intro", _fig_intro), ("feature_vectors", _fig_feature_vectors),
           ("phase_diagram", _fig_phase), ("dims_per_feature", _fig_dims_per_feature),
           ("feature_dimensionality", _fig_feature_dimensionality), ("geometry_graphs", _fig_geometry),
           ("adversarial", _fig_adversarial), ("privileged_neurons", _fig_privileged),
           ("feature_sets", _fig_feature_sets), ("learning_dynamics", _fig_dynamics),
           ("computation", _fig_computation), ("double_descent", _fig_double_descent))
PER_MODEL_FIGURES = ("intro", "feature_vectors")  # the figures --models chooses the models of


def _shapes(table):
    """(n, m, activation, rows) for each model shape in the table."""
    table = table.assign(activation=_column(table, "activation", "relu"))
    for (n, m, act), rows in table.groupby(["n_features", "n_hidden", "activation"], sort=True):
        yield int(n), int(m), str(act), rows


def plot_run(run, outdir, fmt: str = "png", dpi: int = 130, models=None):
    """Draw every figure a loaded run allows into `outdir`; returns (written paths, [(figure, why skipped)]).

    Figures are decided per model shape (n, m, activation) from run.table: loss curves always; the
    intro figure and W's columns as vectors (feature_vectors) for a readable subset - the best of seeds
    per grid point, an even sample of INTRO_MAX_MODELS points past that, or the model ids in `models`
    (--models); for a sweep scaling one feature's density, feature_vectors shows every point in a row
    (the paper's deformation figure); a phase diagram when relative_importance varies and (n, m) is
    (2, 1) or (3, 2); D*, D_i and geometry graphs for a sparsity sweep with uniform importance; the
    adversarial-vulnerability figure for ReLU models with linear ones of the same shape beside them; the
    computation figure for models trained toward |x|; the double-descent figure for a dataset_size axis
    (test loss on fresh samples, drawn here: TEST_SAMPLES per model).
    A figure whose data cannot be read (missing weights or loss history) is skipped with the error as
    the reason, so one gap never stops the other figures.
    File names are FIGURE.FMT, or FIGURE_n{n}_m{m}_{activation}.FMT when the run has several shapes.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    outdir = Path(outdir)
    written, skipped = [], []
    if run.table.empty or not {"model_id", "n_features", "n_hidden"} <= set(run.table.columns):
        return written, [("all figures", "the run's table has no finished models")]
    if models is not None:
        models = sorted({int(i) for i in models})
        unknown = sorted(set(models) - set(run.table["model_id"].tolist()))
        if not models or unknown:
            raise ValueError(f"models: {'no model ids given' if not models else f'model {unknown[0]} is not in the run'}"
                             f" (finished model ids are 0..{int(run.table['model_id'].max())})")
    outdir.mkdir(parents=True, exist_ok=True)
    shapes = list(_shapes(run.table))
    for n, m, act, rows in shapes:
        suffix = f"_n{n}_m{m}_{act}" if len(shapes) > 1 else ""
        where = f"n={n}, m={m}, {act}"
        for name, build in FIGURES:
            try:
                fig = build(run, rows, where, models) if name in PER_MODEL_FIGURES else build(run, rows, where)
            except SkipFigure as why:
                skipped.append((name + suffix, str(why)))
                continue
            except Exception as err:  # noqa: BLE001 - a broken figure must not stop the others
                skipped.append((name + suffix, f"could not draw: {type(err).__name__}: {err}"))
                continue
            path = outdir / f"{name}{suffix}.{fmt}"
            fig.savefig(path, dpi=dpi)
            written.append(str(path))
    return written, skipped


def parse_model_ids(text: str) -> list:
    """`--models` syntax: comma-separated ids and inclusive ranges, e.g. "0,5,10-19" (ValueError naming --models)."""
    ids = []
    for part in str(text).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not (lo.isdigit() and (not sep or hi.isdigit())) or (sep and int(hi) < int(lo)):
            raise ValueError(f"--models: {part!r} is not a model id or a range like 10-19 (ids and ranges, comma-separated)")
        ids.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return ids
