"""Minimax-kNN: which retrieved neighbours a student should be distilled on (Kamalloo, Rezagholizadeh, Passban,
Ghodsi, "Not Far Away, Not So Close: Sample Efficient Nearest Neighbour Data Augmentation via MiniMax", ACL 2021).

For a training sentence ``x`` a retriever returns ``K`` neighbours ``x'_1 .. x'_K`` from unlabelled text. Vanilla
kNN augmentation distils the student on all ``K``. Minimax-kNN keeps only ``k1 << K`` of them, in two steps:

1. *Not far away* (:func:`distance_filter`): drop a neighbour whose teacher prediction is too far from the
   teacher's prediction on ``x``, ``d(p_T(x), p_T(x')) > max_distance``: it is likely to carry another label.
   The released code filters in the teacher's output space with a threshold of 0.22; **our distance is the total
   variation** ``d = 1/2 sum_c |p_T(c | x) - p_T(c | x')|`` (in ``[0, 1]``; for two classes the difference of the
   positive probabilities), a choice of ours (:func:`teacher_distance`).
2. *Not so close* (:func:`top_divergence`): of the neighbours left, keep the ``k1`` with the largest teacher-student
   divergence ``KL(p_T^tau(x') || p_S^tau(x'))`` (:func:`candidate_divergence`), the ones the student has most to
   learn from. The student changes as it trains, so the choice is made again at every step (the maximisation of
   the minimax; the student's KD step is the minimisation).

All functions work on tensors of shape ``[n, K]`` (``[n, K, C]`` for logits): row ``i`` is training sentence ``i``,
column ``j`` its ``j``-th neighbour.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["teacher_distance", "distance_filter", "candidate_divergence", "top_divergence", "check_k1"]


def check_k1(k1: int, K: int) -> int:
    """``k1`` if ``1 <= k1 <= K`` (Minimax-kNN keeps ``k1`` of the ``K`` retrieved neighbours), else a ValueError
    naming both."""
    if isinstance(k1, bool) or not isinstance(k1, int) or not 1 <= k1 <= K:
        raise ValueError(f"k1 = {k1!r} is not allowed: Minimax-kNN keeps k1 of the K = {K} retrieved neighbours, "
                         f"so 1 <= k1 <= K")
    return k1


def teacher_distance(original_logits: torch.Tensor, neighbour_logits: torch.Tensor) -> torch.Tensor:
    """Total-variation distance ``1/2 sum_c |p_T(c|x) - p_T(c|x')|`` between the teacher's class distributions on
    each training sentence (logits ``[n, C]``) and on each of its neighbours (``[n, K, C]``): ``[n, K]`` in [0, 1].
    Our choice of distance for Minimax-kNN's filter (the paper's released threshold is 0.22)."""
    if original_logits.dim() != 2 or neighbour_logits.dim() != 3 or \
            neighbour_logits.shape[0] != original_logits.shape[0] or \
            neighbour_logits.shape[2] != original_logits.shape[1]:
        raise ValueError(f"expected original logits [n, C] and neighbour logits [n, K, C], got "
                         f"{tuple(original_logits.shape)} and {tuple(neighbour_logits.shape)}")
    p = F.softmax(original_logits.float(), dim=-1).unsqueeze(1)
    q = F.softmax(neighbour_logits.float(), dim=-1)
    return 0.5 * (p - q).abs().sum(-1)


def distance_filter(original_logits: torch.Tensor, neighbour_logits: torch.Tensor,
                    max_distance: float) -> torch.Tensor:
    """``[n, K]`` booleans: True where a neighbour is *not far away*, ``teacher_distance <= max_distance``.
    ``max_distance = 1`` keeps every neighbour (the total variation is at most 1)."""
    if not 0.0 <= float(max_distance) <= 1.0:
        raise ValueError(f"MAX_DISTANCE = {max_distance!r} is not allowed: a total-variation distance is in [0, 1]")
    return teacher_distance(original_logits, neighbour_logits) <= float(max_distance)


def candidate_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float = 1.0
                         ) -> torch.Tensor:
    """``KL(p_T^tau || p_S^tau)`` of every candidate, summed over classes, not averaged: logits ``[..., C]`` ->
    ``[...]`` (e.g. ``[n, K, C]`` -> ``[n, K]``). The quantity Minimax-kNN ranks neighbours by."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher and student logits differ in shape: {tuple(teacher_logits.shape)} vs "
                         f"{tuple(student_logits.shape)}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    log_p = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    log_q = F.log_softmax(student_logits.float() / tau, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def top_divergence(divergence: torch.Tensor, allowed: torch.Tensor, k1: int) -> torch.Tensor:
    """``[n, K]`` booleans: per row the ``k1`` allowed candidates of largest ``divergence`` (ties: the lower column,
    i.e. the nearer neighbour). A row with fewer than ``k1`` allowed candidates keeps all of them; a row with none
    keeps none. ``allowed`` is :func:`distance_filter`'s output (all True: no filter)."""
    if divergence.dim() != 2 or allowed.shape != divergence.shape:
        raise ValueError(f"divergence and allowed must be [n, K] of one shape, got {tuple(divergence.shape)} and "
                         f"{tuple(allowed.shape)}")
    check_k1(k1, divergence.shape[1])
    allowed = allowed.bool()
    # disallowed candidates sort last (-inf); a stable sort keeps equal divergences in column order
    ranked = torch.sort(divergence.float().masked_fill(~allowed, float("-inf")), dim=1, descending=True,
                        stable=True).indices
    top = ranked[:, :k1]
    chosen = torch.zeros_like(allowed)
    chosen.scatter_(1, top, allowed.gather(1, top))
    return chosen
