"""Statistics over seeds: the seeds of an experiment, mean ± sample standard deviation (``ddof = 1``), the
table a notebook shows, the gain of one method over another, and top-1 accuracy (percent)."""
from __future__ import annotations
import numpy as np
import pandas as pd
import torch


def seeds_from(seed: int, n_seeds: int) -> list[int]:
    """The seeds a multi-seed experiment uses: ``seed, seed + 1, ..., seed + n_seeds - 1``."""
    return [seed + i for i in range(n_seeds)]

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


def accuracy(logits: torch.Tensor, labels) -> float:
    """Top-1 accuracy in percent; ``labels``: a tensor, an array or a list of class ids."""
    labels = labels if torch.is_tensor(labels) else torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return 100.0 * (logits.argmax(dim=-1) == labels.to(logits.device)).float().mean().item()
