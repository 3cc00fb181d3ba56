"""The paper's figures, from arrays: each plot_* draws one figure from the numbers it is given (what a
stored run draws, and from which of its models, is superpos.run_figures).

Every function returns a matplotlib Figure built without pyplot (no global figure state, nothing
shown, works under any backend, Agg included); the caller saves it with fig.savefig.
"""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import LinearSegmentedColormap, ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Patch
from matplotlib.ticker import LogFormatter, MaxNLocator

from . import analysis as A

# paper style: black = no superposition, orange/yellow = superposition
SUPERPOSITION_CMAP = LinearSegmentedColormap.from_list("superposition", ["black", "#d95f02", "#ffd000"])
PHASE_COLORS = {"not learned": "#cfcfcf", "dedicated": "#4477aa", "superposition": "#ee7733"}
PHASE_NAMES = {"not learned": "extra feature not learned", "dedicated": "extra feature dedicated",
               "superposition": "superposition"}
STRUCTURE_COLORS = {"dedicated": "#222222", "antipodal pair": "#4477aa", "triangle": "#228833",
                    "tetrahedron": "#aa3377", "pentagon": "#ee7733", "square antiprism": "#66ccee",
                    A.OTHER: "#999933"}
FRACTION_NAMES = ("1", "3/4", "2/3", "1/2", "2/5", "3/8", "1/3")
INTRO_MAX_FEATURES = 40  # a 1.6-inch W^T W heatmap resolves about this many rows; more show the first 40
FEATURE_VECTOR_COLS = 10  # panels per row of the feature-vector figure
HIGHLIGHT = "#d62728"  # the feature a non-uniform sweep varies
FEW_CURVES = 12  # up to this many loss curves get a line and a legend entry each
MAX_LOSS_CURVES = 300  # more models than this: their loss curves are drawn from an even sample


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


_numpy = A._as_numpy  # float64 numpy from a tensor, array, list or pandas Series


def _model_density(feature_probability, K: int) -> np.ndarray:
    """(K,) one density per model: the value itself, or the mean over features when given per feature."""
    p = _numpy(feature_probability)
    p = p.mean(axis=-1) if p.ndim == 2 else np.broadcast_to(p, (K,))
    return np.asarray(p, dtype=np.float64)


def density_label(p: float) -> str:
    return f"1−S = {p:.3g}"


