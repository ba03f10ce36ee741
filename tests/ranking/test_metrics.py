"""Ranking metrics against scikit-learn and against hand-written definitions, ties included."""
import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

from kdtutorial.ranking import metrics


def random_data(seed, n=300, n_queries=40):
    """Labels, scores on a coarse grid (many ties, across classes too), and query ids (strings)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scores = np.round(rng.normal(size=n) + 0.8 * y) / 2
    qids = np.array([f"q{i}" for i in rng.integers(0, n_queries, n)])
    return y, scores, qids


@pytest.mark.parametrize("ours, sklearn_metric", [(metrics.roc_auc, roc_auc_score),
                                                   (metrics.pr_auc, average_precision_score)])
@pytest.mark.parametrize("seed", range(5))
def test_auc_metrics_match_sklearn_with_ties(ours, sklearn_metric, seed):
    y, s, _ = random_data(seed)
    assert ours(y, s) == pytest.approx(sklearn_metric(y, s), abs=1e-12)
    s_cont = np.random.default_rng(seed + 100).normal(size=len(y)) + y
    assert ours(y, s_cont) == pytest.approx(sklearn_metric(y, s_cont), abs=1e-12)


def test_roc_auc_is_pairwise_probability_with_half_ties():
    y = np.array([1, 0, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.9, 0.3, 0.1, 0.5, 0.5, 0.7])
    pairs = [(p, n) for p, n in itertools.product(s[y == 1], s[y == 0])]
    reference = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert metrics.roc_auc(y, s) == pytest.approx(reference, abs=1e-15)
    assert metrics.roc_auc(y, np.zeros(len(y))) == 0.5
    assert metrics.roc_auc(y, y) == 1.0 and metrics.roc_auc(y, -y) == 0.0


def test_average_precision_by_hand():
    # ranked: 1 (P=1, R=1/2), 0, 1 (P=2/3, R=1)  ->  AP = 1/2 * 1 + 1/2 * 2/3
    assert metrics.pr_auc([1, 0, 1], [0.9, 0.8, 0.1]) == pytest.approx(0.5 + 1 / 3)
    # a tie between a Good and a Bad at the top: one threshold, P = 1/2 at R = 1/2
    assert metrics.pr_auc([1, 0, 1], [0.9, 0.9, 0.1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # all tied: AP = base rate
    assert metrics.pr_auc([1, 0, 0, 0], [1, 1, 1, 1]) == pytest.approx(0.25)


@pytest.mark.parametrize("metric", [metrics.roc_auc, metrics.pr_auc])
def test_one_class_is_a_clear_error(metric):
    with pytest.raises(ValueError, match="only one class"):
        metric([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class"):
        metric([0, 0], [0.1, 0.2])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="binary"):
        metrics.roc_auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="shape"):
        metrics.roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.pr_auc([0, 1], [0.1, float("nan")])
    assert metrics.roc_auc(np.array([True, False]), [0.7, 0.2]) == 1.0


def test_accuracy_at_threshold():
    y = [1, 0, 1, 0]
    p = [0.9, 0.5, 0.4, 0.1]
    assert metrics.accuracy_at(y, p) == 0.5  # 0.5 counts as Good
    assert metrics.accuracy_at(y, p, threshold=0.3) == 0.75
    assert metrics.accuracy_at(y, p, threshold=0.6) == 0.75
    assert metrics.accuracy_at([1, 1], [0.7, 0.8]) == 1.0  # one class is fine for accuracy
    with pytest.raises(ValueError, match="sigmoid"):
        metrics.accuracy_at(y, [2.3, -1.0, 0.4, 0.1])
    with pytest.raises(ValueError, match="threshold"):
        metrics.accuracy_at(y, p, threshold=1.5)


def sklearn_mean_ndcg(qids, y, s, k):
    values = []
    for q in dict.fromkeys(qids):
        m = qids == q
        if m.sum() >= 2 and y[m].sum() >= 1:
            values.append(ndcg_score(y[m][None, :], s[m][None, :], k=k))
    return float(np.mean(values)), len(values)


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 3), (2, 5), (3, 10), (4, 3)])
def test_ndcg_matches_sklearn_per_query_with_ties(seed, k):
    y, s, q = random_data(seed)
    ours, n = metrics.ndcg_at_k(q, y, s, k)
    ref, n_ref = sklearn_mean_ndcg(q, y, s, k)
    assert n == n_ref > 10
    assert ours == pytest.approx(ref, abs=1e-12)


def test_ndcg_by_hand_and_skipped_queries():
    q = np.array(["a", "a", "a", "b", "c", "c"])
    y = np.array([0, 1, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.1, 0.5, 0.3, 0.2])
    # query a: ranked 0, 1, 1 -> DCG@2 = 1/log2(3); IDCG@2 = 1 + 1/log2(3). b: one candidate; c: no Good.
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    value, n = metrics.ndcg_at_k(q, y, s, 2)
    assert n == 1 and value == pytest.approx(expected)
    assert metrics.ndcg_at_k(q, y, y.astype(float), 2) == (1.0, 1)
    with pytest.raises(ValueError, match="no query"):
        metrics.ndcg_at_k(["b", "c", "c"], [1, 0, 0], [0.1, 0.2, 0.3], 3)
    with pytest.raises(ValueError, match="k must be"):
        metrics.ndcg_at_k(q, y, s, 0)


def test_ndcg_and_density_do_not_depend_on_row_order():
    y, s, q = random_data(7)
    perm = np.random.default_rng(0).permutation(len(y))
    assert metrics.ndcg_at_k(q, y, s, 3)[0] == pytest.approx(metrics.ndcg_at_k(q[perm], y[perm], s[perm], 3)[0])
    d1 = metrics.label_density_at_k(q, y, s, 3)
    d2 = metrics.label_density_at_k(q[perm], y[perm], s[perm], 3)
    assert d1 == pytest.approx(d2)


def test_label_density_by_hand():
    q = np.array([1, 1, 1, 1, 2, 2, 3, 3, 3])
    y = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.5, 0.4, 0.6, 0.6, 0.6])
    # k = 2. query 1: top 2 = {Good, Bad}; query 2 (only 2 candidates): {Bad, Good}; query 3: three tied
    # items share 2 slots, each counts 2/3, so its one Good contributes 2/3.
    d = metrics.label_density_at_k(q, y, s, 2)
    assert d["n_queries"] == 3 and d["n_results"] == 6
    assert d["good"] == pytest.approx((1 + 1 + 2 / 3) / 6)
    assert d["good"] + d["bad"] == pytest.approx(1.0)
    # only queries where the ranking decides (more than k candidates): queries 1 and 3
    d3 = metrics.label_density_at_k(q, y, s, 2, min_candidates=3)
    assert d3["n_queries"] == 2 and d3["n_results"] == 4
    assert d3["good"] == pytest.approx((1 + 2 / 3) / 4)
    # a perfect ranker puts every Good first
    perfect = metrics.label_density_at_k(q, y, y + 0.0, 1)
    assert perfect["good"] == 1.0
    with pytest.raises(ValueError, match="min_candidates"):
        metrics.label_density_at_k(q, y, s, 2, min_candidates=10)


def test_rank_score_formula_and_broadcasting():
    bid = np.array([1.0, 2.0, 0.5])
    p_click = np.array([0.1, 0.05, 0.3])
    rel = np.array([0.9, 0.2, 1.0])
    w = 0.1
    expected = np.array([1.0 * 0.1 - 0.1 * 0.1, 2.0 * 0.05 - 0.1 * 0.8, 0.5 * 0.3 - 0.0])
    assert np.allclose(metrics.rank_score(bid, p_click, rel, w), expected, atol=1e-15)
    # a relevant ad can outrank a higher bid
    assert metrics.rank_score(1.0, 0.1, 1.0, 0.5) > metrics.rank_score(1.2, 0.1, 0.0, 0.5)
    assert np.ndim(metrics.rank_score(1.0, 0.1, 0.5, 0.2)) == 0
    grid = metrics.rank_score(bid[:, None], p_click[:, None], rel[None, :], w)
    assert grid.shape == (3, 3)
    with pytest.raises(ValueError, match="relevance"):
        metrics.rank_score(bid, p_click, np.array([0.5, 1.2, 0.1]), w)
    with pytest.raises(ValueError, match="w "):
        metrics.rank_score(bid, p_click, rel, -1.0)
