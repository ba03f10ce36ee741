r"""Token-level divergences between a teacher's and a student's next-token distributions (lesson 08).

A causal LM's logits are ``[batch, length, vocab]``: position ``t`` predicts token ``t + 1``. Every loss here is
computed at each position, summed over the vocabulary and **averaged over the positions that count**
(``mask``: real target tokens, not padding, and not the prompt when only a continuation is distilled). So a
batch of long sequences weighs each token equally, whatever the padding.

With :math:`p = \mathrm{softmax}(z_T / T)` (teacher) and :math:`q = \mathrm{softmax}(z_S / T)` (student):

* forward KL, Hinton et al. (2015) per token ("word-level KD", Kim & Rush 2016, eq. 4):
  :math:`\mathrm{KL}(p \,\|\, q) = \sum_v p_v (\log p_v - \log q_v)`, mode covering;
* reverse KL, MiniLLM (Gu et al., ICLR 2024, eq. 1): :math:`\mathrm{KL}(q \,\|\, p)`, mode seeking;
* generalised Jensen-Shannon, GKD (Agarwal et al., ICLR 2024, eq. 2 with its mixture weight as TRL's GKD trainer
  writes it): :math:`\mathrm{JSD}(\beta) = \beta\, \mathrm{KL}(p \,\|\, m) + (1 - \beta)\, \mathrm{KL}(q \,\|\, m)`,
  :math:`m = \beta p + (1 - \beta) q`. It vanishes at both ends, so, as TRL does, ``beta = 0`` returns the forward KL
  and ``beta = 1`` the reverse KL; in between :math:`\mathrm{JSD}(\beta)/\beta \to \mathrm{KL}(p\|q)` as
  :math:`\beta \to 0` and :math:`\mathrm{JSD}(\beta)/(1-\beta) \to \mathrm{KL}(q\|p)` as :math:`\beta \to 1`.

The soft terms are multiplied by ``T**2`` as in the course's classification losses (``kd.losses``), so a change
of temperature does not change their weight. The teacher side is always detached.

The vocabulary is what makes LMs expensive to distil: 49,152 logits per token for SmolLM2. :func:`top_k_targets`
keeps the teacher's ``k`` largest logits per token (cached once, ``k * 6`` bytes a token in fp16 + int32 instead of
``vocab * 2``), and :func:`top_k_forward_kl` distils from them, renormalised over those ``k``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["masked_token_mean", "next_token_cross_entropy", "token_forward_kl", "token_reverse_kl",
           "generalized_jsd", "top_k_targets", "top_k_forward_kl", "TopKTargets"]


def _check_temperature(T: float) -> None:
    if not T > 0:
        raise ValueError(f"temperature T must be > 0, got {T!r}")


def _check_shapes(student_logits, teacher_logits, mask) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)} (token-level KD needs one vocabulary: the same tokenizer)")
    if mask is not None and tuple(mask.shape) != tuple(student_logits.shape[:-1]):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(student_logits.shape[:-1])}")


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-token ``values`` ``[batch, length]`` over the positions where ``mask`` is true (all when None).
    A mask with no true position is refused: there would be nothing to average."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    n = mask.sum()
    if n.item() == 0:
        raise ValueError("mask selects no token: nothing to average (is every target a prompt or pad token?)")
    return (values * mask).sum() / n


def next_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None):
    """The supervised LM loss: :math:`-\\log q(y_{t+1} \\mid y_{\\le t})`, averaged over masked positions.

    ``logits[:, t]`` is scored against ``targets[:, t]`` (the caller shifts: ``targets = ids[:, 1:]`` for
    ``logits[:, :-1]``)."""
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return masked_token_mean(nll, mask)


def _log_probs(student_logits, teacher_logits, mask, T: float):
    """(log q_student, log p_teacher) at temperature ``T`` after the shared checks; the teacher side detached."""
    _check_temperature(T)
    _check_shapes(student_logits, teacher_logits, mask)
    return F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits.detach() / T, dim=-1)


def _per_token_kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) per position from log-probabilities, summed over the vocabulary."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def token_forward_kl(student_logits, teacher_logits, mask=None, T: float = 1.0) -> torch.Tensor:
    """Word-level KD: ``T**2 * KL(p_teacher || q_student)`` per token, averaged over masked positions."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, T)
    return masked_token_mean(_per_token_kl(log_p, log_q), mask) * T**2


