"""The course's statistics: seeds, mean ± std tables and the paired comparison every verdict line uses."""
import math

import numpy as np
import pytest
from scipy import stats

from kdtutorial.common.statistics import VERDICTS, paired, seeds_from, summarize


def recs(method, values, seeds=None):
    seeds = range(len(values)) if seeds is None else seeds
    return [dict(method=method, seed=s, test_acc=v) for s, v in zip(seeds, values)]


def test_summarize_mean_std():
    table = summarize(recs("a", (90.0, 92.0)) + recs("b", (80.0,)))
    assert table.loc["a", "test_acc"] == "91.0 ± 1.4"
    assert table.loc["b", "std"] == 0.0
    assert seeds_from(5, 3) == [5, 6, 7]


def test_paired_interval_is_the_paired_t_test_inverted():
    a, b = [91.0, 92.5, 93.0, 90.0], [90.0, 90.5, 91.5, 89.0]
    p = paired(recs("kd", a) + recs("base", b), "kd", "base")
    d = np.subtract(a, b)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / math.sqrt(4)
    assert p.mean == pytest.approx(d.mean()) and p.low == pytest.approx(d.mean() - half)
    assert p.high == pytest.approx(d.mean() + half)
    # the interval excludes 0 exactly when scipy's paired t-test rejects at 5%
    assert (p.low > 0) == (stats.ttest_rel(a, b).pvalue < 0.05)
    assert (p.n_higher, p.n_lower, p.verdict) == (4, 0, "higher")


def test_paired_is_two_sided_a_negative_gain_is_lower():
    p = paired(recs("reverse KD", [88.0, 87.5, 88.2]) + recs("base", [90.0, 90.1, 89.9]), "reverse KD", "base")
    assert p.verdict == "lower" and p.high < 0 and p.n_lower == 3
    assert "lower" in p.line() and p.line().startswith("reverse KD vs base: -2.1 points")


def test_paired_noise_is_not_distinguishable():
    p = paired(recs("a", [90.0, 92.0, 91.0]) + recs("b", [91.0, 91.0, 91.2]), "a", "b")
    assert p.low < 0 < p.high and p.verdict == "not distinguishable"


def test_paired_below_three_seeds_is_never_judged():
    # a large, consistent gain over 2 seeds is still not ranked
    p = paired(recs("a", [99.0, 99.5]) + recs("b", [50.0, 50.2]), "a", "b")
    assert p.verdict == VERDICTS[3] == "not judged: fewer than 3 seeds"
    one = paired(recs("a", [99.0]) + recs("b", [50.0]), "a", "b")
    assert one.verdict == VERDICTS[3] and math.isnan(one.low) and "CI" not in one.line()


def test_paired_uses_only_shared_seeds_and_pairs_by_seed_not_order():
    a = recs("a", [1.0, 2.0, 3.0, 4.0], seeds=[3, 2, 1, 0])
    b = recs("b", [0.0, 0.0, 0.0], seeds=[0, 1, 2])
    p = paired(a + b, "a", "b")
    assert p.seeds == (2, 1, 0) and p.differences == (2.0, 3.0, 4.0)


def test_paired_scale_and_unit_in_the_line():
    p = paired([dict(method="s", seed=i, roc_auc=v) for i, v in enumerate([0.81, 0.82, 0.815])]
               + [dict(method="t", seed=i, roc_auc=v) for i, v in enumerate([0.80, 0.80, 0.80])], "s", "t",
               metric="roc_auc")
    assert p.line(scale=100, unit="AUC points").startswith("s vs t: +1.5 AUC points (95% CI")


def test_paired_refuses_what_cannot_be_paired():
    with pytest.raises(KeyError, match="have no 'seed'"):
        paired([dict(method="a", test_acc=1.0), dict(method="b", test_acc=1.0)], "a", "b")
    with pytest.raises(ValueError, match="share no seed"):
        paired(recs("a", [1.0], seeds=[0]) + recs("b", [1.0], seeds=[1]), "a", "b")
    with pytest.raises(ValueError, match="two records"):
        paired(recs("a", [1.0, 2.0], seeds=[0, 0]) + recs("b", [1.0], seeds=[0]), "a", "b")
    with pytest.raises(KeyError, match="no records of method 'c'"):
        paired(recs("a", [1.0]), "a", "c")
