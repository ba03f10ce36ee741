"""Metrics for query-ad relevance ranking (lesson 06), written out so each one can be read.

Conventions (pinned by ``tests/test_ranking.py``):

* Labels are binary, Good = 1 and Bad = 0 (XGLUE QADSM). Anything else is a ``ValueError``.
* Scores are any real numbers where higher means more relevant (logits or probabilities); only their order
  matters, except in ``accuracy_at``, which wants probabilities.
* No result depends on the order of the rows, ties included. ROC-AUC counts a tied Good/Bad pair as half a correct
  pair; average precision puts tied items behind one threshold; nDCG and the label densities average over
  every order of a tie (McSherry and Najork, ECIR 2008), as ``sklearn.metrics.ndcg_score`` does.
* Per-query metrics take one row per (query, ad) pair and a ``query_ids`` column to group them.

``rank_score`` is the ad-auction formula of the Microsoft Ads talk (lesson 06, seed 000): relevance enters
the ranking as an externality, ``pDefect = 1 - relevance``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "roc_auc",
    "pr_auc",
    "accuracy_at",
    "ndcg_at_k",
    "label_density_at_k",
    "rank_score",
    "gain_kept",
]


# --------------------------------------------------------------------------------------------- checks
def _as_binary_labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("labels are empty")
    if y.dtype == bool:
        return y.astype(np.int64)
    if not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"labels must be binary (Good = 1, Bad = 0); found other values such as {bad.tolist()}")
    return y.astype(np.int64)


def _as_scores(scores, n: int, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like the labels, got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return s


def _check_both_classes(y: np.ndarray, metric: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "Good (1)" if n_pos else "Bad (0)"
        raise ValueError(f"{metric} is undefined when only one class is present (all {y.size} labels are {only})")


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


# ------------------------------------------------------------------------------------- whole-set metrics
def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks in ascending order; tied values share the mean of the ranks they occupy."""
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)            # rank of the last member of each tie group
    first = last - counts + 1           # rank of the first member
    return ((first + last) / 2.0)[inverse]


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic.

    ``AUC = (R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)`` where ``R_+`` is the sum of the (tie-averaged, ascending)
    ranks of the Good items. This is the probability that a random Good ad scores above a random Bad one,
    a tie counting one half. The metric of TwinBERT's table 2 (Lu et al., CIKM 2020).
    """
    y = _as_binary_labels(labels)
    s = _as_scores(scores, y.size)
    _check_both_classes(y, "ROC-AUC")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    rank_sum = _average_ranks(s)[y == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_auc(labels, scores) -> float:
    """Average precision: ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, highest first.

    ``P_n`` and ``R_n`` are precision and recall when every item scoring at least the n-th distinct value is
    called Good; tied items enter together. The step-wise area under the precision-recall curve, without
    the trapezoidal interpolation (which is optimistic); the same definition as
    ``sklearn.metrics.average_precision_score``.
    """
    y = _as_binary_labels(labels)
    s = _as_scores(scores, y.size)
    _check_both_classes(y, "Average precision")
    # group by distinct score, highest first
    _, inverse = np.unique(-s, return_inverse=True)
    tp = np.bincount(inverse, weights=y).cumsum()
    predicted = np.bincount(inverse).cumsum()
    precision = tp / predicted
    recall = tp / y.sum()
    recall_steps = np.diff(recall, prepend=0.0)
    return float((recall_steps * precision).sum())


def accuracy_at(labels, probs, threshold: float = 0.5) -> float:
    """Share of pairs whose decision ``probs >= threshold`` (Good) agrees with the label.

    ``probs`` must be probabilities in [0, 1] (for a model's logits pass ``sigmoid(logits)``, or use
    ``threshold=0.5`` on ``sigmoid`` rather than ``0`` on logits); a value outside [0, 1] is refused, since
    logits thresholded at 0.5 would silently be a different classifier. XGLUE reports QADSM accuracy.
    """
    y = _as_binary_labels(labels)
    p = _as_scores(probs, y.size, "probs")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(
            f"probs must lie in [0, 1] (got values in [{p.min():.3g}, {p.max():.3g}]); "
            "pass sigmoid(logits), not logits"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(((p >= threshold).astype(np.int64) == y).mean())


# ------------------------------------------------------------------------------------ per-query metrics
def _query_groups(query_ids, n: int) -> list[np.ndarray]:
    """Row indices of each query, in order of first appearance."""
    q = np.asarray(query_ids)
    if q.shape != (n,):
        raise ValueError(f"query_ids must have shape ({n},) like the labels, got {q.shape}")
    codes, _ = pd.factorize(q, sort=False)
    if (codes < 0).any():
        raise ValueError("query_ids contain missing values (NaN/None)")
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, bounds)


def _tie_averaged_position_weights(scores: np.ndarray, position_weights: np.ndarray) -> np.ndarray:
    """Each item's position weight, averaged over every order of its tie group.

    Sorting by score (highest first) puts the items of a tie group on consecutive positions; each member
    gets the mean of the weights of those positions. ``position_weights[j]`` is the weight of rank ``j``
    (0-based): a discount for DCG, or 1 inside the top k for label densities.
    """
    _, inverse, counts = np.unique(-scores, return_inverse=True, return_counts=True)
    cumulative = np.concatenate([[0.0], np.cumsum(position_weights)])
    end = np.cumsum(counts)
    start = end - counts
    return ((cumulative[end] - cumulative[start]) / counts)[inverse]


def ndcg_at_k(query_ids, labels, scores, k: int) -> tuple[float, int]:
    """Mean nDCG@k over queries, with binary gains and a log2 discount.

    For one query, ``DCG@k = sum_{j < k} rel_(j) / log2(j + 2)`` (rank ``j`` 0-based, ties averaged over their
    orders) and ``nDCG@k = DCG@k / IDCG@k``, ``IDCG@k`` being the DCG of the best order. Only queries with at
    least 2 candidates and at least one Good ad are used: with a single candidate every ranker scores 1,
    and without a Good ad the ratio is 0 / 0. TwinBERT's figure 3 compares nDCG of TwinBERT_cos and C-DSSM.

    Returns ``(mean nDCG@k, number of queries used)``; a ``ValueError`` if no query qualifies.
    """
    y = _as_binary_labels(labels)
    s = _as_scores(scores, y.size)
    k = _check_k(k)
    values = []
    for idx in _query_groups(query_ids, y.size):
        gains = y[idx].astype(np.float64)
        n_rel = int(gains.sum())
        if idx.size < 2 or n_rel == 0:
            continue
        discount = np.zeros(idx.size)
        top = min(k, idx.size)
        discount[:top] = 1.0 / np.log2(np.arange(top) + 2.0)
        dcg = (gains * _tie_averaged_position_weights(s[idx], discount)).sum()
        idcg = discount[: min(n_rel, top)].sum()
        values.append(dcg / idcg)
    if not values:
        raise ValueError("nDCG is undefined here: no query has at least 2 candidates and at least one Good label")
    return float(np.mean(values)), len(values)


def label_density_at_k(query_ids, labels, scores, k: int, min_candidates: int = 1) -> dict:
    """Share of Good and Bad labels among each query's top-k results, pooled over queries.

    The quantity of TwinBERT's table 3 (Lu et al., CIKM 2020), which reports how the density of each label
    in the top 5 changes from C-DSSM to TwinBERT_cos; QADSM has two labels instead of four.

    Choice: every query with at least ``min_candidates`` candidates (default 1, so all queries) contributes
    its top ``min(k, n_candidates)`` results, i.e. the results a page of k slots would show. Queries with at
    most k candidates contribute the same to every ranker, so they dilute a difference between two rankers
    but cannot bias it; pass ``min_candidates=k + 1`` to count only queries where the ranking decides what is
    shown. A tie straddling the k-th position contributes fractionally (averaged over the tie's orders).

    Returns ``{"good": share, "bad": share, "n_queries": queries used, "n_results": results counted}``.
    """
    y = _as_binary_labels(labels)
    s = _as_scores(scores, y.size)
    k = _check_k(k)
    if isinstance(min_candidates, bool) or not isinstance(min_candidates, (int, np.integer)) or min_candidates < 1:
        raise ValueError(f"min_candidates must be a positive integer, got {min_candidates!r}")
    good = 0.0
    n_results = 0
    n_queries = 0
    for idx in _query_groups(query_ids, y.size):
        if idx.size < min_candidates:
            continue
        in_top = (np.arange(idx.size) < k).astype(np.float64)
        weights = _tie_averaged_position_weights(s[idx], in_top)
        good += float((weights * y[idx]).sum())
        n_results += min(k, idx.size)
        n_queries += 1
    if n_queries == 0:
        raise ValueError(f"no query has at least min_candidates={min_candidates} candidates")
    share_good = good / n_results
    return {"good": share_good, "bad": 1.0 - share_good, "n_queries": n_queries, "n_results": n_results}


# ----------------------------------------------------------------------------------------- the auction
def rank_score(bid, p_click, relevance, w):
    """Ad-auction rank score with relevance as an externality (Microsoft Ads talk, lesson 06 seed 000).

    ``RankScore = bid * pClick - w * pDefect`` with ``pDefect = 1 - relevance``: an irrelevant ad pays for
    the harm it does to the page. Vectorised over numpy broadcasting; ``p_click`` and ``relevance`` must be
    probabilities and ``w >= 0``. Returns an array (a numpy scalar for scalar inputs).
    """
    bid = np.asarray(bid, dtype=np.float64)
    p_click = np.asarray(p_click, dtype=np.float64)
    relevance = np.asarray(relevance, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    for name, value in (("p_click", p_click), ("relevance", relevance)):
        if np.isnan(value).any() or (value < 0).any() or (value > 1).any():
            raise ValueError(f"{name} must be a probability in [0, 1]")
    if np.isnan(w).any() or (w < 0).any():
        raise ValueError("w (the weight of pDefect) must be >= 0")
    p_defect = 1.0 - relevance
    return (bid * p_click - w * p_defect)[()]


def gain_kept(distilled: float, labels_only: float, teacher: float) -> float:
    """The share of the teacher's gain that distillation keeps: ``(distilled - labels_only) / (teacher -
    labels_only)`` (the Microsoft Ads talk's "distilled C-DSSM keeps 70% of the AUC gain"). 1 means the distilled
    student matches the teacher, 0 that distillation added nothing over training on the labels alone; it is
    negative when distillation lowered the student. A teacher not above the label-only student has no gain to keep:
    ``ValueError``."""
    distilled, labels_only, teacher = float(distilled), float(labels_only), float(teacher)
    if not teacher > labels_only:
        raise ValueError(f"teacher = {teacher} is not above labels_only = {labels_only}: there is no gain to keep")
    return (distilled - labels_only) / (teacher - labels_only)
