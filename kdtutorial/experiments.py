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
from .objectives import AnnealedLogits, CrossEntropy
from .training import History, evaluate, fit

__all__ = ["seeds_from", "train_model", "train_annealing_kd", "summarize", "mean_std", "compare"]


def seeds_from(seed: int, n_seeds: int) -> list[int]:
    """The seeds a multi-seed experiment uses: ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    return [seed + i for i in range(n_seeds)]


def train_model(arch: str, data, objective, *, seed: int, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                weight_decay: float = 0.0, device="cpu", progress=None, amp: bool = False, val_set=None):
    """Build ``arch`` from ``seed`` (same seed -> same initial weights), train it with ``objective``.

    Returns ``(model, history, test_accuracy)``; with ``val_set`` the history holds per-epoch ``val_acc``.
    """
    seed_everything(seed)
    model = models.build(arch, data.input_shape, data.n_classes)
    history = fit(model, data.train, objective, epochs=epochs, lr=lr, batch_size=batch_size,
                  weight_decay=weight_decay, seed=seed, device=device, progress=progress, amp=amp, val_set=val_set)
    return model, history, evaluate(model, data.test, device)


def train_annealing_kd(arch: str, data, cache, schedule, *, seed: int, stage2_epochs: int, stage1_lr: float = 1e-3,
                       lr: float = 1e-3, batch_size: int = 64, device="cpu", progress=None, val_set=None):
    """Annealing KD (Jafari et al., EACL 2021): stage I regresses ``phi(T) * z_t``, stage II trains on labels.

    Stage I runs ``schedule.stage1_epochs`` epochs with ``AnnealedLogits`` at ``stage1_lr``; stage II continues
    the same model for ``stage2_epochs`` epochs of cross-entropy at ``lr``. The history numbers the epochs of
    both stages in one sequence and marks each with ``stage`` (1 or 2) and, in stage I, ``phi``.
    Returns ``(model, history, test_accuracy)``.
    """
    seed_everything(seed)
    model = models.build(arch, data.input_shape, data.n_classes)
    objective = AnnealedLogits(cache, schedule)
    common = dict(batch_size=batch_size, device=device, progress=progress, val_set=val_set)
    stage1 = fit(model, data.train, objective, epochs=schedule.stage1_epochs, lr=stage1_lr, seed=seed,
                 on_epoch_start=objective.start_epoch, **common)
    stage2 = fit(model, data.train, CrossEntropy(), epochs=stage2_epochs, lr=lr, seed=seed + 1, **common)
    history = History()
    for row, p in zip(stage1.records, objective.phis_seen):
        history.add(**row, stage=1, phi=p)
    for row in stage2.records:
        history.add(**{**row, "epoch": row["epoch"] + schedule.stage1_epochs}, stage=2)
    return model, history, evaluate(model, data.test, device)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def compare(records, method: str, baseline: str, metric: str = "test_acc") -> tuple[float, float, bool]:
    """``method``'s mean gain over ``baseline``, the larger of their seed stds, and whether the gain exceeds it.

    Computed from the unrounded per-seed values in ``records`` (dicts with ``"method"`` and ``metric``). This is
    the course's one test of "better than seed noise".
    """
    (m, s), (mb, sb) = (mean_std([r[metric] for r in records if r["method"] == k]) for k in (method, baseline))
    gain, noise = m - mb, max(s, sb)
    return gain, noise, gain > noise


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
