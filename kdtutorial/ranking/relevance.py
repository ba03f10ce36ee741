"""Distillation losses for one binary relevance score per (query, ad) pair (lesson 06).

The teacher is a BERT cross-encoder and the student a two-tower ranker (TwinBERT, Lu et al., CIKM 2020;
C-DSSM, Shen et al., 2014); both output one logit ``z`` per pair, ``P(Good) = sigmoid(z)``. Conventions,
pinned by ``tests/test_relevance.py`` and matching ``kdtutorial.common.losses``:

* ``student_logit`` and ``teacher_logit`` have shape ``(B,)``; any other shape, or two shapes that differ,
  is a ``ValueError`` (a ``(B, 1)`` student against a ``(B,)`` teacher would broadcast to ``(B, B)``).
* The teacher is detached inside every loss: gradients reach the student only.
* Everything is a batch mean.
* ``alpha`` weights the distillation term: ``alpha * KD + (1 - alpha) * label loss``.
* With a temperature, ``T`` divides both logits and the soft term is multiplied by ``T**2`` (Hinton et al.,
  2015, section 2). A sigmoid is a softmax over the two logits ``[0, z]``, so the binary loss is Hinton's
  loss on two classes plus a constant, and the same ``T**2`` argument applies.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["score_mse_loss", "score_bce_loss", "label_bce_loss", "relevance_kd_loss", "mean_teacher_logits", "KINDS"]

KINDS = ("mse", "bce")


def _check_scores(student_logit: torch.Tensor, other: torch.Tensor, other_name: str) -> None:
    if student_logit.dim() != 1:
        raise ValueError(f"student_logit must have shape (B,), got {tuple(student_logit.shape)}")
    if other.shape != student_logit.shape:
        raise ValueError(
            f"{other_name} must have the student's shape {tuple(student_logit.shape)}, got {tuple(other.shape)}"
        )


def score_mse_loss(student_logit: torch.Tensor, teacher_logit: torch.Tensor) -> torch.Tensor:
    """Logit regression on the relevance score: ``mean_i (s_i - t_i)^2``.

    Matching logits (Ba and Caruana, 2014) rather than probabilities keeps the teacher's confidence on
    pairs it finds clear-cut, where ``sigmoid`` saturates.
    """
    _check_scores(student_logit, teacher_logit, "teacher_logit")
    return ((student_logit - teacher_logit.detach()) ** 2).mean()


def score_bce_loss(student_logit: torch.Tensor, teacher_logit: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy with the teacher's softened probability as target, times ``T**2``.

    ``T**2 * mean_i -[p_i log q_i + (1 - p_i) log(1 - q_i)]``, ``p_i = sigmoid(t_i / T)``, ``q_i = sigmoid(s_i / T)``.

    The gradient is ``dL/ds_i = T (q_i - p_i) / B``. As ``T`` grows, ``sigmoid(x / T) ~ 1/2 + x / (4T)``, so
    the gradient tends to ``(s_i - t_i) / (4B)``: the gradient of ``mean (s - t)^2 / 8``, the binary analogue
    of Hinton et al.'s (2015, eq. 2-4) high-temperature limit. Without ``T**2`` it would shrink like ``1/T**2``.

    The value is not zero at ``s = t``: it is ``T**2 * [KL(p || q) + H(p)]`` and the teacher entropy ``H(p)``
    is a constant with no gradient. It equals ``kdtutorial.common.losses.kd_kl_loss`` on the two-class logits
    ``[0, s]`` and ``[0, t]`` plus ``T**2 * H(p)``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _check_scores(student_logit, teacher_logit, "teacher_logit")
    target = torch.sigmoid(teacher_logit.detach() / temperature)
    bce = F.binary_cross_entropy_with_logits(student_logit / temperature, target, reduction="mean")
    return bce * temperature**2


def label_bce_loss(student_logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with the human labels (Good = 1, Bad = 0), temperature 1, batch mean.

    The labels' range is checked on every call except while a CUDA graph is being recorded (the check reads a value
    back to the host, which a capture forbids; the graphed training loops check their labels once, before)."""
    _check_scores(student_logit, labels, "labels")
    y = labels.detach().to(student_logit.dtype)
    capturing = y.is_cuda and torch.cuda.is_current_stream_capturing()
    if not capturing and ((y < 0) | (y > 1)).any():
        raise ValueError("labels must lie in [0, 1] (Good = 1, Bad = 0)")
    return F.binary_cross_entropy_with_logits(student_logit, y, reduction="mean")


def relevance_kd_loss(
    student_logit: torch.Tensor,
    teacher_logit: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    kind: str = "mse",
    alpha: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The student's objective: ``alpha * KD(s, t) + (1 - alpha) * BCE(s, y)``.

    ``KD`` is ``score_mse_loss`` (``kind="mse"``) or ``score_bce_loss`` at ``temperature`` (``kind="bce"``).
    With ``labels=None`` (the unlabeled transfer set the teacher has scored, as in the talk's recipe) only the
    KD term is used, whatever ``alpha`` is, as ``kdtutorial.common.losses.hinton_loss`` does; ``alpha=1`` is pure
    distillation too. ``temperature`` only applies to ``kind="bce"``: any other value with ``"mse"`` is an
    error rather than silently ignored.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if kind == "mse" and temperature != 1.0:
        raise ValueError(f"temperature applies to kind='bce' only; got temperature={temperature} with kind='mse'")
    if kind == "mse":
        kd = score_mse_loss(student_logit, teacher_logit)
    else:
        kd = score_bce_loss(student_logit, teacher_logit, temperature)
    if labels is None:
        return kd
    return alpha * kd + (1.0 - alpha) * label_bce_loss(student_logit, labels)


def mean_teacher_logits(*teachers, weights=None):
    """Several teachers as one: the (weighted) mean of their logits for the same pairs, ``t = sum_k w_k t_k /
    sum_k w_k`` (the Microsoft Ads talk's multi-teacher distillation; teachers of different seeds, or the
    domain-adapted one). Each argument is one logit per pair (a numpy array or tensor), all of one shape; returns a
    float32 numpy array. The mean of logits, not of probabilities: the student then learns one logit per pair with
    the same losses as from one teacher."""
    if not teachers:
        raise ValueError("mean_teacher_logits needs at least one teacher's logits")
    arrays = [np.asarray(t.detach().cpu() if torch.is_tensor(t) else t, dtype=np.float64) for t in teachers]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"the teachers' logits must have one shape (one logit per pair), got {sorted(shapes)}")
    w = np.ones(len(arrays)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrays),) or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be {len(arrays)} non-negative numbers with a positive sum, got {weights}")
    return (sum(wk * a for wk, a in zip(w, arrays)) / w.sum()).astype(np.float32)
