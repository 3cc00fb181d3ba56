"""Analyses of the paper's later sections on hand-built weights with known answers: feature sets
(section 2), privileged-basis neurons (section 5), adversarial vulnerability (section 4)."""
import itertools

import numpy as np
import pytest
import torch

from superpos import analysis as A


def polygon(k: int) -> np.ndarray:
    a = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(a), np.sin(a)])


# --- section 2: mean |cos| within and across feature sets -----------------------------------------
def naive_set_cosines(W, sets):
    """Pair by pair, written out (independent of the vectorised code)."""
    label = {i: k for k, s in enumerate(sets) for i in s}
    within, across = [], []
    for i, j in itertools.combinations(sorted(label), 2):
        a, b = W[:, i], W[:, j]
        if np.linalg.norm(a) <= A.ZERO_NORM or np.linalg.norm(b) <= A.ZERO_NORM:
            continue
        c = abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b)
        (within if label[i] == label[j] else across).append(c)
    return (np.mean(within) if within else np.nan), (np.mean(across) if across else np.nan)


def test_local_orthogonal_bases_and_antipodal_sets():
    # two correlated pairs in m=2: each pair an orthogonal basis, the pairs antipodal to each other
    e1, e2 = np.eye(2)
    correlated = np.stack([e1, e2, -e1, -e2], axis=1)
    within, across = A.set_cosines(correlated, [[0, 1], [2, 3]])
    np.testing.assert_allclose([within[0], across[0]], [0.0, 0.5], atol=1e-12)  # across: 2 of 4 pairs antipodal
    # two anticorrelated pairs: each pair antipodal, the pairs orthogonal
    anti = np.stack([e1, -e1, e2, -e2], axis=1) * 0.8
    within, across = A.set_cosines(anti, [[0, 1], [2, 3]])
    np.testing.assert_allclose([within[0], across[0]], [1.0, 0.0], atol=1e-12)


def test_set_cosines_vectorised_matches_naive_with_dead_columns_and_unlisted_features():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 3, 9))
    W[1, :, 4] = 0.0  # a dead feature in one model: no direction, no pairs
    sets = [[0, 4, 2], [7, 1], [5]]  # features 3, 6, 8 belong to no set
    within, across = A.set_cosines(torch.tensor(W), sets)
    for k in range(len(W)):
        np.testing.assert_allclose([within[k], across[k]], naive_set_cosines(W[k], sets), rtol=1e-12)
    # only singletons: no within-set pair at all
    within, across = A.set_cosines(W, [[0], [1]])
    assert np.isnan(within).all() and np.isfinite(across).all()


@pytest.mark.parametrize("sets, match", [
    ([], "non-empty list"), ([[0, 1], [1, 2]], "feature 1 is in more than one set"),
    ([[0, 9]], r"indices in \[0, 4\)"), ([[0, 0]], "distinct"), ([[]], "non-empty list of distinct"),
])
def test_set_cosines_rejects_bad_sets(sets, match):
    with pytest.raises(ValueError, match=match):
        A.set_cosines(np.ones((2, 4)), sets)


