"""Distillation losses, each written as the paper writes it.

Conventions used everywhere in the course (and pinned by ``tests/common/test_losses.py``):

* Logits are ``[batch, classes]``. Soft targets are ``softmax(z / T)``, and the temperature ``T`` is
  applied to *both* teacher and student.
* KL divergences are summed over classes and averaged over the batch ("batchmean"). PyTorch's
  ``reduction="mean"`` would also divide by the number of classes: a silent factor of ``1 / K``.
* The soft-target term is multiplied by ``T**2`` (Hinton et al., 2015, section 2): the gradient of the KL
  term scales as ``1 / T**2``, so the factor keeps its weight independent of ``T``.
* Where a loss mixes a soft and a hard term, ``alpha`` is the weight of the *soft* term:
  ``alpha * soft + (1 - alpha) * hard``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "soft_targets",
    "kd_kl_loss",
    "soft_cross_entropy",
    "hard_cross_entropy",
    "hinton_loss",
    "logit_matching_loss",
    "smoothed_targets",
    "label_smoothing_loss",
    "virtual_teacher",
    "virtual_teacher_logits",
    "tfkd_reg_loss",
    "tfkd_reg_loss_release",
    "annealing_kd_loss",
]


def _check_temperature(T: float) -> None:
    if not T > 0:
        raise ValueError(f"temperature T must be > 0, got {T}")


def soft_targets(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Softmax with temperature, Hinton et al. (2015) eq. 1: ``q_i = exp(z_i / T) / sum_j exp(z_j / T)``."""
    _check_temperature(T)
    return F.softmax(logits / T, dim=-1)


def kd_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Soft-target loss of Hinton et al. (2015): ``T**2 * KL(softmax(t / T) || softmax(s / T))``.

    Summed over classes, averaged over the batch (``F.kl_div(..., reduction="batchmean")``), multiplied
    by ``T**2``. Zero when student and teacher logits agree up to a constant shift. The teacher side is
    detached: gradients flow to the student only.
    """
    _check_temperature(T)
    log_p_student = F.log_softmax(student_logits / T, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / T, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * T**2


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with a distribution as target: ``H(q, p) = -sum_k q_k log p_k``, batch mean."""
    return -(target_probs * F.log_softmax(student_logits, dim=-1)).sum(dim=-1).mean()


def hard_cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ordinary cross-entropy with the true labels (temperature 1), batch mean."""
    return F.cross_entropy(student_logits, labels)


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    T: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """The weighted distillation objective of Hinton et al. (2015), section 2.

    ``alpha * T**2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(y, p_s)``. With ``labels=None`` (a transfer set
    without labels) only the soft term is used, whatever ``alpha`` is.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    soft = kd_kl_loss(student_logits, teacher_logits, T)
    if labels is None:
        return soft
    return alpha * soft + (1.0 - alpha) * hard_cross_entropy(student_logits, labels)


def logit_matching_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Logit regression (Bucilă et al., 2006; Ba and Caruana, 2014), scaled to be KD's high-T limit.

    ``1 / (2K) * || (z_s - mean z_s) - (z_t - mean z_t) ||^2``, batch mean. Hinton et al. (2015, eq. 2-4)
    show that for large ``T`` the gradient of ``T**2 * KL`` tends to ``((z_i - mean z) - (v_i - mean v)) / K``,
    which is exactly the gradient of this loss.
    """
    K = student_logits.shape[-1]
    zs = student_logits - student_logits.mean(dim=-1, keepdim=True)
    zt = teacher_logits.detach() - teacher_logits.detach().mean(dim=-1, keepdim=True)
    return ((zs - zt) ** 2).sum(dim=-1).mean() / (2 * K)


def smoothed_targets(labels: torch.Tensor, n_classes: int, epsilon: float, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Label-smoothed targets ``q' = (1 - epsilon) * q + epsilon * u`` (Szegedy et al., 2016; Yuan et al., 2020
    eq. 2, whose alpha is this epsilon).

    ``q`` is the one-hot label; ``u`` is ``prior`` (a ``[K]`` or ``[batch, K]`` distribution), uniform by
    default. ``epsilon`` weighs the prior, as KD's alpha weighs the soft term (lesson 01) and as in
    ``F.cross_entropy(label_smoothing=epsilon)``: one convention for the whole course. With a teacher's softened
    distribution as ``u``, this is KD seen as learned label smoothing.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    q = F.one_hot(labels, n_classes).to(torch.get_default_dtype())
    if prior is None:
        prior = torch.full((n_classes,), 1.0 / n_classes)
    return (1.0 - epsilon) * q + epsilon * prior.to(q.device, q.dtype)


def label_smoothing_loss(student_logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against uniformly smoothed labels, ``H(q', p)`` with ``q' = (1 - eps) q + eps / K``.

    Same value as ``F.cross_entropy(..., label_smoothing=epsilon)``; written out so the identity
    ``H(q', p) = (1 - eps) H(q, p) + eps H(u, p)`` can be read off.
    """
    K = student_logits.shape[-1]
    return soft_cross_entropy(student_logits, smoothed_targets(labels, K, epsilon))


