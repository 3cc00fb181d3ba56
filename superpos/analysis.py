"""Measurements of trained toy models: norms, superposition, dimensionality, geometry, phases, theory.

Metrics take W of shape (K, m, n), a torch tensor or a numpy array (column W[k, :, i] is feature i's
direction in model k), and return float64 numpy arrays with a leading K axis. The vectorised metrics
(feature_norms .. summary_metrics, classify_phase) also accept one (m, n) matrix and treat it as K = 1:
the result keeps its K = 1 axis. The geometry functions take one model's (m, n) matrix.

The paper's later sections: set_cosines (correlated / anticorrelated feature sets), neuron_feature_weights
and polysemantic_neurons (privileged basis), local_maps and adversarial_gain (exact worst-case output
change under small L2 / L-infinity attacks; the model is piecewise linear).

Everything reduces to two (K, n) quantities, ||W_i||^2 and sum_j (W_i . W_j)^2, computed as
W_i^T (W W^T) W_i so that memory is O(K m n), never O(K n^2) (n = 400 with thousands of models).
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

# --- thresholds (one place; plots and tests read them from here) ----------------------------------
ZERO_NORM = 1e-3
"""||W_i|| below this: the column is decayed noise whose direction means nothing, so D_i = 0 and its
superposition is 0. Far below any learned feature (norm ~1) and far above float32 round-off."""

REPRESENTED_NORM = 0.5
"""||W_i|| above this: the feature is represented. Learned features sit near 1, unlearned ones near 0
(the paper's ||W_i||^2 ~ 1 or ~ 0); halfway splits the two with the widest margin."""

EDGE_THRESHOLD = 0.1
"""|W_i . W_j| above this: an edge of the feature-geometry graph. The weakest overlap any listed
structure needs to stay connected is 1/3 (tetrahedron; the square antiprism's squares too), while
trained orthogonal factors keep residual overlaps of a few hundredths, so 0.1 sits between them."""

SPLIT_THRESHOLDS = (0.15, 0.2, 0.25, 0.3)
"""A component that forms no listed structure is split again with the edges above each of these in
turn (geometry_components): trained models of many features keep cross-factor overlaps of 0.1-0.3
that join their tetrahedra, triangles and pentagons into one component. The last stays below 1/3, the
weakest overlap inside a listed structure, so no listed structure is ever cut apart."""

RANK_TOL = 0.1
"""Singular values above RANK_TOL * the largest count toward the rank of a component's vectors: the
listed structures are tight frames (all nonzero singular values equal), so any tolerance well below
1 finds their rank, and 0.1 ignores a slight tilt out of the plane of a trained pentagon."""

DIM_RTOL = 0.15
"""A component of N features spanning d dimensions is a uniform structure when every member's D_i is
within 15% of d / N. Labels are picked by (N, d), so the tolerance only has to reject lopsided
arrangements, not to separate neighbouring fractions such as 2/5 and 3/8."""

SUPERPOSITION_THRESHOLD = 0.1
"""A feature is in superposition when sum_{j != i} (W^_i . W_j)^2 (classify_phase: over represented j
only) exceeds this: the candidate solutions give 0 (dedicated), 1/2 (triangle) or 1 (antipodal pair),
so the cut is far from all of them; 0.1 is a single overlap of cos ~ 0.3."""

PHASES = ("not learned", "dedicated", "superposition")

# (component size, rank) -> structure; members of a uniform structure have D_i = rank / size.
STRUCTURES = {
    (1, 1): "dedicated",
    (2, 1): "antipodal pair",
    (3, 2): "triangle",
    (4, 3): "tetrahedron",
    (5, 2): "pentagon",
    (8, 3): "square antiprism",
}
NOT_REPRESENTED = "not represented"
OTHER = "other"
# the fractions D_i cluster at in the paper (plots draw lines there)
PAPER_FRACTIONS = (1.0, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8, 1 / 3)


# --- input handling -------------------------------------------------------------------------------
def _as_numpy(W) -> np.ndarray:
    """float64 numpy copy of a torch tensor or array-like (analysis wants float64 round-off)."""
    if hasattr(W, "detach"):
        W = W.detach().cpu().double().numpy()
    return np.asarray(W, dtype=np.float64)


def _batch(W) -> np.ndarray:
    """(K, m, n) float64; a single (m, n) becomes K = 1."""
    W = _as_numpy(W)
    if W.ndim == 2:
        W = W[None]
    if W.ndim != 3:
        raise ValueError(f"W must have shape (K, m, n) or (m, n), got {W.shape}")
    return W


def _single(W) -> np.ndarray:
    """One model's (m, n) float64 matrix (a (1, m, n) batch is accepted too)."""
    W = _as_numpy(W)
    if W.ndim == 3 and W.shape[0] == 1:
        W = W[0]
    if W.ndim != 2:
        raise ValueError(f"W must be one model's (m, n) matrix, got shape {W.shape}")
    return W


def _norm_sq_and_interference(W: np.ndarray):
    """||W_i||^2 and sum_j (W_i . W_j)^2, both (K, n), without forming the (K, n, n) Gram matrix."""
    norm_sq = np.einsum("kmi,kmi->ki", W, W)
    M = W @ W.transpose(0, 2, 1)  # [K, m, m]
    return norm_sq, np.einsum("kmi,kmi->ki", M @ W, W)


def _safe_divide(num, den, where) -> np.ndarray:
    """num / den where `where`, else 0 (unrepresented columns get 0, not NaN)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=where)
    return out


def _dims_and_superposition(W: np.ndarray):
    """||W_i||^2, D_i and superposition_i, each (K, n); 0 for columns below ZERO_NORM."""
    norm_sq, inter = _norm_sq_and_interference(W)
    live = norm_sq > ZERO_NORM**2
    dims = _safe_divide(norm_sq**2, inter, live)
    sup = np.maximum(_safe_divide(inter - norm_sq**2, norm_sq, live), 0.0)
    return norm_sq, dims, sup


# --- per-feature and per-model metrics ------------------------------------------------------------
def feature_norms(W) -> np.ndarray:
    """(K, n) ||W_i||: ~1 for a represented feature, ~0 for one the model dropped."""
    W = _batch(W)
    return np.sqrt(np.einsum("kmi,kmi->ki", W, W))


def superposition(W) -> np.ndarray:
    """(K, n) sum_{j != i} (W^_i . W_j)^2: how much other features leak into feature i's direction.

    0 for an orthogonal (or unrepresented, ||W_i|| < ZERO_NORM) feature, 1 for each antipodal partner.
    """
    return _dims_and_superposition(_batch(W))[2]


def feature_dimensionality(W) -> np.ndarray:
    """(K, n) D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2 = ||W_i||^4 / sum_j (W_i . W_j)^2 (j = i included).

    The fraction of a dimension feature i gets: 1 dedicated, 1/2 antipodal pair, 2/5 pentagon, ...
    D_i = 0 where ||W_i|| < ZERO_NORM (the paper's value for an unlearned feature).
    """
    return _dims_and_superposition(_batch(W))[1]


def total_dimensionality(W) -> np.ndarray:
    """(K,) sum_i D_i: equals m when features are packed efficiently (paper)."""
    return feature_dimensionality(W).sum(axis=1)


def frobenius_sq(W) -> np.ndarray:
    """(K,) ||W||_F^2: roughly the number of features a model represents."""
    W = _batch(W)
    return np.einsum("kmi,kmi->k", W, W)


def dimensions_per_feature(W) -> np.ndarray:
    """(K,) D* = m / ||W||_F^2, the paper's "dimensions per feature"; NaN for an all-zero W."""
    W = _batch(W)
    return _dstar(W.shape[1], frobenius_sq(W))


def _dstar(m: int, fro: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(fro > 0, m / fro, np.nan)


def summary_metrics(W) -> dict:
    """Per-model columns for a sweep's results table, each a (K,) numpy array.

    dims_per_feature (D*), frobenius_sq, n_represented (||W_i|| > REPRESENTED_NORM),
    mean_dimensionality (mean D_i over represented features; NaN if none), total_dimensionality,
    n_superposed (represented features whose superposition exceeds SUPERPOSITION_THRESHOLD).
    """
    W = _batch(W)
    norm_sq, dims, sup = _dims_and_superposition(W)
    represented = norm_sq > REPRESENTED_NORM**2
    n_rep = represented.sum(axis=1)
    fro = norm_sq.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_dim = np.where(n_rep > 0, (dims * represented).sum(axis=1) / n_rep, np.nan)
    return {
        "dims_per_feature": _dstar(W.shape[1], fro),
        "frobenius_sq": fro,
        "n_represented": n_rep.astype(np.int64),
        "mean_dimensionality": mean_dim,
        "total_dimensionality": dims.sum(axis=1),
        "n_superposed": (represented & (sup > SUPERPOSITION_THRESHOLD)).sum(axis=1).astype(np.int64),
    }


# --- feature geometry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    """A tegum factor: features that interfere with each other and with no one else."""

    features: tuple  # feature indices, ascending
    label: str  # one of STRUCTURES' values, NOT_REPRESENTED or OTHER
    rank: int  # dimensions the features span (0 when not represented)
    dimensionality: tuple  # D_i of each member, in `features` order


def geometry_graph(W, threshold: float = EDGE_THRESHOLD, represented: float = REPRESENTED_NORM) -> nx.Graph:
    """The paper's feature-geometry graph of one model (W of shape (m, n)).

    Nodes are all n features (attributes: norm, dimensionality, represented); an edge joins two
    represented features (norm > `represented`) whose |W_i . W_j| > `threshold`, weight |W_i . W_j|
    (attribute `dot` keeps the sign).
    """
    W = _single(W)
    norms = np.linalg.norm(W, axis=0)
    dims = feature_dimensionality(W)[0]
    G = nx.Graph()
    for i in range(W.shape[1]):
        G.add_node(i, norm=float(norms[i]), dimensionality=float(dims[i]), represented=bool(norms[i] > represented))
    live = np.flatnonzero(norms > represented)
    gram = W[:, live].T @ W[:, live]
    for a, b in zip(*np.triu_indices(len(live), k=1)):
        if abs(gram[a, b]) > threshold:
            G.add_edge(int(live[a]), int(live[b]), weight=float(abs(gram[a, b])), dot=float(gram[a, b]))
    return G


def _rank(vectors: np.ndarray) -> int:
    """Number of directions the columns span, singular values below RANK_TOL * largest ignored."""
    s = np.linalg.svd(vectors, compute_uv=False)
    return int((s > RANK_TOL * s[0]).sum()) if s.size and s[0] > 0 else 0


def _label(vectors: np.ndarray, dims: np.ndarray, rank: int) -> str:
    """Name of the structure a component of represented features forms (see STRUCTURES)."""
    size = vectors.shape[1]
    name = STRUCTURES.get((size, rank))
    if name is None or not np.all(np.abs(dims - rank / size) <= DIM_RTOL * rank / size):
        return OTHER
    if name == "antipodal pair" and vectors[:, 0] @ vectors[:, 1] >= 0:
        return OTHER  # two features along one line but the same way round: not antipodal
    return name


def geometry_components(W, threshold: float = EDGE_THRESHOLD, represented: float = REPRESENTED_NORM) -> list:
    """Connected components of geometry_graph(W), each labelled by the structure it forms.

    A component of N represented features spanning d dimensions (rank, RANK_TOL) is a dedicated
    dimension, antipodal pair, triangle, tetrahedron, pentagon or square antiprism when (N, d) is
    (1, 1), (2, 1), (3, 2), (4, 3), (5, 2) or (8, 3) and every member has D_i = d/N within DIM_RTOL.
    A component that is none of these is split along its stronger edges (SPLIT_THRESHOLDS, weakest
    first, thresholds above `threshold` only) and its parts labelled the same way, so structures that
    weak cross-talk joins are still found; what no split resolves is "other". Each unrepresented
    feature is its own "not represented" component. Returns a list of Component sorted by first feature.
    """
    W = _single(W)
    G = geometry_graph(W, threshold, represented)
    splits = tuple(t for t in SPLIT_THRESHOLDS if t > threshold)
    out = []
    for nodes in nx.connected_components(G):
        feats = tuple(sorted(nodes))
        if not G.nodes[feats[0]]["represented"]:
            out.append(Component(feats, NOT_REPRESENTED, 0, (G.nodes[feats[0]]["dimensionality"],)))
            continue
        out.extend(_labelled_parts(W, G, feats, splits))
    return sorted(out, key=lambda c: c.features[0])


def _labelled_parts(W, G, feats: tuple, splits: tuple) -> list:
    """[Component] for the represented features `feats`: one if they form a listed structure (or no
    split is left), else the parts of the first threshold in `splits` that cuts them, labelled in turn."""
    dims = tuple(G.nodes[i]["dimensionality"] for i in feats)
    vectors = W[:, list(feats)]
    rank = _rank(vectors)
    label = _label(vectors, np.array(dims), rank)
    if label != OTHER or len(feats) == 1:
        return [Component(feats, label, rank, dims)]
    for k, t in enumerate(splits):
        strong = nx.Graph()
        strong.add_nodes_from(feats)
        strong.add_edges_from((i, j) for i, j, w in G.subgraph(feats).edges(data="weight") if w > t)
        parts = [tuple(sorted(p)) for p in nx.connected_components(strong)]
        if len(parts) > 1:
            found = [c for p in parts for c in _labelled_parts(W, G, p, splits[k + 1:])]
            if any(c.label != OTHER for c in found):
                return found
            break
    return [Component(feats, OTHER, rank, dims)]


def feature_structure(W, **kwargs) -> np.ndarray:
    """(n,) label of the component each feature belongs to (geometry_components' labels)."""
    W = _single(W)
    labels = np.empty(W.shape[1], dtype=object)
    for comp in geometry_components(W, **kwargs):
        labels[list(comp.features)] = comp.label
    return labels.astype(str)


# --- phases of the n=2, m=1 and n=3, m=2 diagrams -------------------------------------------------
def classify_phase(W) -> np.ndarray:
    """(K,) phase of each model from what happens to its last (the "extra") feature.

    "not learned":   ||W_last|| <= REPRESENTED_NORM;
    "dedicated":     represented, and sum_j (W^_last . W_j)^2 over the other *represented* features is
                     <= SUPERPOSITION_THRESHOLD (nearly orthogonal to all of them);
    "superposition": represented and sharing a direction with another represented feature.
    Only represented partners count so that the phase is symmetric: training often stops at
    W = [1, 0.42] (extra feature half-learned: "not learned"), and its mirror [0.42, 1] is then
    "dedicated", not "superposition".
    """
    W = _batch(W)
    norms = feature_norms(W)
    last = W[:, :, -1]
    dots = np.einsum("km,kmj->kj", last, W[:, :, :-1])
    partners = norms[:, :-1] > REPRESENTED_NORM
    represented = norms[:, -1] > REPRESENTED_NORM
    shared = _safe_divide((dots**2 * partners).sum(axis=1), norms[:, -1] ** 2, represented)
    phase = np.where(shared > SUPERPOSITION_THRESHOLD, "superposition", "dedicated")
    return np.where(represented, phase, "not learned").astype("<U13")


# --- closed-form theory of the n=2, m=1 phase diagram ---------------------------------------------
# Feature 1 has importance 1, feature 2 (the extra one) importance r; each is nonzero with probability
# p, then Uniform[0, 1). Loss = mean over the 2 features of I_i E[(x_i - x'_i)^2] (the notebook's mean,
# i.e. the paper's per-sample sum divided by n = 2). Candidates and their optimal biases:
#   W = [1, 0] ("not learned"):   x'_1 = ReLU(x_1 + 0) = x_1 exactly; x'_2 = ReLU(b_2), best b_2 = E x_2 = p/2,
#                                 leaving Var x_2 = p/3 - p^2/4.  Loss r Var / 2.
#   W = [0, 1] ("dedicated"):     the mirror image.                  Loss Var / 2.
#   W = [1, -1] ("superposition"): x'_1 = ReLU(x_1 - x_2 + b_1), x'_2 = ReLU(x_2 - x_1 + b_2). The two
#       terms are the same function f of their own bias (x_1, x_2 are iid), so b_1 = b_2 = argmin f and
#       the loss is (1 + r) min_b f(b) / 2, with f in closed form below and minimised numerically.
N2M1_SOLUTIONS = {"not learned": (1.0, 0.0), "dedicated": (0.0, 1.0), "superposition": (1.0, -1.0)}


def _offset_error(c):
    """E_u (u - ReLU(u + c))^2, u ~ U[0,1): a present feature read back with additive offset c."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c < -1, 1 / 3, c**2 + (2 / 3) * np.minimum(c, 0.0) ** 3)


def _offset_error_integral(c):
    """An antiderivative of _offset_error (for averaging the offset over the other feature's value)."""
    c = np.asarray(c, dtype=np.float64)
    inner = c**3 / 3 + np.where(c < 0, c**4 / 6, 0.0)
    return np.where(c < -1, -1 / 6 + (c + 1) / 3, inner)


def _superposed_error(b, p):
    """f(b) = E (x_1 - ReLU(x_1 - x_2 + b))^2 for b in [-1, 1], split by which features are present."""
    relu_b = np.maximum(b, 0.0)
    neither = relu_b**2
    own_only = _offset_error(b)
    other_only = relu_b**3 / 3  # E_v ReLU(b - v)^2
    both = _offset_error_integral(b) - _offset_error_integral(b - 1)  # E_v _offset_error(b - v)
    q = 1 - p
    return q * q * neither + p * q * (own_only + other_only) + p * p * both


def _superposed_optimum(p: np.ndarray):
    """(b*, f(b*)) for each p: a 401-point grid over [-1, 1] (outside it f only grows or is flat),
    then golden-section search in the bracket around the best grid point, to ~1e-12.
    Solved once per distinct p (a phase-diagram grid repeats each p for every r)."""
    p = np.asarray(p, dtype=np.float64)
    unique, inverse = np.unique(p, return_inverse=True)
    b, f = _superposed_optimum_unique(unique)
    return b[inverse].reshape(p.shape), f[inverse].reshape(p.shape)


def _superposed_optimum_unique(p: np.ndarray):
    grid = np.linspace(-1.0, 1.0, 401)
    vals = _superposed_error(grid[:, None], p)
    step = grid[1] - grid[0]
    centre = grid[np.argmin(vals, axis=0)]
    lo, hi = np.maximum(centre - step, -1.0), np.minimum(centre + step, 1.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        left = _superposed_error(x1, p) <= _superposed_error(x2, p)
        lo, hi = np.where(left, lo, x1), np.where(left, x2, hi)
    b = (lo + hi) / 2
    return b, _superposed_error(b, p)


def _check_density(p):
    p = np.asarray(p, dtype=np.float64)
    if not np.all((p > 0) & (p <= 1)):
        raise ValueError("p (feature probability) must be in (0, 1]")
    return p


def theory_biases_n2m1(p) -> dict:
    """Optimal biases (..., 2) of the three n=2, m=1 candidates at density p (see N2M1_SOLUTIONS)."""
    p = _check_density(p)
    b_sup, _ = _superposed_optimum(p)
    zero = np.zeros_like(p)
    return {"not learned": np.stack([zero, p / 2], -1),
            "dedicated": np.stack([p / 2, zero], -1),
            "superposition": np.stack([b_sup, b_sup], -1)}


def theory_losses_n2m1(p, r) -> dict:
    """Expected loss of each n=2, m=1 candidate with its optimal bias, keyed by the phase it stands for.

    p: density of both features; r: importance of the extra feature (feature 1 has importance 1).
    Broadcasts p and r; loss is the notebook's mean over the two features (see the comment above).
    """
    p = _check_density(p)
    r = np.asarray(r, dtype=np.float64)
    if np.any(~np.isfinite(r) | (r < 0)):
        raise ValueError("r (relative importance) must be finite and >= 0")
    p, r = np.broadcast_arrays(p, r)
    var = p / 3 - p**2 / 4
    _, f_sup = _superposed_optimum(p)
    return {"not learned": r * var / 2, "dedicated": var / 2, "superposition": (1 + r) * f_sup / 2}


def theory_phase_n2m1(p, r) -> np.ndarray:
    """Phase with the lowest theoretical loss at each (p, r); ties go to the earlier of PHASES."""
    losses = theory_losses_n2m1(p, r)
    stacked = np.stack([losses[name] for name in PHASES])
    return np.asarray(PHASES)[np.argmin(stacked, axis=0)].astype("<U13")


# --- correlated and anticorrelated feature sets (section 2) ---------------------------------------
def _check_sets(sets, n: int) -> list:
    """`sets`: disjoint, non-empty lists of feature indices in [0, n)."""
    if not isinstance(sets, (list, tuple)) or not sets:
        raise ValueError(f"sets must be a non-empty list of lists of feature indices, got {sets!r}")
    out, seen = [], set()
    for s in sets:
        members = [int(i) for i in s] if isinstance(s, (list, tuple, np.ndarray)) else None
        if not members or any(not 0 <= i < n for i in members) or len(set(members)) != len(members):
            raise ValueError(f"sets: each set must be a non-empty list of distinct indices in [0, {n}), got {s!r}")
        if seen & set(members):
            raise ValueError(f"sets: feature {sorted(seen & set(members))[0]} is in more than one set")
        seen |= set(members)
        out.append(members)
    return out


def set_cosines(W, sets):
    """(within, across), each (K,): mean |cos(W_i, W_j)| over pairs i < j in the same set / in different sets.

    Correlated features prefer orthogonal directions (within ~ 0) and anticorrelated ones antipodal
    directions (within ~ 1); across-set pairs are what the sets are compared with. Only features in
    some set count; a column below ZERO_NORM has no direction and is left out of every pair. NaN where
    no pair of the kind is left.
    """
    W = _batch(W)
    sets = _check_sets(sets, W.shape[2])
    members = np.concatenate([np.asarray(s) for s in sets])
    label = np.concatenate([np.full(len(s), k) for k, s in enumerate(sets)])
    V = W[:, :, members]
    norms = np.linalg.norm(V, axis=1)  # [K, N]
    live = norms > ZERO_NORM
    unit = V / np.where(live, norms, 1.0)[:, None, :]
    cos = np.abs(unit.transpose(0, 2, 1) @ unit)  # [K, N, N]
    pair = np.triu(np.ones((len(members),) * 2, dtype=bool), k=1)
    same = label[:, None] == label[None, :]
    both = live[:, :, None] & live[:, None, :] & pair
    out = []
    for kind in (same, ~same):
        mask = both & kind
        count = mask.sum(axis=(1, 2))
        with np.errstate(invalid="ignore"):
            out.append(np.where(count > 0, (cos * mask).sum(axis=(1, 2)) / np.maximum(count, 1), np.nan))
    return out[0], out[1]


# --- privileged basis: neurons and features (section 5) -------------------------------------------
MONOSEMANTIC_SHARE = 0.9
"""A live neuron is monosemantic when one feature holds at least this share of its (positive) squared
input weight, polysemantic otherwise. At 0.9 a second feature's weight is at most 1/3 of the first's
(sqrt(0.1/0.9)); the decayed leftovers on unused features (~0.05 each) stay far below that."""


def neuron_feature_weights(W, positive_only: bool = True) -> np.ndarray:
    """(K, m, n) share of neuron j's squared input weight that feature i holds: w_ji^2 / sum_i w_ji^2.

    W[k, j, i] is the weight from feature i to hidden neuron j (the privileged-basis model
    h = ReLU(W x)). With positive_only (default) negative weights count as 0: inputs are
    non-negative, so a neuron fires for feature i only through a positive weight. Rows of a dead
    neuron (squared weight below ZERO_NORM^2) are all 0, others sum to 1 (the stacked bars).
    """
    W = _batch(W)
    w2 = np.maximum(W, 0.0) ** 2 if positive_only else W**2
    total = w2.sum(axis=2, keepdims=True)
    return _safe_divide(w2, total, total > ZERO_NORM**2)


def polysemantic_neurons(W, share: float = MONOSEMANTIC_SHARE, positive_only: bool = True) -> np.ndarray:
    """(K,) number of live neurons whose largest feature share (neuron_feature_weights) is below `share`."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    shares = neuron_feature_weights(W, positive_only)
    top = shares.max(axis=2)
    live = shares.sum(axis=2) > 0
    return (live & (top < share)).sum(axis=1).astype(np.int64)


# --- adversarial vulnerability (section 4) --------------------------------------------------------
MAX_EXACT_LINF_FEATURES = 22
"""The L-infinity gain enumerates sign vectors of the features a local map reads (2^(n-1) of them);
above this many it would take minutes per model, so it is refused rather than approximated."""
_SIGN_CHUNK = 1 << 14


def single_feature_inputs(n: int, value: float = 1.0) -> np.ndarray:
    """(n, n) the inputs adversarial_gain uses by default: feature i alone at `value`, for each i.

    A sparse model mostly sees one active feature at a time; value 1 (the top of Uniform[0, 1)) is
    where every represented feature is read out past its (negative) bias."""
    return value * np.eye(n)


def local_maps(W, b, inputs, activation: str = "relu") -> np.ndarray:
    """(K, B, n, n) the model's Jacobian dx'/dx at each input: diag(act'(W^T W x + b)) W^T W.

    Exact where the model is differentiable: it is piecewise linear, and the map holds for every
    perturbation that does not move an output's pre-activation across 0. ReLU'(0) is taken as 0.
    `inputs`: (B, n) shared by every model, or (K, B, n).
    """
    W, b = _batch(W), _as_numpy(b)
    K, _, n = W.shape
    if activation not in ("relu", "linear"):
        raise ValueError(f"activation must be 'relu' or 'linear', got {activation!r}")
    b = b[None] if b.ndim == 1 else b
    if b.shape != (K, n):
        raise ValueError(f"b must have shape ({K}, {n}) to match W, got {b.shape}")
    x = _as_numpy(inputs)
    if x.ndim == 2:
        x = np.broadcast_to(x, (K,) + x.shape)
    if x.ndim != 3 or x.shape[0] != K or x.shape[2] != n:
        raise ValueError(f"inputs must have shape (B, {n}) or ({K}, B, {n}), got {x.shape}")
    gram = W.transpose(0, 2, 1) @ W  # [K, n, n]
    if activation == "linear":
        return np.broadcast_to(gram[:, None], (K, x.shape[1], n, n))
    active = (x @ gram + b[:, None, :]) > 0  # [K, B, n]: gram is symmetric, so x @ gram = (gram x)^T
    return active[..., None] * gram[:, None]


def _max_over_signs(J: np.ndarray) -> float:
    """max over s in {-1, 1}^n of ||J s||_2 = ||J||_{inf->2}, by enumeration (exact)."""
    J = J[np.abs(J).sum(axis=1) > 0]  # outputs the map never moves
    J = J[:, np.abs(J).sum(axis=0) > 0]  # inputs it never reads
    if J.size == 0:
        return 0.0
    if J.shape[0] == 1:
        return float(np.abs(J).sum())  # one output: pick every sign to add up
    n = J.shape[1]
    if n > MAX_EXACT_LINF_FEATURES:
        raise ValueError(f"the exact L-infinity gain enumerates 2^(n-1) signs; a local map reads {n} features "
                         f"(at most {MAX_EXACT_LINF_FEATURES})")
    best = 0.0
    total = 1 << (n - 1)  # s and -s give the same norm: fix the last sign to +1
    bits = np.arange(n - 1, dtype=np.int64)
    for start in range(0, total, _SIGN_CHUNK):
        codes = np.arange(start, min(total, start + _SIGN_CHUNK), dtype=np.int64)
        signs = np.ones((n, len(codes)))
        signs[:-1] = 1.0 - 2.0 * ((codes[None, :] >> bits[:, None]) & 1)
        best = max(best, float(np.sqrt(((J @ signs) ** 2).sum(axis=0).max())))
    return best


def adversarial_gain(W, b, activation: str = "relu", inputs=None, norm: str = "l2") -> np.ndarray:
    """(K, B) worst-case output change per unit of input perturbation, at each input (exact).

    For an attack delta with ||delta||_p <= eps the output moves by at most eps * ||J(x)||_{p->2},
    J(x) = local_maps(...) the model's Jacobian at x, and the bound is attained: exactly, for every eps
    small enough that x + delta stays in x's linear region (no output's pre-activation crosses 0).
    norm "l2": ||J||_2, the largest singular value. norm "linf": max over sign vectors s of ||J s||_2,
    found by enumerating them (exact; see MAX_EXACT_LINF_FEATURES). The attack may make inputs negative.
    inputs: default single_feature_inputs(n); (B, n) or (K, B, n).

    A linear model of the same shape that stores m features orthogonally (W^T W a projection) has gain
    1 (L2) and sqrt(m) (L-infinity, m features along the axes) at every input: adversarial vulnerability
    is the ratio to it (in the experiment, to the trained linear models at the same sparsity).
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    W = _batch(W)
    J = local_maps(W, b, single_feature_inputs(W.shape[2]) if inputs is None else inputs, activation)
    if norm == "l2":
        return np.linalg.norm(J, ord=2, axis=(-2, -1))
    out = np.empty(J.shape[:2])
    for k in range(J.shape[0]):
        cache = {}  # the same active set gives the same map (a linear model: one map for all inputs)
        for i in range(J.shape[1]):
            key = J[k, i].tobytes()
            if key not in cache:
                cache[key] = _max_over_signs(J[k, i])
            out[k, i] = cache[key]
    return out


# --- computation in superposition: the |x| models (section 6) -------------------------------------
FEATURE_SHARE = 0.05
"""A feature takes part in a neuron when it holds at least this share of the neuron's squared input
weight: in a two-feature neuron, |w| at least 0.23 of the top feature's. A trained neuron's decayed
leftovers on the ~100 unused features are ~0.01 each, well below it."""

ASYMMETRY_RATIO = 2.0
"""A neuron shared by two features is asymmetric when the larger |weight| is at least this many times
the smaller: the paper's motif stores one feature strongly and the other weakly, while symmetric
superposition gives both about the same weight."""

NEURON_ROLES = ("dead", "monosemantic", "asymmetric", "polysemantic")


def neuron_roles(W) -> np.ndarray:
    """(K, m) role of each hidden neuron of an |x| model (W: the encoder, W[k, j, i] feature i -> neuron j).

    Inputs are in [-1, 1), so a weight of either sign makes a neuron fire; shares are of the squared
    weight (neuron_feature_weights(positive_only=False)). "dead": no weight (below ZERO_NORM);
    "asymmetric": exactly two features hold >= FEATURE_SHARE and the larger |weight| is >= ASYMMETRY_RATIO
    times the smaller (checked first: the weak partner may leave the strong one >= MONOSEMANTIC_SHARE);
    "monosemantic": otherwise one feature holds >= MONOSEMANTIC_SHARE; else "polysemantic".
    """
    W = _batch(W)
    shares = neuron_feature_weights(W, positive_only=False)  # [K, m, n]
    live = shares.sum(axis=2) > 0
    top = np.sort(shares, axis=2)[:, :, ::-1]
    taking_part = (shares >= FEATURE_SHARE).sum(axis=2)
    # shares are w^2 / sum w^2, so the |weight| ratio of the two largest is sqrt(top0 / top1)
    ratio = np.sqrt(_safe_divide(top[:, :, 0], top[:, :, 1], top[:, :, 1] > 0))
    asym = (taking_part == 2) & (ratio >= ASYMMETRY_RATIO)
    roles = np.where(asym, "asymmetric", np.where(top[:, :, 0] >= MONOSEMANTIC_SHARE, "monosemantic", "polysemantic"))
    return np.where(live, roles, "dead").astype("<U12")


def feature_computation(W) -> dict:
    """How each feature of an |x| model is computed, from its encoder W (K, m, n); each value (K, n) int.

    own_neurons: monosemantic neurons whose feature it is (2 computes |x| exactly: ReLU(x) + ReLU(-x));
    shared_neurons: non-monosemantic neurons it takes part in (share >= FEATURE_SHARE).
    A feature with own_neurons > 0 is "computed by its own neurons", one with only shared neurons is
    "computed in superposition" (summary counts: computation_summary).
    """
    W = _batch(W)
    shares = neuron_feature_weights(W, positive_only=False)
    roles = neuron_roles(W)
    mono = (roles == "monosemantic")[:, :, None] & (shares >= MONOSEMANTIC_SHARE)
    shared = ((roles == "asymmetric") | (roles == "polysemantic"))[:, :, None] & (shares >= FEATURE_SHARE)
    return {"own_neurons": mono.sum(axis=1).astype(np.int64), "shared_neurons": shared.sum(axis=1).astype(np.int64)}


def computation_summary(W) -> dict:
    """(K,) counts per |x| model: features computed by their own neurons, features computed only in
    superposition, and neurons per role (NEURON_ROLES)."""
    comp = feature_computation(W)
    roles = neuron_roles(W)
    own = comp["own_neurons"] > 0
    out = {"own_features": own.sum(axis=1), "superposed_features": (~own & (comp["shared_neurons"] > 0)).sum(axis=1)}
    out.update({f"{role}_neurons": (roles == role).sum(axis=1) for role in NEURON_ROLES})
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


# --- finite datasets: memorisation and double descent (Henighan et al. 2023) ----------------------
def reconstruction_loss(W, b, x, importance=1.0, activation: str = "relu") -> np.ndarray:
    """(K,) the training objective of tied models on a given batch: mean over samples and features of
    I_i (x_i - act(W^T W x + b)_i)^2. On fresh samples it is the test loss of the double-descent figure.

    W: (K, m, n); b: (K, n); x: (B, n) shared by every model or (K, B, n); importance: scalar, (n,) or (K, n).
    """
    W, b = _batch(W), _as_numpy(b)
    K, _, n = W.shape
    b = b[None] if b.ndim == 1 else b
    x = _as_numpy(x)
    x = np.broadcast_to(x, (K,) + x.shape) if x.ndim == 2 else x
    if b.shape != (K, n) or x.ndim != 3 or x.shape[0] != K or x.shape[2] != n:
        raise ValueError(f"b must be ({K}, {n}) and x (B, {n}) or ({K}, B, {n}), got {b.shape} and {x.shape}")
    if activation not in ("relu", "linear"):
        raise ValueError(f"activation must be 'relu' or 'linear', got {activation!r}")
    z = (x @ W.transpose(0, 2, 1)) @ W + b[:, None, :]  # [K, B, n]
    out = np.maximum(z, 0.0) if activation == "relu" else z
    imp = np.broadcast_to(_as_numpy(importance), (K, n)) if np.ndim(importance) < 2 else _as_numpy(importance)
    return np.einsum("kbi,ki->k", (x - out) ** 2, imp) / (x.shape[1] * n)


def hidden_vectors(W, x) -> np.ndarray:
    """(K, m, B) h = W x of each sample (columns), e.g. of a model's training examples: (B, n) or (K, B, n)."""
    W = _batch(W)
    x = _as_numpy(x)
    x = np.broadcast_to(x, (W.shape[0],) + x.shape) if x.ndim == 2 else x
    return W @ x.transpose(0, 2, 1)


def data_dimensionality(W, x) -> np.ndarray:
    """(K, B) the follow-up paper's dimensionality of each training example: feature_dimensionality with
    the hidden vectors h_j = W x_j in place of the features' columns, ||h_j||^4 / sum_k (h_j . h_k)^2.
    Near 1/T-fractions (e.g. 1/2, 2/5) when the model memorises examples in superposition, ~0 when it
    stores features instead."""
    return feature_dimensionality(hidden_vectors(W, x))


def weighted_dimensionality(vectors) -> np.ndarray:
    """(K,) the norm-weighted mean dimensionality sum_j ||v_j||^2 D_j / sum_j ||v_j||^2 of the columns
    of (K, m, N) vectors: W's columns (features) or hidden_vectors (training examples); NaN when all are 0.

    The unweighted sum of D is ~m for any columns that span the space (each T-gon of examples, and the
    ~0-norm columns of unlearned features pad it), so it cannot tell memorising from generalising; weighted
    by norm, the measure is the D of the columns that carry the model: m/T when the T training examples
    form a T-gon (memorised), ~0 for features then (many share each example's direction), and e.g. 2/5
    for features on a pentagon (generalising) while the examples' D falls toward 0."""
    V = _batch(vectors)
    norm_sq, dims, _ = _dims_and_superposition(V)
    total = norm_sq.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (norm_sq * dims).sum(axis=1) / total, np.nan)