# --- intro figure ---------------------------------------------------------------------------------
def plot_intro(W, feature_probability, title: str | None = None, labels=None) -> Figure:
    """One column per model: W^T W above the ||W_i|| bars coloured by superposition (paper's intro).

    W: (K, m, n); feature_probability: (K,) or (K, n) (a per-feature one is shown as its mean);
    labels: a title per column (default: the density). Past INTRO_MAX_FEATURES features only the first
    INTRO_MAX_FEATURES are drawn (a 400-row heatmap in a 1.6-inch panel reads as noise); the figure says so.
    """
    W = A._batch(W)
    K, _, n = W.shape
    p = _model_density(feature_probability, K)
    shown = min(n, INTRO_MAX_FEATURES)
    norms, sup = A.feature_norms(W)[:, :shown], A.superposition(W)[:, :shown]
    W = W[:, :, :shown]
    gram = W.transpose(0, 2, 1) @ W
    vmax = float(np.abs(gram).max()) or 1.0
    fig = _figure(1.6 * K + 1.6, 4.6)
    axes = fig.subplots(2, K, squeeze=False)
    for k in range(K):
        top, bottom = axes[0, k], axes[1, k]
        image = top.imshow(gram[k], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        top.set_title(density_label(p[k]) if labels is None else str(labels[k]), fontsize=9)
        top.set_xticks([])
        top.set_yticks([])
        bottom.barh(np.arange(shown), norms[k], color=SUPERPOSITION_CMAP(np.clip(sup[k], 0, 1)), height=0.8)
        bottom.set_ylim(shown - 0.5, -0.5)
        bottom.yaxis.set_major_locator(MaxNLocator(integer=True))  # features have integer indices
        bottom.set_xlim(0, max(1.0, norms.max() * 1.05))
        bottom.set_xlabel(r"$\|W_i\|$", fontsize=9)
        bottom.tick_params(labelsize=7)
        if k:
            bottom.set_yticklabels([])
    axes[0, 0].set_ylabel(r"$W^TW$")
    axes[1, 0].set_ylabel("feature i" if shown == n else f"feature i (first {shown} of {n})")
    fig.colorbar(image, ax=axes[0, :], label=r"$W_i \cdot W_j$", shrink=0.9)
    fig.colorbar(ScalarMappable(Normalize(0, 1), SUPERPOSITION_CMAP), ax=axes[1, :], shrink=0.9,
                 label=r"superposition $\sum_{j\neq i} (\hat W_i \cdot W_j)^2$")
    fig.suptitle(title or r"$W^TW$ and feature norms, coloured by superposition")
    return fig


# --- W's columns as vectors -----------------------------------------------------------------------
def plane_coordinates(W):
    """(coords (2, n), captured): one model's feature directions drawn in a plane.

    m = 2: W itself (m = 1: the line, as the x-axis). m > 2: the projection onto the plane of W's two
    largest singular directions, the plane holding the largest share of ||W||_F^2; `captured` is that
    share (1 when m <= 2), so a reader knows how much of W the picture leaves out.
    """
    W = A._single(W)
    m = W.shape[0]
    if m <= 2:
        return np.concatenate([W, np.zeros((2 - m, W.shape[1]))]), 1.0
    U, s, _ = np.linalg.svd(W, full_matrices=False)
    total = float((s**2).sum())
    return U[:, :2].T @ W, float((s[:2] ** 2).sum() / total) if total > 0 else 1.0


def _feature_colors(n: int, highlight):
    if highlight is not None:
        return ["#333333" if i != highlight else HIGHLIGHT for i in range(n)]
    return [f"C{i % 10}" for i in range(n)] if n <= 10 else ["#333333"] * n


def _draw_vectors(ax, W, highlight=None, colors=None) -> float:
    """Arrows from the origin to each feature's point in the plane; returns the captured share."""
    coords, captured = plane_coordinates(W)
    n = coords.shape[1]
    colors = _feature_colors(n, highlight) if colors is None else colors
    ax.add_patch(Circle((0, 0), 1.0, fill=False, ls=":", lw=0.8, color="0.6"))
    ax.add_collection(LineCollection([[(0, 0), tuple(c)] for c in coords.T], colors=colors,
                                     linewidths=1.4 if n <= 20 else 0.5))
    ax.scatter(coords[0], coords[1], s=14 if n <= 20 else 3, color=colors, zorder=3)
    if n <= 12:  # feature indices at the tips
        for i, (x, y) in enumerate(coords.T):
            r = math.hypot(x, y)
            if r > 0.15:
                ax.text(x * (1 + 0.22 / r), y * (1 + 0.22 / r), str(i), fontsize=7, ha="center", va="center",
                        color=colors[i])
    lim = 1.3 * max(1.0, float(np.abs(coords).max()))
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return captured


def plot_feature_vectors(W, labels=None, highlight: int | None = None, ncols: int = FEATURE_VECTOR_COLS,
                         title: str | None = None) -> Figure:
    """W's columns drawn as vectors in the plane, one panel per model (the notebook's pentagon).

    W: (K, m, n). m = 2 is drawn as is; m > 2 is projected (plane_coordinates) and each panel says
    what share of ||W||_F^2 the plane holds. labels: a title per panel; highlight: a feature index drawn
    in red (the one a non-uniform sweep varies). Panels wrap after `ncols`; the dotted circle is norm 1.
    """
    W = A._batch(W)
    K, m, n = W.shape
    cols = max(1, min(ncols, K))
    rows = -(-K // cols)
    fig = _figure(1.45 * cols + 0.3, 1.6 * rows + 0.7)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= K:
            ax.set_axis_off()
            continue
        captured = _draw_vectors(ax, W[k], highlight)
        lines = [] if labels is None else [str(labels[k])]
        if m > 2:
            lines.append(f"{100 * captured:.0f}% of $\\|W\\|_F^2$ in plane")
        ax.set_title("\n".join(lines), fontsize=7)
    where = "W's columns" if m <= 2 else f"W's columns projected on its top-2 singular plane (m = {m})"
    fig.suptitle(title or where, fontsize=10)
    return fig


# --- phase diagrams -------------------------------------------------------------------------------
def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted grid values: geometric (log axis) or arithmetic midpoints."""
    v = np.log(values) if log else values.astype(np.float64)
    if v.size == 1:
        mid, half = v[0], 0.5 if log else max(abs(v[0]) * 0.5, 0.5)
        e = np.array([mid - half, mid + half])
    else:
        inner = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[2 * v[0] - inner[0]], inner, [2 * v[-1] - inner[-1]]])
    return np.exp(e) if log else e


def _draw_phase_map(ax, density, importance, phase) -> None:
    """Grid of phase cells on (density, relative importance); points missing from the grid stay blank."""
    ud, ur = np.unique(density), np.unique(importance)
    codes = np.full((ur.size, ud.size), np.nan)
    index = {name: i for i, name in enumerate(A.PHASES)}
    codes[np.searchsorted(ur, importance), np.searchsorted(ud, density)] = [index[s] for s in phase]
    log_r = bool(np.all(ur > 0))
    cmap = ListedColormap([PHASE_COLORS[name] for name in A.PHASES])
    ax.pcolormesh(_edges(ud, True), _edges(ur, log_r), np.ma.masked_invalid(codes), cmap=cmap,
                  vmin=-0.5, vmax=len(A.PHASES) - 0.5)
    ax.set_xscale("log")
    ax.set_yscale("log" if log_r else "linear")
    ax.invert_xaxis()  # the paper puts sparse to the right
    ax.set_xlabel("feature density 1−S (log; sparser →)")
    ax.set_ylabel("relative importance of the extra feature")


def plot_phase_diagram(density, relative_importance, phase, n_features: int = 2, n_hidden: int = 1,
                       theory: bool | None = None, title: str | None = None) -> Figure:
    """Empirical phase per grid point beside the closed-form n=2, m=1 theory (drawn for (2, 1) only).

    density, relative_importance, phase: one entry per grid point (phase as from
    analysis.classify_phase, typically of the best-of-seeds model); theory: default (n, m) == (2, 1).
    """
    d, r = _numpy(density).ravel(), _numpy(relative_importance).ravel()
    phase = np.asarray(phase).astype(str).ravel()
    theory = (n_features, n_hidden) == (2, 1) if theory is None else theory
    fig = _figure(5.0 * (1 + theory) + 0.4, 4.6)
    axes = fig.subplots(1, 1 + theory, squeeze=False)[0]
    _draw_phase_map(axes[0], d, r, phase)
    axes[0].set_title(f"empirical (best of seeds), n={n_features}, m={n_hidden}", fontsize=10)
    if theory:
        pg = np.geomspace(d.min(), d.max(), 240)
        rg = np.geomspace(r.min(), r.max(), 240) if r.min() > 0 else np.linspace(r.min(), r.max(), 240)
        P, R = np.meshgrid(pg, rg)
        _draw_phase_map(axes[1], P.ravel(), R.ravel(), A.theory_phase_n2m1(P, R).ravel())
        axes[1].set_title("theory: best of W=[1,0], [0,1], [1,−1] with optimal bias", fontsize=10)
    handles = [Patch(color=PHASE_COLORS[name], label=PHASE_NAMES[name]) for name in A.PHASES]
    # One panel is too narrow for the three entries in a row: stack them there.
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles) if theory else 1)
    fig.suptitle(title or "sparsity–relative importance phase diagram")
    return fig


# --- dimensions per feature and feature dimensionality --------------------------------------------
def _log_x(ax) -> None:
    """Log x axis whose labels read 2, 3, 4 (not 2x10^0) when it spans less than a decade."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(LogFormatter())
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def _draw_dstar(ax, density, dstar, **line_kwargs) -> None:
    """D* of each model and the mean per density, against 1/(1−S)."""
    x, y = 1.0 / _numpy(density).ravel(), _numpy(dstar).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    ux = np.unique(x)
    mean = np.array([y[x == v].mean() for v in ux])
    ax.scatter(x, y, s=10, color="black", alpha=0.35, zorder=3)
    ax.plot(ux, mean, color="black", lw=1.5, zorder=3, **line_kwargs)
    _log_x(ax)
    ax.set_xlabel("1/(1−S)  (inverse feature density, log)")


DENSE_NOTE = ("1/(1−S) = 1 (dense): D* = 1 while every D_i ≈ m/n. With equal importances the dense\n"
              "optimum is any rank-m projection (rotation invariant): it spreads the m dimensions\n"
              "over all n features instead of dedicating them to m of them.")


def _note_dense(ax, density) -> None:
    """Say on the figure why the dense end reads D* = 1 with every D_i near m/n (the paper says it in
    words), in a band added below y = 0 so the note never covers a point."""
    if np.any(np.isclose(_numpy(density), 1.0)):
        bottom, top = ax.get_ylim()
        ax.set_yticks([t for t in ax.get_yticks() if bottom <= t <= top])  # no ticks in the note's band
        ax.set_ylim(bottom - 0.2 * (top - bottom), top)
        ax.axhspan(bottom - 0.2 * (top - bottom), bottom - 0.01 * (top - bottom), color="#f4f4f4", zorder=0)
        ax.text(0.01, 0.015, DENSE_NOTE, transform=ax.transAxes, fontsize=6.5, va="bottom", ha="left", color="#444444")


def plot_dims_per_feature(density, dstar, title: str | None = None) -> Figure:
    """D* = m/‖W‖²_F against 1/(1−S): the paper's uniform-superposition curve, sticky at 1 and 1/2."""
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    for level in (1.0, 0.5):
        ax.axhline(level, color="tab:gray", ls="--", lw=1)
    _draw_dstar(ax, density, dstar, label=r"$D^*$")
    ax.set_ylabel(r"dimensions per feature $D^* = m/\|W\|_F^2$")
    ax.set_ylim(0, max(1.15, np.nanmax(_numpy(dstar)) * 1.05) if np.isfinite(_numpy(dstar)).any() else 1.15)
    _note_dense(ax, density)
    ax.set_title(title or "dimensions per feature")
    return fig


def plot_feature_dimensionality(density, dimensionality, dstar=None, title: str | None = None,
                                seed: int = 0) -> Figure:
    """Scatter of every feature's D_i over 1/(1−S), lines at the paper's fractions, D* overlaid if given.

    density: (K,); dimensionality: (K, n) from analysis.feature_dimensionality. Points get a small
    multiplicative x-jitter (fixed `seed`) so the clusters at each density stay visible.
    """
    x = 1.0 / _numpy(density).ravel()
    dims = _numpy(dimensionality)
    fig = _figure(7.0, 4.6)
    ax = fig.subplots()
    for value, name in zip(A.PAPER_FRACTIONS, FRACTION_NAMES):
        ax.axhline(value, color="tab:gray", lw=0.8, ls=":")
        ax.annotate(name, (1.0, value), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8, color="tab:gray")
    jitter = np.exp(np.random.default_rng(seed).uniform(-0.08, 0.08, dims.shape))
    ax.scatter((x[:, None] * jitter).ravel(), dims.ravel(), s=6, alpha=0.3, color="tab:blue", lw=0,
               label=r"$D_i$ per feature")
    if dstar is not None:
        _draw_dstar(ax, density, dstar, label=r"$D^*$")
    _log_x(ax)
    ax.set_xlabel("1/(1−S)  (inverse feature density, log)")
    ax.set_ylabel(r"feature dimensionality $D_i$")
    ax.set_ylim(-0.03, 1.1)
    _note_dense(ax, density)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "feature dimensionality")
    return fig


# --- feature geometry graphs ----------------------------------------------------------------------
def _component_layout(graph, components) -> dict:
    """Positions: components on a grid, largest first; a named structure's features on a circle
    (a pentagon looks like one), a bigger component by a weighted spring layout (its clusters show)."""
    comps = sorted(components, key=lambda c: (-len(c.features), c.features[0]))
    radii = [0.0 if len(c.features) == 1 else max(1.0, math.sqrt(len(c.features) / 8)) for c in comps]
    cols = max(1, math.ceil(math.sqrt(len(comps))))
    cell = 2 * max(radii, default=0.0) + 1.0
    pos = {}
    for slot, (comp, radius) in enumerate(zip(comps, radii)):
        centre = np.array([cell * (slot % cols), -cell * (slot // cols)])
        if len(comp.features) > max(size for size, _ in A.STRUCTURES):
            layout = nx.spring_layout(graph.subgraph(comp.features), weight="weight", seed=0, scale=radius)
            pos.update({i: centre + layout[i] for i in comp.features})
            continue
        angles = 2 * np.pi * np.arange(len(comp.features)) / len(comp.features) + np.pi / 2
        pos.update({i: centre + radius * np.array([np.cos(a), np.sin(a)]) for i, a in zip(comp.features, angles)})
    return pos


def _draw_geometry(ax, W, threshold: float) -> set:
    """One model's graph of represented features; returns the structure labels it drew."""
    graph = A.geometry_graph(W, threshold=threshold)
    comps = [c for c in A.geometry_components(W, threshold=threshold) if c.label != A.NOT_REPRESENTED]
    pos = _component_layout(graph, comps)
    edges = [(i, j, w) for i, j, w in graph.edges(data="weight") if i in pos and j in pos]
    alpha = min(0.8, 40 / max(len(edges), 1))  # a dense component stays a haze, not a solid disc
    ax.add_collection(LineCollection([(pos[i], pos[j]) for i, j, _ in edges], colors="#8a8a8a", alpha=alpha,
                                     linewidths=[0.3 + 2.2 * min(w, 1.0) for _, _, w in edges]))
    for comp in comps:
        xy = np.array([pos[i] for i in comp.features])
        ax.scatter(xy[:, 0], xy[:, 1], s=30 if len(pos) < 60 else 10, color=STRUCTURE_COLORS[comp.label],
                   zorder=3, edgecolors="white", linewidths=0.5)
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.margins(0.15)
    ax.set_axis_off()
    n_missing = graph.number_of_nodes() - len(pos)
    factors = f"{len(comps)} factor{'s' * (len(comps) != 1)}"
    ax.text(0.5, -0.02, f"{len(pos)} represented in {factors}; {n_missing} not represented",
            transform=ax.transAxes, ha="center", va="top", fontsize=8)
    return {c.label for c in comps}


def plot_geometry_graphs(Ws, labels=None, threshold: float = A.EDGE_THRESHOLD, title: str | None = None) -> Figure:
    """Feature-geometry graphs (nodes: represented features, edges |W_i·W_j| > threshold) side by side.

    Ws: a sequence of (m, n) matrices or a (k, m, n) array; labels: a title per panel.
    Nodes are coloured by the structure their component forms (analysis.geometry_components).
    """
    Ws = [A._single(W) for W in Ws]
    fig = _figure(3.2 * len(Ws) + 0.4, 3.9)
    axes = fig.subplots(1, len(Ws), squeeze=False)[0]
    seen = set()
    for k, (ax, W) in enumerate(zip(axes, Ws)):
        seen |= _draw_geometry(ax, W, threshold)
        if labels is not None:
            ax.set_title(str(labels[k]), fontsize=10)
    handles = [Patch(color=c, label=name) for name, c in STRUCTURE_COLORS.items() if name in seen]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8)
    fig.suptitle(title or "feature geometry graphs")
    return fig


# --- loss curves ----------------------------------------------------------------------------------
def plot_loss_curves(steps, losses, labels=None, color_by=None, color_label: str = "feature density 1−S",
                     title: str | None = None) -> Figure:
    """Loss against step per model (log y when positive).

    Up to FEW_CURVES models: one labelled line each. More: a sample of at most MAX_LOSS_CURVES thin
    lines, coloured by `color_by` (one value per model, e.g. density, log colour scale) when given,
    and the median over all models in black.
    """
    steps, losses = _numpy(steps).ravel(), np.atleast_2d(_numpy(losses))
    fig = _figure(6.6, 4.2)
    ax = fig.subplots()
    if len(losses) <= FEW_CURVES:
        for k, curve in enumerate(losses):
            ax.plot(steps, curve, lw=1.2, label=None if labels is None else str(labels[k]))
        if labels is not None:
            ax.legend(fontsize=7, ncol=2)
    else:
        pick = np.linspace(0, len(losses) - 1, min(MAX_LOSS_CURVES, len(losses))).astype(int)
        lines = LineCollection([np.column_stack([steps, losses[k]]) for k in pick], linewidths=0.6, alpha=0.35)
        values = None if color_by is None else _numpy(color_by).ravel()[pick]
        if values is not None and np.all(values > 0) and values.max() > values.min():
            lines.set_array(values)
            lines.set_cmap("viridis")
            lines.set_norm(LogNorm(values.min(), values.max()))
            fig.colorbar(lines, ax=ax, label=color_label)
        else:
            lines.set_color("tab:blue")
        ax.add_collection(lines)
        ax.plot(steps, np.nanmedian(losses, axis=0), color="black", lw=2, label=f"median of {len(losses)} models")
        ax.legend(fontsize=8)
        ax.autoscale_view()
    finite = losses[np.isfinite(losses)]
    if finite.size and finite.min() > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(r"loss  $\mathrm{mean}_{b,i}\, I_i (x_i - x'_i)^2$")
    ax.set_title(title or "training loss")
    return fig


# --- adversarial vulnerability --------------------------------------------------------------------
def plot_adversarial(density, vulnerability: dict, n_superposed, n_represented=None, title: str | None = None) -> Figure:
    """Vulnerability against 1/(1−S) beside the number of features in superposition (paper, section 4).

    density: (P,) one per grid point; vulnerability: name -> (P,) ratio of the ReLU model's worst-case
    output change to the linear model's (1 = as robust as no superposition); n_superposed (and
    optionally n_represented): (P,) feature counts of the same models.
    """
    x = 1.0 / _numpy(density).ravel()
    order = np.argsort(x)
    fig = _figure(10.0, 4.0)
    left, right = fig.subplots(1, 2)
    left.axhline(1.0, color="tab:gray", ls="--", lw=1, label="linear model")
    for (name, values), marker in zip(vulnerability.items(), "os^v"):
        left.plot(x[order], _numpy(values).ravel()[order], marker=marker, ms=4, lw=1.4, label=name)
    left.set_ylabel("vulnerability\n(worst-case output change ÷ linear model's)")
    left.legend(fontsize=8)
    right.plot(x[order], _numpy(n_superposed).ravel()[order], "o-", color="#ee7733", ms=4, lw=1.4,
               label="in superposition")
    if n_represented is not None:
        right.plot(x[order], _numpy(n_represented).ravel()[order], "s--", color="#4477aa", ms=3, lw=1,
                   label="represented")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("number of features")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("1/(1−S)  (inverse feature density, log)")
    fig.suptitle(title or "adversarial vulnerability and superposition")
    return fig


# --- correlated and anticorrelated features ------------------------------------------------------
SET_COLORS = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377")


def _draw_set_gram(ax, W, sets) -> None:
    """|cos(W_i, W_j)| of one model's features, ordered set by set (unlisted features last), set edges ruled:
    what a projection to the plane cannot show when m > 2 (a local orthogonal basis is a black block)."""
    order = [i for members in sets for i in members]
    order += [i for i in range(W.shape[1]) if i not in set(order)]
    V = W[:, order]
    norms = np.linalg.norm(V, axis=0)
    unit = V / np.where(norms > A.ZERO_NORM, norms, np.inf)
    ax.imshow(np.abs(unit.T @ unit), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    edge = np.cumsum([len(members) for members in sets])[:-1] - 0.5
    for e in edge:
        ax.axhline(e, color=SET_COLORS[0], lw=0.8)
        ax.axvline(e, color=SET_COLORS[0], lw=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_feature_sets(density, W, sets, kind: str, title: str | None = None) -> Figure:
    """W's columns in the plane per density (one panel each, densest first), coloured by feature set - for
    m > 2 the |cos| matrix of the features ordered by set instead - beside the mean |cos| between features of one set and of different sets against 1/(1−S) (analysis.set_cosines):
    correlated sets are expected to go orthogonal (within ~ 0), anticorrelated ones antipodal (within ~ 1).

    density: (K,); W: (K, m, n); sets: list of feature-index lists; kind: "correlated" | "anticorrelated".
    """
    W = _numpy(W)
    K, m, n = W.shape
    colors = ["0.55"] * n
    for j, members in enumerate(sets):
        for i in members:
            colors[i] = SET_COLORS[j % len(SET_COLORS)]
    within, across = A.set_cosines(W, sets)
    fig = _figure(2.0 + 1.9 * K, 3.4)
    grid = fig.add_gridspec(1, K + 2, width_ratios=[1.0] * K + [0.2, 2.0])
    dens = _numpy(density).ravel()
    for k in range(K):
        ax = fig.add_subplot(grid[0, k])
        if m <= 2:
            _draw_vectors(ax, W[k], colors=colors)
        else:
            _draw_set_gram(ax, W[k], sets)
        ax.set_title(density_label(float(dens[k])), fontsize=8)
    right = fig.add_subplot(grid[0, K + 1])
    x = 1.0 / dens
    order = np.argsort(x)
    right.plot(x[order], within[order], "o-", color="#ee6677", ms=4, label=f"same {kind} set")
    right.plot(x[order], across[order], "s--", color="0.4", ms=4, label="different sets")
    right.set_xscale("log")
    right.set_ylim(-0.03, 1.03)
    right.set_xlabel("1/(1−S)  (inverse feature density, log)")
    right.set_ylabel("mean |cos| between features")
    right.legend(fontsize=7)
    fig.suptitle(title or f"{kind} features: {', '.join(str(list(s)) for s in sets)}")
    return fig


# --- learning dynamics ---------------------------------------------------------------------------
def plot_learning_dynamics(snapshot_steps, dimensionality, loss_steps, loss, title: str | None = None,
                           label: str | None = None) -> Figure:
    """Every feature's dimensionality D_i over training (one line per feature, at the snapshot steps) above
    the loss curve, on a shared log-step axis (paper, "learning dynamics": D_i jumps between the
    fractions 1, 3/4, 2/3, 1/2, 2/5, ... as the loss drops in steps).

    snapshot_steps: (S,); dimensionality: (S, n); loss_steps: (L,); loss: (L,).
    """
    return plot_learning_dynamics_panels([(label, snapshot_steps, dimensionality, loss_steps, loss)], title)


def plot_learning_dynamics_panels(panels, title: str | None = None) -> Figure:
    """plot_learning_dynamics for several models side by side, one column each (e.g. one density per
    column: which levels the features pass through depends on the density).

    panels: [(label or None, snapshot_steps (S,), dimensionality (S, n), loss_steps (L,), loss (L,))].
    """
    fig = _figure(max(8.0, 4.2 * len(panels)), 6.0)
    axes = np.asarray(fig.subplots(2, len(panels), sharex="col", squeeze=False, height_ratios=[2.0, 1.0]))
    for col, (label, snapshot_steps, dimensionality, loss_steps, loss) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        steps = _numpy(snapshot_steps).ravel() + 1.0  # step 0 (the init) on a log axis
        D = _numpy(dimensionality)
        colors = colormaps["viridis"](np.linspace(0.0, 0.95, D.shape[1]))
        for i in range(D.shape[1]):
            top.plot(steps, D[:, i], color=colors[i], lw=0.8, alpha=0.8)
        for frac in A.PAPER_FRACTIONS:
            top.axhline(frac, color="0.8", lw=0.6, ls=":", zorder=0)
        top.set_ylim(-0.03, 1.05)
        if label:
            top.set_title(label, fontsize=9)
        bottom.plot(_numpy(loss_steps).ravel() + 1.0, _numpy(loss).ravel(), color="k", lw=1.0)
        bottom.set_yscale("log")
        bottom.set_xscale("log")
        bottom.set_xlabel("step + 1 (log)")
        if col == 0:
            top.set_ylabel("feature dimensionality $D_i$")
            bottom.set_ylabel("loss")
    fig.suptitle(title or "learning dynamics")
    return fig


# --- superposition in a privileged basis ---------------------------------------------------------
def plot_privileged_neurons(density, shares, n_polysemantic, title: str | None = None) -> Figure:
    """Per model (one column each, densest first): a stacked bar per hidden neuron of each feature's share
    of its squared positive input weight (analysis.neuron_feature_weights); beside them the number of
    polysemantic neurons against 1/(1−S) (paper, "superposition in a privileged basis").

    density: (K,); shares: (K, m, n); n_polysemantic: (K,).
    """
    shares = _numpy(shares)
    K, m, n = shares.shape
    x = 1.0 / _numpy(density).ravel()
    fig = _figure(2.0 + 1.6 * K, 4.2)
    grid = fig.add_gridspec(1, K + 2, width_ratios=[1.0] * K + [0.25, 2.2])
    colors = colormaps["viridis"](np.linspace(0.0, 0.95, n))
    for k in range(K):
        ax = fig.add_subplot(grid[0, k])
        bottom = np.zeros(m)
        for i in range(n):
            ax.bar(np.arange(m), shares[k, :, i], bottom=bottom, color=colors[i], width=0.8,
                   label=f"feature {i}" if k == 0 else None)
            bottom += shares[k, :, i]
        ax.set_ylim(0, 1.02)
        ax.set_xticks(np.arange(m))
        ax.set_xlabel("neuron")
        ax.set_title(f"{density_label(float(_numpy(density).ravel()[k]))}\n"
                     f"{int(_numpy(n_polysemantic)[k])} polysemantic", fontsize=8)
        if k:
            ax.set_yticklabels([])
        else:
            ax.set_ylabel("share of the neuron's squared input weight")
    fig.legend(loc="outside lower center", ncol=min(n, 10), fontsize=7, frameon=False)
    right = fig.add_subplot(grid[0, K + 1])
    order = np.argsort(x)
    right.plot(x[order], _numpy(n_polysemantic).ravel()[order], "o-", color="#ee7733", ms=4)
    right.set_xscale("log")
    right.set_xlabel("1/(1−S)  (inverse feature density, log)")
    right.set_ylabel(f"polysemantic neurons (top share < {A.MONOSEMANTIC_SHARE:g})")
    right.set_ylim(-0.3, m + 0.3)
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or "superposition in a privileged basis")
    return fig


# --- computation in superposition (|x| models) ---------------------------------------------------
ROLE_COLORS = {"dead": "#dddddd", "monosemantic": "#222222", "asymmetric": "#ee7733", "polysemantic": "#4477aa"}
COMPUTATION_MAX_FEATURES = 40  # a 40-neuron-high heatmap reads about this many feature columns


def _neuron_order(W: np.ndarray) -> np.ndarray:
    """Neurons sorted by the feature with the largest |weight|, then by that weight's sign (the ReLU(x) and
    ReLU(-x) neurons of one feature side by side), dead neurons last."""
    top = np.abs(W).argmax(axis=1)
    sign = np.sign(W[np.arange(len(W)), top])
    dead = np.abs(W).sum(axis=1) <= A.ZERO_NORM
    return np.lexsort((-sign, top, dead))


def plot_computation(density, W, title: str | None = None) -> Figure:
    """Per |x| model (one panel each, densest first): its encoder weights as a neurons x features heatmap,
    neurons sorted by their main feature and tagged by role (analysis.neuron_roles: monosemantic,
    asymmetric superposition, polysemantic, dead); beside them, against 1/(1-S), the features computed by
    their own neurons vs only in superposition and the neurons per role (analysis.computation_summary).

    density: (K,); W: (K, m, n) the encoders. Features past the last one any model uses (share >=
    FEATURE_SHARE in some neuron), at most COMPUTATION_MAX_FEATURES, are left out; the axis says so.
    """
    W = _numpy(W)
    K, m, n = W.shape
    used = (A.neuron_feature_weights(W, positive_only=False) >= A.FEATURE_SHARE).any(axis=(0, 1))
    shown = int(min(COMPUTATION_MAX_FEATURES, max(1, np.flatnonzero(used).max() + 1 if used.any() else n)))
    roles = A.neuron_roles(W)
    summary = A.computation_summary(W)
    dens = _numpy(density).ravel()
    fig = _figure(2.2 + 1.9 * K, 4.4)
    grid = fig.add_gridspec(1, K + 2, width_ratios=[1.0] * K + [0.25, 2.4])
    vmax = float(np.abs(W[:, :, :shown]).max()) or 1.0
    for k in range(K):
        ax = fig.add_subplot(grid[0, k])
        order = _neuron_order(W[k])
        image = ax.imshow(W[k][order][:, :shown], cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto",
                          interpolation="nearest", extent=(-0.5, shown - 0.5, m - 0.5, -0.5))
        ax.scatter(np.full(m, -1.6), np.arange(m), marker="s", s=10 if m > 12 else 30, clip_on=False,
                   color=[ROLE_COLORS[r] for r in roles[k][order]])
        ax.set_xlim(-2.2, shown - 0.5)
        ax.set_xticks([t for t in MaxNLocator(integer=True, nbins=5).tick_values(0, shown - 1) if 0 <= t < shown])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        ax.set_xlabel("feature i" if shown == n else f"feature i (first {shown} of {n})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(f"{density_label(float(dens[k]))}\n{int(summary['own_features'][k])} own, "
                     f"{int(summary['superposed_features'][k])} in sup.", fontsize=8)
        if k == 0:
            ax.set_ylabel("neuron (sorted by main feature)")
        else:
            ax.set_yticklabels([])
    fig.colorbar(image, ax=fig.axes[:K], label="weight feature → neuron", shrink=0.8, location="bottom", aspect=40)
    right = fig.add_subplot(grid[0, K + 1])
    x = 1.0 / dens
    order = np.argsort(x)
    right.plot(x[order], summary["own_features"][order], "o-", color="#222222", ms=4, label="features: own neurons")
    right.plot(x[order], summary["superposed_features"][order], "s-", color="#ee7733", ms=4,
               label="features: in superposition")
    for role, marker in (("asymmetric", "^"), ("polysemantic", "v")):
        right.plot(x[order], summary[f"{role}_neurons"][order], marker=marker, ls="--", color=ROLE_COLORS[role], ms=4,
                   lw=1, label=f"{role} neurons")
    right.set_xscale("log")
    right.set_xlabel("1/(1−S)  (inverse feature density, log)")
    right.set_ylabel("count")
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend(fontsize=7)
    handles = [Patch(color=ROLE_COLORS[r], label=f"{r} neuron") for r in A.NEURON_ROLES]
    fig.legend(handles=handles, loc="outside lower right", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(title or "computation in superposition: |x|")
    return fig


# --- finite datasets: double descent --------------------------------------------------------------
DOUBLE_DESCENT_PANELS = 5  # dataset sizes whose features and training examples are drawn
DOUBLE_DESCENT_LOSS_RANGE = 100.0  # the loss axis spans at most this factor below the lowest test loss


def _draw_directions(ax, vectors, color) -> None:
    """Columns of a (2, N) array as thin lines from the origin (thousands of them stay a fan, not a blot)."""
    v = np.concatenate([vectors, np.zeros((2 - len(vectors), vectors.shape[1]))]) if len(vectors) < 2 else vectors[:2]
    ax.add_collection(LineCollection([[(0, 0), tuple(c)] for c in v.T], colors=color,
                                     linewidths=1.2 if v.shape[1] <= 50 else 0.4, alpha=1.0 if v.shape[1] <= 50 else 0.5))
    ax.scatter(v[0], v[1], s=8 if v.shape[1] <= 50 else 1, color=color, zorder=3)
    lim = 1.15 * max(float(np.abs(v).max()), 1e-6)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def median_per_size(T: np.ndarray, values) -> tuple:
    """(sorted distinct T, median of `values` over the models (seeds) of each T)."""
    v = _numpy(values).ravel()
    sizes = np.unique(T)
    return sizes, np.array([np.nanmedian(v[T == t]) for t in sizes])


def _draw_per_size(ax, T, values, color, marker, label, **line_kwargs):
    """Every model as a small dot, the median over seeds per T as a line; returns the medians."""
    sizes, med = median_per_size(T, values)
    ax.scatter(T, _numpy(values).ravel(), s=7, color=color, alpha=0.35, lw=0)
    ax.plot(sizes, med, marker=marker, color=color, ms=4, label=label, **line_kwargs)
    return sizes, med


def double_descent_panels(sizes, peak: int, count: int = DOUBLE_DESCENT_PANELS) -> list:
    """Indices into the sorted distinct sizes to draw: the smallest, the peak, the largest and sizes
    halfway between them (both sides of the peak), without repeats."""
    last = len(sizes) - 1
    picks = [0, peak // 2, peak, (peak + last + 1) // 2, last] if count >= 5 else [0, peak, last]
    return sorted(set(picks))[:count]


def plot_double_descent(dataset_size, test_loss, train_loss, feature_dims, data_dims, panels, n_hidden: int = 2,
                        title: str | None = None) -> Figure:
    """The follow-up paper's figure: test loss (fresh samples) and training loss against the dataset size T,
    the norm-weighted dimensionality of the features vs of the training examples
    (analysis.weighted_dimensionality of W's columns and of the hidden vectors h_j = W x_j) beside m/T (a
    memorised T-gon), and for a few T the features' directions (W's columns, blue) above the training
    examples' hidden vectors (red).

    dataset_size, test_loss, train_loss, feature_dims, data_dims: (P,), one entry per model (seeds repeat
    a T: each model is a dot, the line is the median per T); panels: a list of (T, W (m, n), H (m, T))
    drawn left to right (m = 2 drawn as is; m > 2: the first two coordinates).
    """
    T = _numpy(dataset_size).ravel()
    fig = _figure(max(10.0, 2.1 * len(panels) + 0.5), 7.6)
    grid = fig.add_gridspec(3, max(len(panels), 2), height_ratios=[1.6, 1.0, 1.0])
    half = max(len(panels), 2) // 2
    left = fig.add_subplot(grid[0, :half])
    sizes, test = _draw_per_size(left, T, test_loss, "#d62728", "o", "test loss (fresh samples)")
    _draw_per_size(left, T, train_loss, "0.35", "s", "training loss", ls="--", lw=1)
    peak_T = sizes[int(np.nanargmax(test))]
    left.axvline(peak_T, color="#d62728", lw=0.8, ls=":")
    left.set_xscale("log")
    left.set_yscale("log")
    floor = np.nanmin(test) / DOUBLE_DESCENT_LOSS_RANGE  # a memorised set's ~1e-10 would flatten the peak
    if np.nanmin(_numpy(train_loss)) < floor:
        left.set_ylim(bottom=floor)
        left.text(0.98, 0.02, f"training loss below {floor:.0e} off scale (memorised)", transform=left.transAxes,
                  fontsize=7, ha="right")
    left.set_xlabel("dataset size T (log)")
    left.set_ylabel("loss")
    left.legend(fontsize=7, title=f"peak at T = {int(peak_T)}" + (" (median of seeds)" if len(sizes) < len(T) else ""),
                title_fontsize=7)
    right = fig.add_subplot(grid[0, half:])
    _draw_per_size(right, T, feature_dims, "#4477aa", "o", "features (W's columns)")
    _draw_per_size(right, T, data_dims, "#d62728", "s", "training examples ($h_j = W x_j$)")
    right.plot(sizes, n_hidden / sizes, ":", color="0.3", lw=1, label=f"m/T (T examples memorised as a T-gon, m = {n_hidden})")
    right.axvline(peak_T, color="#d62728", lw=0.8, ls=":")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("dataset size T (log)")
    right.set_ylabel(r"$\sum_j \|v_j\|^2 D_j \,/\, \sum_j \|v_j\|^2$ (log)")
    right.set_title("norm-weighted dimensionality", fontsize=9)
    right.legend(fontsize=7)
    for k, (t, W, H) in enumerate(panels):
        top, bottom = fig.add_subplot(grid[1, k]), fig.add_subplot(grid[2, k])
        _draw_directions(top, _numpy(W), "#4477aa")
        _draw_directions(bottom, _numpy(H), "#d62728")
        top.set_title(f"T = {int(t)}" + (" (peak)" if t == peak_T else ""), fontsize=8)
        if k == 0:
            top.set_ylabel("features $W_i$", fontsize=8)
            bottom.set_ylabel("training examples $h_j$", fontsize=8)
    fig.suptitle(title or "double descent: memorising examples vs learning features")
    return fig