def token_reverse_kl(student_logits, teacher_logits, mask=None, T: float = 1.0) -> torch.Tensor:
    """MiniLLM's divergence per token: ``T**2 * KL(q_student || p_teacher)``, averaged over masked positions."""
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, T)
    return masked_token_mean(_per_token_kl(log_q, log_p), mask) * T**2


def generalized_jsd(student_logits, teacher_logits, beta: float = 0.5, mask=None, T: float = 1.0) -> torch.Tensor:
    """GKD's JSD(beta) per token (module docstring), ``T**2`` times, averaged over masked positions.

    ``beta`` must lie in [0, 1]: 0 gives the forward KL, 1 the reverse KL (TRL's convention)."""
    if isinstance(beta, bool) or not (isinstance(beta, (int, float)) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta must be a number in [0, 1] (0: forward KL, 1: reverse KL), got {beta!r}")
    if beta == 0:
        return token_forward_kl(student_logits, teacher_logits, mask, T)
    if beta == 1:
        return token_reverse_kl(student_logits, teacher_logits, mask, T)
    log_q, log_p = _log_probs(student_logits, teacher_logits, mask, T)
    log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1 - beta)]), dim=0)
    jsd = beta * _per_token_kl(log_p, log_m) + (1 - beta) * _per_token_kl(log_q, log_m)
    return masked_token_mean(jsd, mask) * T**2


class TopKTargets:
    """A teacher's ``k`` largest logits per token (``values`` fp16, ``indices`` int32), ``[..., k]`` each."""

    def __init__(self, values: torch.Tensor, indices: torch.Tensor, vocab_size: int):
        self.values, self.indices, self.vocab_size = values, indices, vocab_size

    @property
    def k(self) -> int:
        return self.values.shape[-1]

    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size() + self.indices.numel() * self.indices.element_size()

    def full_nbytes(self, bytes_per_logit: int = 2) -> int:
        """What the full logits of the same tokens would take (fp16 by default)."""
        return self.values[..., 0].numel() * self.vocab_size * bytes_per_logit

    def to(self, device) -> "TopKTargets":
        return TopKTargets(self.values.to(device), self.indices.to(device), self.vocab_size)

    def __getitem__(self, item) -> "TopKTargets":
        return TopKTargets(self.values[item], self.indices[item], self.vocab_size)


def top_k_targets(teacher_logits: torch.Tensor, k: int) -> TopKTargets:
    """Keep the teacher's ``k`` largest logits per position (the rest are dropped, not stored as -inf)."""
    vocab = teacher_logits.shape[-1]
    if not (isinstance(k, int) and 1 <= k <= vocab):
        raise ValueError(f"k must be an integer in [1, {vocab}] (the vocabulary size), got {k!r}")
    values, indices = teacher_logits.detach().topk(k, dim=-1)
    return TopKTargets(values.to(torch.float16), indices.to(torch.int32), vocab)


def top_k_forward_kl(student_logits: torch.Tensor, targets: TopKTargets, mask=None, T: float = 1.0) -> torch.Tensor:
    r"""Forward KL from a top-k teacher: :math:`\sum_{v \in K} \tilde p_v (\log \tilde p_v - \log q_v)`, ``T**2`` times.

    :math:`\tilde p = \mathrm{softmax}(z_{T,K} / T)` is the teacher renormalised over its ``k`` kept tokens, and
    :math:`q` is the student's full-vocabulary softmax, so this is a true KL between two distributions over the
    vocabulary (:math:`\tilde p` is zero outside ``K``). With ``k`` = the vocabulary it equals
    :func:`token_forward_kl`."""
    _check_temperature(T)
    if targets.values.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"top-k targets cover positions {tuple(targets.values.shape[:-1])}, the student's logits "
                         f"{tuple(student_logits.shape[:-1])}")
    if targets.vocab_size != student_logits.shape[-1]:
        raise ValueError(f"top-k targets come from a vocabulary of {targets.vocab_size}, the student has "
                         f"{student_logits.shape[-1]} (the same tokenizer is needed)")
    log_q = F.log_softmax(student_logits / T, dim=-1).gather(-1, targets.indices.long())
    log_p = F.log_softmax(targets.values.float() / T, dim=-1)
    return masked_token_mean((log_p.exp() * (log_p - log_q)).sum(-1), mask) * T**2
