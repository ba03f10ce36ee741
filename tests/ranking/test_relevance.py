"""Binary relevance KD losses against reference formulas written out by hand (float64)."""
import pytest
import torch

from kdtutorial.common import losses
from kdtutorial.ranking import relevance


pytestmark = pytest.mark.usefixtures("double_precision")  # fixture in conftest.py


@pytest.fixture
def scores():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(16, generator=g) * 3
    t = torch.randn(16, generator=g) * 3
    y = torch.randint(0, 2, (16,), generator=g)
    return s, t, y


def sig(x):
    return 1.0 / (1.0 + torch.exp(-x))


def ref_bce(s, t, T):
    """T^2 * mean -[p log q + (1 - p) log(1 - q)], p = sigmoid(t/T), q = sigmoid(s/T)."""
    p, q = sig(t / T), sig(s / T)
    return -(p * q.log() + (1 - p) * (1 - q).log()).mean() * T**2


def ref_label_bce(s, y):
    q = sig(s)
    return -(y * q.log() + (1 - y) * (1 - q).log()).mean()


def test_mse_reference(scores):
    s, t, _ = scores
    ref = sum((s[i] - t[i]) ** 2 for i in range(len(s))) / len(s)
    assert torch.allclose(relevance.score_mse_loss(s, t), ref, atol=1e-12)
    assert relevance.score_mse_loss(s, s.clone()) == 0


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 5.0])
def test_bce_reference(scores, T):
    s, t, _ = scores
    assert torch.allclose(relevance.score_bce_loss(s, t, T), ref_bce(s, t, T), atol=1e-10)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_bce_is_two_class_hinton_kd_plus_teacher_entropy(scores, T):
    """sigmoid(z) = softmax([0, z])[1]: the binary loss is losses.kd_kl_loss on [0, z] plus T^2 H(p)."""
    s, t, _ = scores
    two = lambda z: torch.stack([torch.zeros_like(z), z], dim=-1)  # noqa: E731
    p = sig(t / T)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean()
    expected = losses.kd_kl_loss(two(s), two(t), T) + T**2 * entropy
    assert torch.allclose(relevance.score_bce_loss(s, t, T), expected, atol=1e-10)
    # so at s = t only the (gradient-free) teacher entropy is left
    assert torch.allclose(relevance.score_bce_loss(t, t, T), T**2 * entropy, atol=1e-10)


def test_bce_gradient_formula(scores):
    s, t, _ = scores
    T = 2.5
    z = s.clone().requires_grad_(True)
    relevance.score_bce_loss(z, t, T).backward()
    assert torch.allclose(z.grad, T * (sig(s / T) - sig(t / T)) / len(s), atol=1e-12)


def test_t_squared_keeps_gradient_scale_and_reaches_mse_limit(scores):
    """With T^2 the gradient tends to (s - t) / (4B), the gradient of MSE / 8; without, it shrinks as 1/T^2."""
    s, t, _ = scores
    limit = (s - t) / (4 * len(s))
    mse_grad = s.clone().requires_grad_(True)
    (relevance.score_mse_loss(mse_grad, t) / 8).backward()
    assert torch.allclose(mse_grad.grad, limit, atol=1e-12)

    def grad(T):
        z = s.clone().requires_grad_(True)
        relevance.score_bce_loss(z, t, T).backward()
        return z.grad

    errors = [((grad(T) - limit).norm() / limit.norm()).item() for T in (10.0, 100.0, 1000.0)]
    assert errors[2] < 1e-5
    # sigmoid(x) = 1/2 + x/4 - x^3/48 + ...: the gap closes like 1/T^2
    assert errors[0] / errors[1] == pytest.approx(100.0, rel=0.05)
    assert errors[1] / errors[2] == pytest.approx(100.0, rel=0.01)
    norms = [grad(T).norm().item() for T in (20.0, 40.0, 80.0)]
    assert max(norms) / min(norms) < 1.02
    unscaled = [n / T**2 for n, T in zip(norms, (20.0, 40.0, 80.0))]
    assert unscaled[0] / unscaled[2] == pytest.approx(16.0, rel=0.02)


def test_label_bce_reference(scores):
    s, _, y = scores
    assert torch.allclose(relevance.label_bce_loss(s, y), ref_label_bce(s, y.double()), atol=1e-12)
    assert torch.allclose(relevance.label_bce_loss(s, y.bool()), ref_label_bce(s, y.double()), atol=1e-12)
    with pytest.raises(ValueError, match="labels must lie"):
        relevance.label_bce_loss(s, y * 2)


@pytest.mark.parametrize("kind,T", [("mse", 1.0), ("bce", 1.0), ("bce", 4.0)])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_kd_loss_is_weighted_sum(scores, kind, T, alpha):
    s, t, y = scores
    kd = ((s - t) ** 2).mean() if kind == "mse" else ref_bce(s, t, T)
    expected = alpha * kd + (1 - alpha) * ref_label_bce(s, y.double())
    got = relevance.relevance_kd_loss(s, t, y, kind=kind, alpha=alpha, temperature=T)
    assert torch.allclose(got, expected, atol=1e-10)
    # no labels (unlabeled transfer set): pure distillation whatever alpha is
    assert torch.allclose(relevance.relevance_kd_loss(s, t, None, kind=kind, alpha=alpha, temperature=T), kd, atol=1e-10)


def test_kd_loss_validates_its_arguments(scores):
    s, t, y = scores
    with pytest.raises(ValueError, match="kind"):
        relevance.relevance_kd_loss(s, t, y, kind="kl")
    with pytest.raises(ValueError, match="alpha"):
        relevance.relevance_kd_loss(s, t, y, alpha=1.2)
    with pytest.raises(ValueError, match="alpha"):
        relevance.relevance_kd_loss(s, t, y, alpha=-0.1)
    with pytest.raises(ValueError, match="kind='bce' only"):
        relevance.relevance_kd_loss(s, t, y, kind="mse", temperature=2.0)
    with pytest.raises(ValueError, match="temperature"):
        relevance.relevance_kd_loss(s, t, y, kind="bce", temperature=0.0)


def test_shapes_that_would_broadcast_are_refused(scores):
    s, t, y = scores
    with pytest.raises(ValueError, match="shape"):
        relevance.score_mse_loss(s[:, None], t)  # (B, 1) - (B,) would broadcast to (B, B)
    with pytest.raises(ValueError, match="shape"):
        relevance.score_bce_loss(s, t[:-1])
    with pytest.raises(ValueError, match="shape"):
        relevance.relevance_kd_loss(s, t, y[:, None])


@pytest.mark.parametrize("kind,T", [("mse", 1.0), ("bce", 1.0), ("bce", 3.0)])
def test_gradcheck(scores, kind, T):
    s, t, y = scores
    z = s[:6].clone().requires_grad_(True)
    f = lambda z: relevance.relevance_kd_loss(z, t[:6], y[:6], kind=kind, alpha=0.4, temperature=T)  # noqa: E731
    assert torch.autograd.gradcheck(f, (z,))


@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_teacher_gets_no_gradient(scores, kind):
    s, t, y = scores
    t = t.clone().requires_grad_(True)
    z = s.clone().requires_grad_(True)
    relevance.relevance_kd_loss(z, t, y, kind=kind, alpha=0.7).backward()
    assert t.grad is None
    assert z.grad is not None and z.grad.abs().sum() > 0
