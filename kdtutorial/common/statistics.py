"""Statistics over seeds: the seeds of an experiment, mean ± sample standard deviation (``ddof = 1``), the
table a notebook shows, the paired comparison of one method with another, and top-1 accuracy (percent)."""
from __future__ import annotations

from dataclasses import dataclass

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

MIN_SEEDS_TO_JUDGE = 3
VERDICTS = ("higher", "lower", "not distinguishable", "not judged: fewer than 3 seeds")


@dataclass(frozen=True)
class Paired:
    """A paired comparison of ``method`` with ``baseline`` over the seeds both ran (see :func:`paired`)."""

    method: str
    baseline: str
    metric: str
    seeds: tuple
    differences: tuple  # method - baseline, one per seed, in the order of ``seeds``
    mean: float  # the mean per-seed difference (= the difference of the two means)
    low: float  # the t interval of the mean difference (nan below 2 seeds)
    high: float
    level: float  # the interval's coverage, e.g. 0.95
    n_higher: int  # seeds where the method scored higher / lower than the baseline
    n_lower: int

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def verdict(self) -> str:
        """``higher`` / ``lower`` when the interval excludes 0, else ``not distinguishable``; below 3 seeds
        ``not judged: fewer than 3 seeds`` whatever the numbers say."""
        if self.n < MIN_SEEDS_TO_JUDGE:
            return VERDICTS[3]
        if self.low > 0:
            return VERDICTS[0]
        if self.high < 0:
            return VERDICTS[1]
        return VERDICTS[2]

    def line(self, scale: float = 1.0, unit: str = "points", digits: int = 1) -> str:
        """One printable verdict line; ``scale`` multiplies the differences (e.g. 100: AUC to AUC points)."""
        f = lambda v: f"{v * scale:+.{digits}f}"  # noqa: E731
        ci = (f"{self.level:.0%} CI {f(self.low)} to {f(self.high)}, " if self.n >= 2 else "")
        return (f"{self.method} vs {self.baseline}: {f(self.mean)} {unit} ({ci}higher in {self.n_higher} of "
                f"{self.n} seeds): {self.verdict}")


def paired(records, method: str, baseline: str, metric: str = "test_acc", level: float = 0.95,
           seed_key: str = "seed") -> Paired:
    r"""Compare ``method`` with ``baseline`` seed by seed: the course's one test of "better than seed noise".

    Both methods ran with the same seeds (same data order and initialisation where the recipe allows), so the
    per-seed differences :math:`d_i = m_i - b_i` remove the part of the noise the two runs share. Reported: their
    mean :math:`\bar d`, the two-sided Student-t interval :math:`\bar d \pm t_{n-1, (1+level)/2}\, s_d/\sqrt{n}`
    (the paired t-test of Student, 1908, inverted) and the sign count. The verdict is two-sided: *higher* or *lower*
    when the interval excludes zero, else *not distinguishable*; with fewer than 3 seeds nothing is judged (an
    interval from 2 differences has one degree of freedom: :math:`t = 12.7`).

    ``records``: dicts with ``"method"``, ``seed_key`` and ``metric``. Seeds present for only one method are
    ignored; a seed recorded twice for one method is an error.
    """
    def by_seed(name):
        values = {}
        for r in records:
            if r["method"] == name:
                if seed_key not in r:
                    raise KeyError(f"records of {name!r} have no {seed_key!r}: a paired comparison needs the seed")
                if r[seed_key] in values:
                    raise ValueError(f"{name!r} has two records for {seed_key} {r[seed_key]!r}")
                values[r[seed_key]] = float(r[metric])
        if not values:
            raise KeyError(f"no records of method {name!r}")
        return values

    m, b = by_seed(method), by_seed(baseline)
    seeds = tuple(s for s in m if s in b)
    if not seeds:
        raise ValueError(f"{method!r} and {baseline!r} share no seed: nothing to pair")
    d = np.array([m[s] - b[s] for s in seeds])
    mean = float(d.mean())
    if len(d) >= 2:
        from scipy import stats

        half = float(stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
        low, high = mean - half, mean + half
    else:
        low = high = float("nan")
    return Paired(method, baseline, metric, seeds, tuple(float(v) for v in d), mean, low, high, level,
                  int((d > 0).sum()), int((d < 0).sum()))


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
