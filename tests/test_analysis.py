"""superpos.analysis on hand-built weights (exact fractions, structure labels), vectorisation, theory vs MC."""
import numpy as np
import pytest
import torch

from superpos import analysis as A


# --- hand-built structures (unit vectors; all are tight frames, so D_i = dims / count exactly) -----
def polygon(k: int) -> np.ndarray:
    """k unit vectors evenly around the circle, (2, k)."""
    a = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(a), np.sin(a)])


def tetrahedron() -> np.ndarray:
    return np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float).T / np.sqrt(3)


def square_antiprism() -> np.ndarray:
    """Two squares at heights +-h, twisted by 45 degrees; h = 1/sqrt(3) makes the frame tight."""
    h, r = 1 / np.sqrt(3), np.sqrt(2 / 3)
    a = np.pi / 2 * np.arange(4)
    top = np.stack([r * np.cos(a), r * np.sin(a), np.full(4, h)])
    bottom = np.stack([r * np.cos(a + np.pi / 4), r * np.sin(a + np.pi / 4), np.full(4, -h)])
    return np.concatenate([top, bottom], axis=1)


STRUCTURES = {  # label: (vectors (d, N), exact D_i)
    "dedicated": (np.ones((1, 1)), 1.0),
    "antipodal pair": (np.array([[1.0, -1.0]]), 1 / 2),
    "triangle": (polygon(3), 2 / 3),
    "tetrahedron": (tetrahedron(), 3 / 4),
    "pentagon": (polygon(5), 2 / 5),
    "square antiprism": (square_antiprism(), 3 / 8),
}


def block_diagonal(*blocks) -> np.ndarray:
    """Each (d, N) block in its own orthogonal subspace of one W."""
    m, n = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    W = np.zeros((m, n))
    r = c = 0
    for b in blocks:
        W[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return W


def random_rotation(m: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(m, m)))
    return q


@pytest.mark.parametrize("label", list(STRUCTURES))
def test_exact_fraction_and_label_of_each_structure(label):
    vectors, fraction = STRUCTURES[label]
    np.testing.assert_allclose(A.feature_dimensionality(vectors)[0], fraction, rtol=1e-12)
    np.testing.assert_allclose(A.total_dimensionality(vectors), vectors.shape[0], rtol=1e-12)
    comps = A.geometry_components(vectors)
    assert [(c.label, c.features, c.rank) for c in comps] == [(label, tuple(range(vectors.shape[1])), vectors.shape[0])]


def test_unlearned_feature_has_dimensionality_zero_and_no_label():
    W = np.array([[1.0, 0.0, 1e-5], [0.0, 1.0, 0.0]])  # third column: decayed to ~0
    # feature 0 still feels the 1e-5 column's (1e-5)^2 overlap: D_0 = 1 / (1 + 1e-10)
    np.testing.assert_allclose(A.feature_dimensionality(W)[0], [1.0, 1.0, 0.0], rtol=1e-9)
    np.testing.assert_allclose(A.superposition(W)[0], [0.0, 0.0, 0.0], atol=1e-9)
    assert [c.label for c in A.geometry_components(W)] == ["dedicated", "dedicated", "not represented"]


def test_superposition_values():
    np.testing.assert_allclose(A.superposition(STRUCTURES["antipodal pair"][0]), [[1.0, 1.0]])
    # pentagon: sum over the other four of cos^2 = 5/2 - 1
    np.testing.assert_allclose(A.superposition(polygon(5)), np.full((1, 5), 1.5), rtol=1e-12)


def test_structures_in_orthogonal_subspaces_of_one_W_are_labelled_separately():
    """Pentagon (dims 0-1) + antipodal pair (dim 2) + dedicated (dim 3) + an unlearned feature,
    features shuffled and the whole space rotated: labels and fractions must not care."""
    W = block_diagonal(polygon(5), STRUCTURES["antipodal pair"][0], np.ones((1, 1)))
    W = np.concatenate([W, np.zeros((4, 1))], axis=1)  # feature 8: not learned
    expected = ["pentagon"] * 5 + ["antipodal pair"] * 2 + ["dedicated", "not represented"]
    fractions = [2 / 5] * 5 + [1 / 2] * 2 + [1.0, 0.0]
    perm = np.random.default_rng(1).permutation(W.shape[1])
    W = random_rotation(4, seed=2) @ W[:, perm] * 0.9  # trained features have norms near, not at, 1
    np.testing.assert_allclose(A.feature_dimensionality(W)[0], np.array(fractions)[perm], atol=1e-12)
    np.testing.assert_array_equal(A.feature_structure(W), np.array(expected)[perm])
    comps = A.geometry_components(W)
    assert sorted(c.label for c in comps) == sorted(["pentagon", "antipodal pair", "dedicated", "not represented"])
    assert sorted(len(c.features) for c in comps) == [1, 1, 2, 5]


