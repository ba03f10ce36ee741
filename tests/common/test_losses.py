"""Each loss against a reference formula written out by hand (float64, so agreement is to ~1e-10)."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtutorial.common import losses



pytestmark = pytest.mark.usefixtures("double_precision")  # fixture in conftest.py


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 10, generator=g) * 3
    t = torch.randn(8, 10, generator=g) * 3
    y = torch.randint(0, 10, (8,), generator=g)
    return s, t, y


def ref_kl(s, t, T):
    """sum_k p_t (log p_t - log p_s), averaged over the batch, times T^2 (Hinton et al. 2015)."""
    pt = torch.exp(t / T) / torch.exp(t / T).sum(-1, keepdim=True)
    ps = torch.exp(s / T) / torch.exp(s / T).sum(-1, keepdim=True)
    return (pt * (pt.log() - ps.log())).sum(-1).mean() * T**2


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
def test_kd_kl_matches_reference_and_batchmean(logits, T):
    s, t, _ = logits
    ours = losses.kd_kl_loss(s, t, T)
    assert torch.allclose(ours, ref_kl(s, t, T), atol=1e-10)
    torch_form = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T**2
    assert torch.allclose(ours, torch_form, atol=1e-10)


def test_reduction_mean_is_off_by_number_of_classes(logits):
    s, t, _ = logits
    T = 3.0
    with pytest.warns(UserWarning):
        mean = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="mean") * T**2
    assert torch.allclose(mean * s.shape[1], losses.kd_kl_loss(s, t, T), atol=1e-10)


def test_kd_kl_zero_at_equality_and_shift_invariant(logits):
    s, _, _ = logits
    assert losses.kd_kl_loss(s, s.clone(), 4.0).abs() < 1e-12
    assert losses.kd_kl_loss(s, s + 5.0, 4.0).abs() < 1e-12
    assert losses.kd_kl_loss(s, s * 2, 4.0) > 0


def test_kd_kl_gradient_matches_hinton_eq2(logits):
    s, t, _ = logits
    T = 5.0
    s = s.clone().requires_grad_(True)
    losses.kd_kl_loss(s, t, T).backward()
    # dC/dz_i = (1/T)(q_i - p_i) per example; times T^2, divided by the batch size.
    expected = T * (F.softmax(s / T, -1) - F.softmax(t / T, -1)) / s.shape[0]
    assert torch.allclose(s.grad, expected.detach(), atol=1e-10)


def test_gradient_scale_independent_of_T_thanks_to_T_squared(logits):
    """With T^2 the gradient norm tends to a constant as T grows; without it, it shrinks like 1/T^2."""
    s, t, _ = logits

    def grad_norm(T, squared):
        z = s.clone().requires_grad_(True)
        loss = losses.kd_kl_loss(z, t, T) if squared else losses.kd_kl_loss(z, t, T) / T**2
        loss.backward()
        return z.grad.norm().item()

    with_sq = [grad_norm(T, True) for T in (20.0, 40.0, 80.0)]
    without = [grad_norm(T, False) for T in (20.0, 40.0, 80.0)]
    assert max(with_sq) / min(with_sq) < 1.05
    assert without[0] / without[2] == pytest.approx(16.0, rel=0.05)


def test_teacher_side_gets_no_gradient(logits):
    s, t, _ = logits
    t = t.clone().requires_grad_(True)
    losses.kd_kl_loss(s.clone().requires_grad_(True), t, 2.0).backward()
    assert t.grad is None


def test_high_temperature_limit_is_logit_matching(logits):
    s, t, _ = logits
    z2 = s.clone().requires_grad_(True)
    losses.logit_matching_loss(z2, t).backward()
    errors = []
    for T in (100.0, 1000.0, 10000.0):
        z1 = s.clone().requires_grad_(True)
        losses.kd_kl_loss(z1, t, T).backward()
        errors.append(((z1.grad - z2.grad).norm() / z2.grad.norm()).item())
    # the gap closes like 1/T: ten times the temperature, a tenth of the relative error
    assert errors[2] < 1e-3
    assert errors[0] / errors[1] == pytest.approx(10.0, rel=0.05)
    assert errors[1] / errors[2] == pytest.approx(10.0, rel=0.05)


def test_logit_matching_reference(logits):
    s, t, _ = logits
    K = s.shape[1]
    ref = sum(((s[i] - s[i].mean()) - (t[i] - t[i].mean())).pow(2).sum() for i in range(len(s))) / len(s) / (2 * K)
    assert torch.allclose(losses.logit_matching_loss(s, t), ref)


def test_soft_targets_is_softmax_with_temperature(logits):
    s, _, _ = logits
    for T in (0.5, 1.0, 7.0):
        ref = torch.exp(s / T) / torch.exp(s / T).sum(-1, keepdim=True)
        assert torch.allclose(losses.soft_targets(s, T), ref)
    with pytest.raises(ValueError, match="temperature"):
        losses.soft_targets(s, 0.0)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_hinton_loss_is_weighted_sum(logits, alpha):
    s, t, y = logits
    T = 4.0
    expected = alpha * ref_kl(s, t, T) + (1 - alpha) * F.cross_entropy(s, y)
    assert torch.allclose(losses.hinton_loss(s, t, y, T, alpha), expected)
    assert torch.allclose(losses.hinton_loss(s, t, None, T, alpha), ref_kl(s, t, T))
    with pytest.raises(ValueError, match="alpha"):
        losses.hinton_loss(s, t, y, T, 1.5)


def test_label_smoothing_matches_torch_and_identity(logits):
    s, _, y = logits
    K = s.shape[1]
    eps = 0.2
    ours = losses.label_smoothing_loss(s, y, eps)
    assert torch.allclose(ours, F.cross_entropy(s, y, label_smoothing=eps))
    # H(q', p) = alpha H(q, p) + (1 - alpha) H(u, p), alpha = 1 - eps
    logp = F.log_softmax(s, -1)
    h_q = F.nll_loss(logp, y)
    h_u = -(logp.mean(-1)).mean()
    assert torch.allclose(ours, (1 - eps) * h_q + eps * h_u)
    # and H(u, p) = KL(u || p) + H(u), H(u) = log K
    kl_u = (1 / K * (math.log(1 / K) - logp)).sum(-1).mean()
    assert torch.allclose(h_u, kl_u + math.log(K))


def test_smoothed_targets_with_teacher_prior(logits):
    s, t, y = logits
    prior = F.softmax(t, -1)
    q = losses.smoothed_targets(y, 10, 0.3, prior)  # epsilon = 0.3 weighs the prior
    assert torch.allclose(q.sum(-1), torch.ones(len(y)))
    expected = 0.7 * F.one_hot(y, 10) + 0.3 * prior
    assert torch.allclose(q, expected)


def test_virtual_teacher_distribution():
    y = torch.tensor([0, 3, 9])
    p = losses.virtual_teacher(y, 10, a=0.9)
    assert torch.allclose(p.sum(-1), torch.ones(3))
    assert torch.allclose(p[torch.arange(3), y], torch.full((3,), 0.9))
    others = p[0, 1:]
    assert torch.allclose(others, torch.full((9,), 0.1 / 9))
    assert torch.allclose(F.softmax(losses.virtual_teacher_logits(y, 10, 0.9), -1), p)
    with pytest.raises(ValueError, match="1/K"):
        losses.virtual_teacher(y, 10, a=0.05)


def test_tfkd_reg_is_kd_with_virtual_teacher(logits):
    s, _, y = logits
    alpha, T, a = 0.4, 3.0, 0.9
    pd_ = losses.virtual_teacher(y, 10, a)
    soft_t = F.softmax(pd_.log() / T, -1)
    ps = F.log_softmax(s / T, -1)
    kl = (soft_t * (soft_t.log() - ps)).sum(-1).mean() * T**2
    expected = (1 - alpha) * F.cross_entropy(s, y) + alpha * kl
    assert torch.allclose(losses.tfkd_reg_loss(s, y, alpha, T, a), expected)


def test_tfkd_release_form(logits):
    s, _, y = logits
    alpha, T, a, mult = 0.5, 20.0, 0.9, 10.0
    teacher = F.softmax(losses.virtual_teacher(y, 10, a) / T, -1)
    logp = F.log_softmax(s, -1)
    with pytest.warns(UserWarning):  # torch itself warns that "mean" is not the KL of the maths
        kl_mean = F.kl_div(logp, teacher, reduction="mean")
    expected = (1 - alpha) * F.cross_entropy(s, y) + alpha * mult * kl_mean
    assert torch.allclose(losses.tfkd_reg_loss_release(s, y, alpha, T, a, mult), expected)
    # at T = 20 the released virtual teacher is nearly uniform
    assert (teacher.max(-1).values - 0.1).abs().max() < 0.01
