"""Several seeds of one recipe, and their mean ± standard deviation.

A *recipe* trains one model from a seed and returns a dict of results. ``repeat`` runs it for
``SEED, SEED + 1, ...`` and ``summarize`` turns the records into the table a notebook shows. Standard
deviations are sample standard deviations (``ddof = 1``) across seeds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import models
from .environment import seed_everything
from .training import evaluate, fit

__all__ = ["seeds_from", "train_model", "summarize", "mean_std"]


def seeds_from(seed: int, n_seeds: int) -> list[int]:
    """The seeds a multi-seed experiment uses: ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    return [seed + i for i in range(n_seeds)]


def train_model(arch: str, data, objective, *, seed: int, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                weight_decay: float = 0.0, device="cpu", progress=None, amp: bool = False):
    """Build ``arch`` from ``seed`` (same seed -> same initial weights), train it with ``objective``.

    Returns ``(model, history, test_accuracy)``.
    """
    seed_everything(seed)
    model = models.build(arch, data.input_shape, data.n_classes)
    history = fit(model, data.train, objective, epochs=epochs, lr=lr, batch_size=batch_size,
                  weight_decay=weight_decay, seed=seed, device=device, progress=progress, amp=amp)
    return model, history, evaluate(model, data.test, device)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarize(records, by: str = "method", metric: str = "test_acc", digits: int = 1, order=None) -> pd.DataFrame:
    """One row per ``by`` value: seeds, mean, std and a printable ``mean ± std`` string.

    ``order``: the row order (default: first appearance in ``records``).
    """
    frame = pd.DataFrame(records)
    order = order or list(dict.fromkeys(frame[by]))
    rows = []
    for key in order:
        vals = frame.loc[frame[by] == key, metric]
        m, s = mean_std(vals)
        rows.append({by: key, "seeds": len(vals), "mean": round(m, digits), "std": round(s, digits),
                     metric: f"{m:.{digits}f} ± {s:.{digits}f}"})
    return pd.DataFrame(rows).set_index(by)