def test_all_structures_together_in_a_rotated_W():
    blocks = [STRUCTURES[k][0] for k in ("square antiprism", "tetrahedron", "triangle", "pentagon")]
    W = random_rotation(10, seed=3) @ block_diagonal(*blocks)
    labels = A.feature_structure(W)
    assert list(labels) == ["square antiprism"] * 8 + ["tetrahedron"] * 4 + ["triangle"] * 3 + ["pentagon"] * 5
    np.testing.assert_allclose(A.total_dimensionality(W), 10, rtol=1e-12)


def test_geometry_graph_edges_and_threshold():
    W = block_diagonal(polygon(5), np.array([[1.0, -1.0]]))
    G = A.geometry_graph(W)
    assert G.number_of_nodes() == 7
    assert G.number_of_edges() == 10 + 1  # complete pentagon (|cos| >= 0.309) plus the pair
    assert G.edges[5, 6]["weight"] == pytest.approx(1.0) and G.edges[5, 6]["dot"] == pytest.approx(-1.0)
    # a threshold above every |cos| of the pentagon leaves its features as singletons; they are not
    # "dedicated", because each still shares its direction (D_i = 2/5, not 1)
    assert A.geometry_graph(W, threshold=0.9).number_of_edges() == 1
    assert list(A.feature_structure(W, threshold=0.9)) == ["other"] * 5 + ["antipodal pair"] * 2


def test_lopsided_or_noisy_structures():
    noisy = polygon(5) + np.random.default_rng(0).normal(0, 1e-3, (2, 5))
    assert set(A.feature_structure(noisy)) == {"pentagon"}
    lopsided = polygon(5)
    lopsided[:, 0] = [np.cos(0.6), np.sin(0.6)]  # one vertex pushed toward its neighbour
    assert set(A.feature_structure(lopsided)) == {"other"}
    same_way = np.array([[1.0, 0.8]])  # two features on one line, same sign: D = 1/2 but not antipodal
    assert set(A.feature_structure(same_way)) == {"other"}


def naive_dimensionality(W: np.ndarray) -> np.ndarray:
    """The paper's formula, written out feature by feature (independent of the vectorised code)."""
    m, n = W.shape
    out = np.zeros(n)
    for i in range(n):
        norm = np.linalg.norm(W[:, i])
        if norm >= A.ZERO_NORM:
            out[i] = norm**2 / sum((W[:, i] / norm @ W[:, j]) ** 2 for j in range(n))
    return out


def test_vectorised_over_K_matches_per_model_and_naive():
    rng = np.random.default_rng(4)
    W = rng.normal(size=(6, 3, 7))
    W[2, :, 1] = 0.0  # an unrepresented feature in one model
    D = A.feature_dimensionality(W)
    sup = A.superposition(W)
    for k in range(len(W)):
        np.testing.assert_allclose(D[k], naive_dimensionality(W[k]), rtol=1e-12)
        np.testing.assert_allclose(D[k], A.feature_dimensionality(W[k])[0], rtol=1e-12)
        np.testing.assert_allclose(sup[k], A.superposition(W[k])[0], rtol=1e-12)
        np.testing.assert_allclose(A.dimensions_per_feature(W[k]), [3 / np.sum(W[k] ** 2)], rtol=1e-12)
    np.testing.assert_allclose(A.feature_norms(W), np.linalg.norm(W, axis=1), rtol=1e-12)
    np.testing.assert_allclose(A.total_dimensionality(W), D.sum(1), rtol=1e-12)
    np.testing.assert_allclose(A.feature_dimensionality(torch.tensor(W, dtype=torch.float32)), D, rtol=1e-5)


def test_summary_metrics():
    pentagon = polygon(5)
    pair = block_diagonal(np.array([[1.0, -1.0]]), np.ones((1, 1)))  # pair + dedicated, m = 2
    W = np.stack([pentagon, np.concatenate([pair, np.zeros((2, 2))], 1)[:, :5], np.zeros((2, 5))])
    s = A.summary_metrics(torch.tensor(W))
    assert set(s) >= {"dims_per_feature", "frobenius_sq", "n_represented", "mean_dimensionality",
                      "total_dimensionality"}
    assert all(v.shape == (3,) for v in s.values())
    np.testing.assert_allclose(s["dims_per_feature"][:2], [2 / 5, 2 / 3])
    assert np.isnan(s["dims_per_feature"][2]) and np.isnan(s["mean_dimensionality"][2])
    np.testing.assert_array_equal(s["n_represented"], [5, 3, 0])
    np.testing.assert_allclose(s["mean_dimensionality"][:2], [2 / 5, 2 / 3])
    np.testing.assert_allclose(s["total_dimensionality"], [2, 2, 0])
    np.testing.assert_array_equal(s["n_superposed"], [5, 2, 0])


