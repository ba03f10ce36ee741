"""Minimax-kNN's selection (``kdtutorial.text.minimax``): the teacher-space filter, the per-candidate KL and the
choice of the k1 highest-divergence candidates, each against a formula or a brute-force reference in float64."""
from __future__ import annotations

import itertools

import pytest
import torch

from kdtutorial.common.losses import kd_kl_loss
from kdtutorial.text import minimax


def test_teacher_distance_is_the_total_variation_by_hand():
    g = torch.Generator().manual_seed(0)
    orig, nb = torch.randn(4, 3, generator=g), torch.randn(4, 5, 3, generator=g)
    d = minimax.teacher_distance(orig, nb)
    p, q = orig.double().softmax(-1), nb.double().softmax(-1)
    for i, j in itertools.product(range(4), range(5)):
        assert d[i, j].item() == pytest.approx(0.5 * sum(abs(p[i, c] - q[i, j, c]).item() for c in range(3)), abs=1e-6)
    assert ((d >= 0) & (d <= 1)).all()
    # two classes: the difference of the positive probabilities
    two_o, two_n = torch.randn(3, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    diff = (two_o.softmax(-1)[:, None, 1] - two_n.softmax(-1)[..., 1]).abs()
    assert torch.allclose(minimax.teacher_distance(two_o, two_n), diff, atol=1e-6)


def test_distance_filter_keeps_the_near_ones_and_checks_its_threshold():
    orig = torch.tensor([[0.0, 0.0]])  # p = (0.5, 0.5)
    nb = torch.tensor([[[0.0, 0.0], [0.0, 0.4], [0.0, 2.0], [0.0, -3.0]]])  # distances 0, ~0.099, ~0.381, ~0.453
    assert minimax.distance_filter(orig, nb, 0.22).tolist() == [[True, True, False, False]]
    assert minimax.distance_filter(orig, nb, 1.0).all()
    assert minimax.distance_filter(orig, nb, 0.0).tolist() == [[True, False, False, False]]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"MAX_DISTANCE = .* is not allowed: .*\[0, 1\]"):
            minimax.distance_filter(orig, nb, bad)
    with pytest.raises(ValueError, match=r"\[n, C\] and neighbour logits \[n, K, C\]"):
        minimax.teacher_distance(orig, nb[0])


def test_candidate_divergence_is_the_kl_per_candidate():
    g = torch.Generator().manual_seed(1)
    t, s = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    tau = 2.0
    d = minimax.candidate_divergence(t, s, tau)
    p, q = (t.double() / tau).softmax(-1), (s.double() / tau).softmax(-1)
    assert torch.allclose(d.double(), (p * (p.log() - q.log())).sum(-1), atol=1e-5)
    # summed over candidates and divided by their number it is the KD loss without its tau^2
    flat = kd_kl_loss(s.reshape(-1, 5), t.reshape(-1, 5), tau) / tau**2
    assert d.mean().item() == pytest.approx(flat.item(), rel=1e-5)
    assert (minimax.candidate_divergence(t, t) < 1e-6).all()
    with pytest.raises(ValueError, match="differ in shape"):
        minimax.candidate_divergence(t, s[:, :2])


def brute_force_choice(div, allowed, k1):
    """The allowed columns of each row by divergence, largest first, the lower column first on ties."""
    out = torch.zeros_like(allowed)
    for i in range(div.shape[0]):
        ok = [j for j in range(div.shape[1]) if allowed[i, j]]
        for j in sorted(ok, key=lambda j: (-div[i, j].item(), j))[:k1]:
            out[i, j] = True
    return out


def test_top_divergence_picks_the_largest_allowed_divergences():
    div = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.3, 0.3, 0.3], [0.9, 0.8, 0.7, 0.6], [0.2, 0.1, 0.4, 0.3]])
    allowed = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]]).bool()
    chosen = minimax.top_divergence(div, allowed, 2)
    assert chosen.tolist() == [[False, True, False, True],  # 0.9 and 0.7
                               [True, True, False, False],  # ties: the nearer neighbours
                               [False, False, True, False],  # only one passes the filter
                               [False, False, False, False]]  # none passes
    assert not (chosen & ~allowed).any()
    g = torch.Generator().manual_seed(2)
    for k1 in (1, 3, 8):
        d = torch.rand(50, 8, generator=g).round(decimals=1)  # many ties
        a = torch.rand(50, 8, generator=g) > 0.3
        assert torch.equal(minimax.top_divergence(d, a, k1), brute_force_choice(d, a, k1))


def test_k1_must_be_between_1_and_k():
    div, allowed = torch.zeros(2, 8), torch.ones(2, 8, dtype=torch.bool)
    for bad in (0, 9, 2.0, True):
        with pytest.raises(ValueError, match=r"k1 = .* is not allowed: .*K = 8.*1 <= k1 <= K"):
            minimax.top_divergence(div, allowed, bad)
    assert minimax.check_k1(8, 8) == 8
    with pytest.raises(ValueError, match=r"\[n, K\] of one shape"):
        minimax.top_divergence(div, allowed[:, :4], 2)