def virtual_teacher(labels: torch.Tensor, n_classes: int, a: float = 0.9) -> torch.Tensor:
    """The hand-designed teacher of Tf-KD_reg (Yuan et al., 2020, eq. 8).

    ``p_d(k) = a`` for the true class and ``(1 - a) / (K - 1)`` for every other class. ``a`` must be at
    least ``1 / K`` so the true class stays the most likely one.
    """
    if not 1.0 / n_classes <= a <= 1.0:
        raise ValueError(f"a (correct-class probability) must be in [1/K, 1] = [{1.0 / n_classes:.3f}, 1], got {a}")
    p = torch.full((labels.shape[0], n_classes), (1.0 - a) / (n_classes - 1), device=labels.device)
    p[torch.arange(labels.shape[0], device=labels.device), labels] = a
    return p


def virtual_teacher_logits(labels: torch.Tensor, n_classes: int, a: float = 0.9) -> torch.Tensor:
    """``log p_d``: logits whose softmax is the virtual teacher, so ``softmax(log p_d / T)`` softens it."""
    return virtual_teacher(labels, n_classes, a).clamp_min(1e-12).log()


def tfkd_reg_loss(
    student_logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.5, T: float = 4.0, a: float = 0.9
) -> torch.Tensor:
    """Teacher-free KD with a virtual teacher, Tf-KD_reg (Yuan et al., 2020, eq. 9), course convention.

    ``(1 - alpha) * CE(y, p_s) + alpha * T**2 * KL(softmax(log p_d / T) || softmax(z_s / T))``: the KD
    loss of ``hinton_loss`` with the virtual teacher's log-probabilities standing in for teacher logits,
    so ``T = 1`` recovers ``p_d`` itself and the temperature acts on both sides. The released code differs
    (see ``tfkd_reg_loss_release``).
    """
    teacher = virtual_teacher_logits(labels, student_logits.shape[-1], a)
    return hinton_loss(student_logits, teacher, labels, T=T, alpha=alpha)


def tfkd_reg_loss_release(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    T: float = 20.0,
    a: float = 0.9,
    multiplier: float = 1.0,
) -> torch.Tensor:
    """Tf-KD_reg as the authors' released script computes it, for comparison only.

    Three differences from ``tfkd_reg_loss``: the virtual teacher's *probabilities* go through
    ``softmax(p_d / T)`` (for ``T = 20`` that is almost uniform); the student side has no temperature;
    and the KL uses ``reduction="mean"`` (divides by batch * K) with a hand-tuned ``multiplier``
    instead of ``T**2``.
    """
    K = student_logits.shape[-1]
    teacher = F.softmax(virtual_teacher(labels, K, a) / T, dim=-1)
    log_p_student = F.log_softmax(student_logits, dim=-1)
    # what F.kl_div(..., reduction="mean") returns: the KL summed over everything, / (batch * K)
    kl = (teacher * (teacher.log() - log_p_student)).sum() / student_logits.numel()
    return (1.0 - alpha) * hard_cross_entropy(student_logits, labels) + alpha * multiplier * kl


def annealing_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, phi: float) -> torch.Tensor:
    """Stage-I loss of Annealing KD (Jafari et al., EACL 2021, eq. 5): ``|| z_s - phi * z_t ||^2``.

    The squared L2 norm over classes, averaged over the batch. (``nn.MSELoss()``, as in the released
    code, also averages over classes: the same minimiser, a loss ``K`` times smaller.) ``phi`` comes from
    ``kdtutorial.common.schedules``; the teacher side is detached.
    """
    if not 0.0 < phi <= 1.0:
        raise ValueError(f"phi must be in (0, 1], got {phi}")
    return ((student_logits - phi * teacher_logits.detach()) ** 2).sum(dim=-1).mean()