# --- section 5: per-neuron weight on each feature, polysemantic neurons ---------------------------
def test_neuron_shares_and_polysemantic_count():
    W = np.array([[1.0, 0.0, 0.0],     # monosemantic
                  [0.6, 0.8, 0.0],     # polysemantic: shares 0.36, 0.64
                  [0.0, -1.0, 0.5],    # fires for feature 2 only (the negative weight only inhibits)
                  [0.0, 0.0, 0.0],     # dead: neither
                  [0.95, 0.3, 0.05]])  # 0.9025 / (0.9025 + 0.09 + 0.0025) = 0.907: monosemantic at 0.9
    shares = A.neuron_feature_weights(W)[0]
    np.testing.assert_allclose(shares[:4], [[1, 0, 0], [0.36, 0.64, 0], [0, 0, 1], [0, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(shares[4], np.array([0.9025, 0.09, 0.0025]) / 0.995)
    assert A.polysemantic_neurons(W)[0] == 1
    signed = A.neuron_feature_weights(W, positive_only=False)[0]
    np.testing.assert_allclose(signed[2], [0, 0.8, 0.2])
    assert A.polysemantic_neurons(W, positive_only=False)[0] == 2  # neuron 2's top share 0.8 < 0.9
    assert A.polysemantic_neurons(W, share=0.6)[0] == 0  # a looser threshold: neuron 1 (0.64) passes
    assert A.polysemantic_neurons(np.stack([W, np.eye(5, 3)])).tolist() == [1, 0]
    with pytest.raises(ValueError, match="share"):
        A.polysemantic_neurons(W, share=0.0)


# --- section 4: adversarial vulnerability ---------------------------------------------------------
def forward(W, b, x, activation):
    out = x @ W.T @ W + b
    return np.maximum(out, 0.0) if activation == "relu" else out


def finite_difference_jacobian(W, b, x, activation, h=1e-7):
    """dx'/dx from the model's forward alone (central differences), independent of local_maps."""
    n = W.shape[1]
    return np.stack([(forward(W, b, x + h * e, activation) - forward(W, b, x - h * e, activation)) / (2 * h)
                     for e in np.eye(n)], axis=1)


def brute_linf_gain(W, b, x, activation, eps=1e-6):
    """Every corner of the eps-cube around x, through the forward pass."""
    n = W.shape[1]
    base = forward(W, b, x, activation)
    return max(np.linalg.norm(forward(W, b, x + eps * np.array(s), activation) - base)
               for s in itertools.product([-1.0, 1.0], repeat=n)) / eps


def test_linear_model_storing_m_features_orthogonally():
    m, n = 3, 7
    W = np.eye(m, n)  # features 0..2 on the axes, the rest dropped: W^T W a projection
    for x in (None, np.random.default_rng(0).uniform(0, 1, (4, n))):
        np.testing.assert_allclose(A.adversarial_gain(W, np.zeros(n), "linear", x, "l2"), 1.0, rtol=1e-12)
        np.testing.assert_allclose(A.adversarial_gain(W, np.zeros(n), "linear", x, "linf"), np.sqrt(m), rtol=1e-12)


def test_pentagon_with_a_bias_that_reads_out_one_feature():
    """b = -1/2 keeps every output but the active feature's off (cos 72 deg = 0.31 < 1/2): the local
    map is row i of W^T W, so the L2 gain is sqrt(sum_j cos^2) = sqrt(5/2) = 1/sqrt(D_i) and the
    L-infinity gain sum_j |cos| = 1 + sqrt(5)."""
    W, b = polygon(5), np.full(5, -0.5)
    np.testing.assert_allclose(A.adversarial_gain(W, b, "relu", norm="l2"), np.sqrt(2.5) * np.ones((1, 5)), rtol=1e-12)
    np.testing.assert_allclose(A.adversarial_gain(W, b, "relu", norm="linf"), (1 + np.sqrt(5)) * np.ones((1, 5)), rtol=1e-12)
    # antipodal pair, zero bias: the partner's output is off; gains sqrt(2) and 2
    pair = np.array([[1.0, -1.0]])
    np.testing.assert_allclose(A.adversarial_gain(pair, np.zeros(2), "relu", norm="l2"), [[np.sqrt(2)] * 2])
    np.testing.assert_allclose(A.adversarial_gain(pair, np.zeros(2), "relu", norm="linf"), [[2.0, 2.0]])


def test_gains_match_the_forward_pass_on_random_models():
    """Random W, b and inputs (several outputs active): the local map equals the forward's finite-
    difference Jacobian, the L2 gain its largest singular value, and the L-infinity gain the largest
    output change over every corner of a small cube (the bound is attained, not just an upper bound)."""
    rng = np.random.default_rng(1)
    K, m, n, B = 3, 3, 8, 4
    W, b = rng.normal(size=(K, m, n)) * 0.6, rng.normal(size=(K, n)) * 0.3
    x = rng.uniform(0, 1, (K, B, n)) * (rng.uniform(size=(K, B, n)) < 0.5)
    J = A.local_maps(W, b, x, "relu")
    l2 = A.adversarial_gain(torch.tensor(W), torch.tensor(b), "relu", x, "l2")
    linf = A.adversarial_gain(W, b, "relu", x, "linf")
    for k in range(K):
        for i in range(B):
            fd = finite_difference_jacobian(W[k], b[k], x[k, i], "relu")
            np.testing.assert_allclose(J[k, i], fd, atol=1e-6)
            assert l2[k, i] == pytest.approx(np.linalg.svd(fd, compute_uv=False)[0], rel=1e-6)
            assert linf[k, i] == pytest.approx(brute_linf_gain(W[k], b[k], x[k, i], "relu"), rel=1e-4)
    active_rows = (J != 0).any(axis=-1).sum(axis=-1)  # [K, B]
    assert (active_rows >= 2).all() and (active_rows < n).any()  # the enumeration ran; some outputs were off


def test_adversarial_gain_rejects_bad_input():
    W = np.ones((1, 2, 3))
    with pytest.raises(ValueError, match="norm"):
        A.adversarial_gain(W, np.zeros(3), norm="l1")
    with pytest.raises(ValueError, match="activation"):
        A.adversarial_gain(W, np.zeros(3), activation="gelu")
    with pytest.raises(ValueError, match="b must have shape"):
        A.adversarial_gain(W, np.zeros(4))
    with pytest.raises(ValueError, match="inputs must have shape"):
        A.adversarial_gain(W, np.zeros(3), inputs=np.zeros((2, 4)))
    big = np.random.default_rng(0).normal(size=(2, A.MAX_EXACT_LINF_FEATURES + 1))
    with pytest.raises(ValueError, match="enumerates"):
        A.adversarial_gain(big, np.zeros(big.shape[1]), "linear", norm="linf")


# --- section 6: computation in superposition (|x| models) -----------------------------------------
def test_neuron_roles_and_feature_computation_on_hand_built_encoders():
    # 6 neurons, 4 features: feature 0 computed exactly by ReLU(x) + ReLU(-x) on its own two neurons;
    # features 1 and 2 share neuron 2 asymmetrically (|w| 1 vs 0.3) and neuron 3 symmetrically;
    # neuron 4 reads three features; neuron 5 is dead; feature 3 only takes part in neuron 4.
    W = np.array([[1.0, 0.0, 0.0, 0.0],
                  [-1.0, 0.0, 0.0, 0.0],
                  [0.0, 1.0, -0.3, 0.0],
                  [0.0, 0.7, 0.7, 0.0],
                  [0.0, 0.6, 0.5, 0.6],
                  [0.0, 0.0, 0.0, 0.0]])
    assert A.neuron_roles(W)[0].tolist() == ["monosemantic", "monosemantic", "asymmetric", "polysemantic",
                                              "polysemantic", "dead"]
    comp = A.feature_computation(W)
    assert comp["own_neurons"][0].tolist() == [2, 0, 0, 0]
    assert comp["shared_neurons"][0].tolist() == [0, 3, 3, 1]
    summary = A.computation_summary(np.stack([W, np.eye(6, 4)]))
    assert summary["own_features"].tolist() == [1, 4]  # eye: features 0..3 on neurons 0..3, neurons 4, 5 dead
    assert summary["superposed_features"].tolist() == [3, 0]
    assert [summary[f"{r}_neurons"].tolist() for r in A.NEURON_ROLES] == [[1, 2], [2, 4], [1, 0], [2, 0]]


def test_asymmetry_is_the_weight_ratio_of_a_two_feature_neuron():
    # |w| ratio 1 / r for r just inside and outside ASYMMETRY_RATIO (shares stay above FEATURE_SHARE)
    inside = np.array([[1.0, 1.0 / (A.ASYMMETRY_RATIO + 0.05)]])
    outside = np.array([[1.0, 1.0 / (A.ASYMMETRY_RATIO - 0.05)]])
    assert A.neuron_roles(inside)[0, 0] == "asymmetric" and A.neuron_roles(outside)[0, 0] == "polysemantic"
    # the sign does not matter: inputs are in [-1, 1)
    assert A.neuron_roles(-inside)[0, 0] == "asymmetric"


# --- section 7: finite datasets (double descent) --------------------------------------------------
def test_reconstruction_loss_matches_the_reference_trainers_loss():
    from superpos.reference import forward_backward
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(3, 2, 7)), rng.normal(size=(3, 7)) * 0.1
    x = rng.uniform(size=(3, 50, 7)) * (rng.uniform(size=(3, 50, 7)) < 0.3)
    imp = rng.uniform(0.5, 1.0, size=(3, 7))
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    for relu in (True, False):
        loss = forward_backward(t(W), t(b), t(x), t(imp), relu)[0].numpy()
        np.testing.assert_allclose(A.reconstruction_loss(W, b, x, imp, "relu" if relu else "linear"), loss, rtol=1e-12)
    # a perfect model: W^T W = identity on the features present, b = 0
    np.testing.assert_allclose(A.reconstruction_loss(np.eye(7)[None], np.zeros(7), x[0]), [0.0], atol=1e-15)


def test_data_dimensionality_of_memorised_examples():
    # 5 training examples, each one feature, stored as a pentagon of hidden vectors: every D_j = 2/5
    n = 5
    W = polygon(n)
    x = np.eye(n) * 0.7
    H = A.hidden_vectors(W, x)
    np.testing.assert_allclose(H[0], 0.7 * W, atol=1e-12)
    np.testing.assert_allclose(A.data_dimensionality(W, x)[0], np.full(n, 2 / 5), atol=1e-12)
    # two examples of the same feature at values 1 and 0.5 share one line: D = 1/(1 + 1/4) and
    # (1/16)/(1/4 + 1/16), which add up to the one dimension they use
    x = np.array([[1.0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0]])
    np.testing.assert_allclose(A.data_dimensionality(W, x)[0], [0.8, 0.2], atol=1e-12)


def naive_weighted_dimensionality(V):
    """Column by column, written out: sum_j ||v_j||^2 D_j / sum_j ||v_j||^2 with D_j = ||v_j||^4 / sum_k (v_j . v_k)^2."""
    num = den = 0.0
    for j in range(V.shape[1]):
        nj = V[:, j] @ V[:, j]
        den += nj
        if np.sqrt(nj) > A.ZERO_NORM:
            num += nj * nj**2 / sum((V[:, j] @ V[:, k]) ** 2 for k in range(V.shape[1]))
    return num / den


def test_weighted_dimensionality_separates_memorised_examples_from_features():
    # a T-gon at any scale: every column D = 2/T, and so the weighted mean
    for T in (3, 5, 8):
        np.testing.assert_allclose(A.weighted_dimensionality(3.0 * polygon(T)), [2 / T], atol=1e-12)
    # 2 e1, e2 and 0.5 e1: D = 16/17, 1, 1/17 (unweighted sum 2, the one plane they span); weighted by
    # ||v||^2 = 4, 1, 1/4: (64/17 + 1 + 1/68) / 5.25 = 81.25/89.25
    V = np.array([[2.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(A.feature_dimensionality(V)[0], [16 / 17, 1.0, 1 / 17], atol=1e-12)
    np.testing.assert_allclose(A.weighted_dimensionality(V), [81.25 / 89.25], atol=1e-12)
    # memorisation: 4 examples of 10 features each (disjoint), each example's features sharing its
    # direction of a square. The examples' hidden vectors are the square (weighted D = 2/4), the
    # features 10 to a direction (weighted D = 1/10 of that): the unweighted sums are both 2
    n, T = 40, 4
    W = np.repeat(polygon(T), 10, axis=1) * 0.3
    x = np.kron(np.eye(T), np.ones(10))  # example j: features 10j .. 10j+9 at value 1
    np.testing.assert_allclose(A.data_dimensionality(W, x).sum(), 2.0, atol=1e-12)
    np.testing.assert_allclose(A.total_dimensionality(W), [2.0], atol=1e-12)
    np.testing.assert_allclose(A.weighted_dimensionality(A.hidden_vectors(W, x)), [2 / T], atol=1e-12)
    np.testing.assert_allclose(A.weighted_dimensionality(W), [2 / T / 10], atol=1e-12)
    # random columns of mixed norms (one below ZERO_NORM) against the loop; a batch keeps its K axis
    rng = np.random.default_rng(3)
    Vs = rng.normal(size=(4, 3, 9)) * rng.uniform(0.01, 2.0, size=(4, 1, 9))
    Vs[0, :, 2] = 1e-5
    np.testing.assert_allclose(A.weighted_dimensionality(Vs), [naive_weighted_dimensionality(v) for v in Vs], rtol=1e-12)
    assert np.isnan(A.weighted_dimensionality(np.zeros((2, 5))))[0]
