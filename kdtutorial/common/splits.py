"""Seeded, stratified splits of a labelled data set."""
from __future__ import annotations
import numpy as np


def _proportional_counts(class_counts: np.ndarray, size: int) -> np.ndarray:
    """Share ``size`` among classes in proportion to ``class_counts`` (largest-remainder rounding)."""
    total = class_counts.sum()
    if size == total:
        return class_counts.copy()
    exact = class_counts * size / total
    counts = np.floor(exact).astype(np.int64)
    short = size - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts

def stratified_split(y, sizes, seed: int) -> list[np.ndarray]:
    """Split ``range(len(y))`` into disjoint index arrays of the given ``sizes``, stratified by ``y``.

    ``sizes`` are integer counts whose sum is at most ``len(y)`` (examples beyond the sum are left
    out). Each part keeps the class proportions of what is left, up to rounding. The result depends
    only on ``y``, ``sizes`` and ``seed``, never on global random state. Raises ``ValueError`` when
    the sizes do not fit.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional, got shape {y.shape}")
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"sizes must be non-negative, got {sizes}")
    if sum(sizes) > len(y):
        raise ValueError(f"sizes {sizes} sum to {sum(sizes)}, but there are only {len(y)} examples")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in classes]  # remaining, shuffled
    parts = []
    for size in sizes:
        remaining = np.array([len(pool) for pool in pools])
        counts = _proportional_counts(remaining, size) if size else np.zeros_like(remaining)
        taken = [pool[:n] for pool, n in zip(pools, counts)]
        pools = [pool[n:] for pool, n in zip(pools, counts)]
        parts.append(rng.permutation(np.concatenate(taken)).astype(np.int64))
    return parts