def test_classify_phase():
    # n=2, m=1; the last two are a local minimum training often stops at (half-learned feature) and its mirror
    W = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]], [[0.05, 0.98]], [[1.0, 0.42]], [[0.42, 1.0]]])
    assert list(A.classify_phase(W)) == ["not learned", "dedicated", "superposition", "dedicated",
                                         "not learned", "dedicated"]
    n3 = np.stack([polygon(3),                                  # triangle: shares
                   np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]),  # extra feature gets its own dimension
                   np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),   # extra feature dropped
                   np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])])  # extra antipodal to feature 0
    assert list(A.classify_phase(n3)) == ["superposition", "dedicated", "not learned", "superposition"]


# --- theory of the n=2, m=1 phase diagram vs Monte Carlo ------------------------------------------
def mc_loss(W, b, r, x):
    """Per-sample loss of x' = ReLU(W^T W x + b): mean over the 2 features of I_i (x_i - x'_i)^2."""
    W, b = np.asarray(W, dtype=float).reshape(1, 2), np.asarray(b, dtype=float)
    out = np.maximum(x @ W.T @ W + b, 0.0)
    return (((x - out) ** 2) * np.array([1.0, r])).mean(axis=1)


def sample(p, N, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (N, 2)) * (rng.uniform(0, 1, (N, 2)) < p)


@pytest.mark.parametrize("p, r", [(1.0, 0.5), (0.3, 2.0), (0.05, 1.0), (0.5, 10.0)])
def test_theory_losses_match_monte_carlo(p, r):
    """Each candidate at its theoretical optimal bias, on N = 400k samples. Tolerance: 4 standard
    errors of the MC mean (a chance failure has probability ~6e-5; the seed is fixed anyway)."""
    x = sample(p, 400_000, seed=int(100 * p + r))
    losses, biases = A.theory_losses_n2m1(p, r), A.theory_biases_n2m1(p)
    for name, W in A.N2M1_SOLUTIONS.items():
        per_sample = mc_loss(W, biases[name], r, x)
        se = per_sample.std(ddof=1) / np.sqrt(len(per_sample))
        assert abs(per_sample.mean() - losses[name]) < 4 * se, (name, per_sample.mean(), losses[name], se)


@pytest.mark.parametrize("p", [1.0, 0.2])
def test_theory_bias_is_optimal_in_monte_carlo(p):
    """Moving any candidate's bias by +-0.05 must not lower the MC loss (same samples for both, so
    the standard error is that of the per-sample difference; 4 of them as above)."""
    r, x = 1.5, sample(p, 200_000, seed=7)
    biases = A.theory_biases_n2m1(p)
    for name, W in A.N2M1_SOLUTIONS.items():
        base = mc_loss(W, biases[name], r, x)
        for shift in ([0.05, 0], [-0.05, 0], [0, 0.05], [0, -0.05], [0.05, 0.05], [-0.05, -0.05]):
            diff = mc_loss(W, biases[name] + np.array(shift), r, x) - base
            se = diff.std(ddof=1) / np.sqrt(len(diff))
            assert diff.mean() > -4 * se, (name, shift, diff.mean(), se)


def test_theory_vectorised_and_limits():
    p, r = np.array([[1.0], [0.2], [0.01]]), np.array([0.5, 1.0, 2.0, 5.0])
    losses = A.theory_losses_n2m1(p, r)
    phases = A.theory_phase_n2m1(p, r)
    assert phases.shape == (3, 4) and all(v.shape == (3, 4) for v in losses.values())
    for i in range(3):
        for j in range(4):
            assert phases[i, j] == A.theory_phase_n2m1(p[i, 0], r[j])
            for name in A.PHASES:
                assert losses[name][i, j] == pytest.approx(float(A.theory_losses_n2m1(p[i, 0], r[j])[name]))
    # dense: the more important feature takes the dimension; very sparse: superposition
    assert phases[0, 0] == "not learned" and phases[0, 2] == "dedicated" and set(phases[2]) == {"superposition"}
    # dense, both candidates with a zero weight lose exactly Var(x) = 1/3 - 1/4 on the dropped feature
    assert losses["dedicated"][0, 0] == pytest.approx((1 / 3 - 1 / 4) / 2)
    with pytest.raises(ValueError, match="p"):
        A.theory_losses_n2m1(0.0, 1.0)
