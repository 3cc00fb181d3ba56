"""Structure labels of hand-built geometries embedded in a larger model with the weak cross-talk between
tegum factors that trained models keep (the geometry graphs of a real n=200, m=20 run showed one
"other" component where D_i clustered at 3/4, 2/3 and 2/5)."""
import networkx as nx
import numpy as np
import pytest

from superpos import analysis as A
from test_analysis import STRUCTURES, block_diagonal, random_rotation

LAYOUT = ["tetrahedron", "triangle", "pentagon", "antipodal pair", "antipodal pair", "antipodal pair",
          "square antiprism", "dedicated", "dedicated"]
N_DROPPED = 7


def embedded(crosstalk: float, seed: int = 0):
    """(W, expected labels): the LAYOUT's structures in orthogonal subspaces of m = 20 dimensions, plus
    N_DROPPED unlearned features, then tilted by (I + crosstalk * E) (E a fixed random matrix scaled to
    unit spectral norm) so that factors overlap weakly, rotated, and features shuffled."""
    blocks = [STRUCTURES[name][0] for name in LAYOUT]
    W = block_diagonal(*blocks)
    m = 20
    W = np.concatenate([np.pad(W, ((0, m - W.shape[0]), (0, 0))), np.zeros((m, N_DROPPED))], axis=1)
    labels = [name for name, b in zip(LAYOUT, blocks) for _ in range(b.shape[1])] + [A.NOT_REPRESENTED] * N_DROPPED
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(m, m))
    W = (np.eye(m) + crosstalk * E / np.linalg.norm(E, 2)) @ W
    perm = rng.permutation(W.shape[1])
    return random_rotation(m, seed + 1) @ W[:, perm] * 0.95, np.array(labels)[perm]


def cross_overlaps(crosstalk: float) -> np.ndarray:
    """|W_i . W_j| of the pairs that belong to different structures (orthogonal without cross-talk)."""
    W, labels = embedded(crosstalk)
    W0, _ = embedded(0.0)
    live = labels != A.NOT_REPRESENTED
    apart = (np.abs(W0.T @ W0) < 1e-9) & live[:, None] & live[None, :]
    return np.abs(W.T @ W)[apart]


@pytest.mark.parametrize("crosstalk", [0.0, 0.25, 0.35])
def test_structures_inside_a_larger_model_keep_their_labels(crosstalk):
    W, expected = embedded(crosstalk)
    np.testing.assert_array_equal(A.feature_structure(W), expected)


def test_strong_crosstalk_joins_factors_and_the_splits_recover_them(monkeypatch):
    """At crosstalk 0.4 factors overlap by up to ~0.18 (> EDGE_THRESHOLD): the base graph joins them
    into one component. The splits still find every multi-feature structure; a dedicated feature
    whose D_i the cross-talk lowered to 0.84 (below 1 - DIM_RTOL) is fairly "other"."""
    overlaps = cross_overlaps(0.4)
    assert overlaps.max() > 1.5 * A.EDGE_THRESHOLD
    W, expected = embedded(0.4)
    got = A.feature_structure(W)
    shared = (expected != "dedicated")
    np.testing.assert_array_equal(got[shared], expected[shared])
    live = expected != A.NOT_REPRESENTED
    graph = A.geometry_graph(W).subgraph(np.flatnonzero(live))
    assert max(len(c) for c in nx.connected_components(graph)) > 8  # structures joined by cross-talk
    monkeypatch.setattr(A, "SPLIT_THRESHOLDS", ())  # without the splits: mostly "other"
    assert (A.feature_structure(W)[live] == A.OTHER).mean() > 0.5
