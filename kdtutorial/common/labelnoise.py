"""Label noise for the "noisy labels" open problem: flip an exact share of the training labels, seeded.

Symmetric (uniform) label noise, the usual first model of noisy annotation (e.g. Natarajan et al., NeurIPS 2013;
Patrini et al., CVPR 2017, with a uniform transition matrix): exactly ``round(share * n)`` rows, drawn without
replacement, get a label other than their own, chosen uniformly among the ``n_classes - 1`` others (for two
classes: the other one). The same ``(labels, share, seed)`` flips the same rows to the same labels.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["flip_labels"]


def flip_labels(labels, share: float, seed: int, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy labels, flipped)``: a copy of ``labels`` with ``round(share * len(labels))`` of them changed, and the
    boolean mask of the changed rows. ``n_classes`` defaults to ``max(labels) + 1`` (at least 2)."""
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D array of integer class ids, got shape {y.shape} and dtype {y.dtype}")
    if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 <= share <= 1:
        raise ValueError(f"share = {share!r} is not allowed: the share of labels to flip, a number in [0, 1]")
    k = max(2, int(y.max()) + 1 if len(y) else 2) if n_classes is None else int(n_classes)
    if k < 2:
        raise ValueError(f"n_classes = {n_classes!r} is not allowed: a flipped label needs another class, at least 2")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must be class ids 0 .. {k - 1}, found {int(y.min())} .. {int(y.max())}")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(y), size=int(round(float(share) * len(y))), replace=False)
    noisy = y.copy()
    noisy[rows] = (y[rows] + rng.integers(1, k, size=len(rows))) % k  # a uniformly chosen *other* class
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rows] = True
    return noisy, flipped
