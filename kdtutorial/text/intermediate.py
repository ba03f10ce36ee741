"""Losses on what the layers hold: PKD, TinyBERT, CKD and ALP-KD (lesson 07).

Each function takes the states a :class:`~kdtutorial.text.layers.LayerMap` pairs up and returns one scalar; the
equations are in the docstrings and ``tests/text/test_intermediate.py`` checks each against a float64 formula.
Hidden states are ``[batch, seq, width]`` (Hugging Face's ``hidden_states[l]``; ``l = 0`` the embeddings).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pkd_patient_loss(student_cls, teacher_cls) -> torch.Tensor:
    """PKD's patient term (Sun et al., EMNLP 2019, eq. 7): ``sum_j || h_s^j/||h_s^j|| - h_t^j/||h_t^j|| ||_2^2``,
    averaged over the batch; ``student_cls`` / ``teacher_cls``: lists of ``[batch, width]`` [CLS] states of mapped
    layers (the same width: PKD's student is as wide as its teacher)."""
    if len(student_cls) != len(teacher_cls):
        raise ValueError(f"{len(student_cls)} student states but {len(teacher_cls)} teacher states: map them one to one")
    total = 0.0
    for s, t in zip(student_cls, teacher_cls):
        if s.shape != t.shape:
            raise ValueError(f"PKD compares states of one width: student {tuple(s.shape)}, teacher {tuple(t.shape)}")
        total = total + (F.normalize(s, dim=-1) - F.normalize(t.detach(), dim=-1)).pow(2).sum(-1).mean()
    return total


def pkd_loss(ce, kd, patient, alpha: float, beta: float) -> torch.Tensor:
    """PKD's objective (eq. 8): ``(1 - alpha) * CE + alpha * KD + beta * PT``; ``kd`` already carries its ``T^2``
    (``kd.losses.kd_kl_loss``). The released grid: T in {5, 10, 20}, alpha in {0.2, 0.5, 0.7}, beta in
    {10, 100, 500, 1000}."""
    return (1 - alpha) * ce + alpha * kd + beta * patient


def attention_scores(attention_module, hidden_in: torch.Tensor, attention_mask: torch.Tensor,
                     position_bias: torch.Tensor | None = None) -> torch.Tensor:
    """The *pre-softmax* attention scores ``Q K^T / sqrt(d) (+ position bias) + mask`` (``[batch, heads, seq, seq]``)
    of one self-attention module, recomputed from the layer's input ``hidden_in``.

    Hugging Face returns attention *probabilities* (``output_attentions=True``), after the softmax; TinyBERT's loss
    wants the scores before it. They are rebuilt here from the module's own query and key projections (BERT's
    ``self.query`` / ``self.key``, MPNet's ``attn.q`` / ``attn.k``); MPNet adds a relative-position bias shared by
    its layers, which :func:`position_bias` gives. Padded keys get ``finfo.min``, so ``softmax(scores)`` equals the
    probabilities the model returns (a test checks it for both families).
    """
    self_attn = getattr(attention_module, "self", None) or getattr(attention_module, "attn", attention_module)
    query = getattr(self_attn, "query", None) or self_attn.q
    key = getattr(self_attn, "key", None) or self_attn.k
    heads = self_attn.num_attention_heads if hasattr(self_attn, "num_attention_heads") else self_attn.config.num_attention_heads
    b, s, _ = hidden_in.shape
    q = query(hidden_in).view(b, s, heads, -1).transpose(1, 2)
    k = key(hidden_in).view(b, s, heads, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if position_bias is not None:
        scores = scores + position_bias
    keep = attention_mask[:, None, None, :].bool()
    return scores.masked_fill(~keep, torch.finfo(scores.dtype).min)


def position_bias(encoder, hidden: torch.Tensor) -> torch.Tensor | None:
    """The relative-position bias an MPNet encoder adds to every layer's scores (``[batch, heads, seq, seq]``), or
    ``None`` for an encoder without one (BERT, MiniLM: their positions are in the embeddings)."""
    stack = getattr(getattr(encoder, "base_model", encoder), "encoder", None)
    compute = getattr(stack, "compute_position_bias", None)
    return None if compute is None else compute(hidden)


def tinybert_attention_loss(student_scores, teacher_scores, attention_mask) -> torch.Tensor:
    """TinyBERT's attention term (Jiao et al., 2020, eq. 7-8): ``1/h sum_i MSE(A_s^i, A_t^i)`` on the pre-softmax
    scores of a mapped layer pair, with the masked (padding) positions set to 0 on both sides as the release does
    (they would otherwise dominate the MSE). The same number of heads on both sides."""
    keep = attention_mask[:, None, None, :].bool() & attention_mask[:, None, :, None].bool()
    s = torch.where(keep, student_scores, torch.zeros_like(student_scores))
    t = torch.where(keep, teacher_scores.detach(), torch.zeros_like(teacher_scores))
    return F.mse_loss(s, t)


def tinybert_hidden_loss(student_hidden, teacher_hidden, projection=None) -> torch.Tensor:
    """TinyBERT's hidden-state (and embedding) term (eq. 9-10): ``MSE(H_s W_h, H_t)``; ``projection`` is the learned
    ``W_h`` (a ``Linear(student width, teacher width)``), needed when the student is narrower."""
    s = student_hidden if projection is None else projection(student_hidden)
    if s.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(f"the student's states are {student_hidden.shape[-1]} wide and the teacher's "
                         f"{teacher_hidden.shape[-1]}: pass projection=torch.nn.Linear(student width, teacher width)")
    return F.mse_loss(s, teacher_hidden.detach())


def ckd_combine(teacher_states, projection) -> torch.Tensor:
    """CKD's combination of a group of teacher layers (Wu et al., 2020, eq. 2): concatenate their states along the
    width and project to the student's width, ``C = [h_t^a; ...; h_t^b] W``; ``projection``: a
    ``Linear(len(group) * teacher width, student width)``."""
    return projection(torch.cat([t.detach() for t in teacher_states], dim=-1))


def ckd_loss(student_states, combined) -> torch.Tensor:
    """CKD's layer term: ``sum_j MSE(h_s^j, C^j)`` over the student layers and their combined groups."""
    return sum(F.mse_loss(s, c) for s, c in zip(student_states, combined))


def alp_attention(student_state, teacher_states, scale: bool = False):
    """ALP-KD's attention over teacher layers (Passban et al., AAAI 2021, eq. 3-4) for one student layer ``j``:
    ``alpha_jk = softmax_k(h_s^j . h_t^k)`` and ``C^j = sum_k alpha_jk h_t^k``, per example.

    ``student_state``: ``[batch, width]``; ``teacher_states``: a list of ``[batch, width]`` (every teacher layer).
    Returns ``(C^j [batch, width], alpha [batch, n])``. The paper does not say whether the dot product is scaled;
    by default we do not scale it, as its eq. 3 is written. Dot products of wide states are large, so the softmax is
    then nearly one-hot; ``scale=True`` divides them by ``sqrt(width)``, as the attention of Vaswani et al. (2017,
    eq. 1) does: our variant, not the paper's. It gives no release either: which states are compared is our choice
    (the [CLS] vectors, as the paper's figure shows)."""
    t = torch.stack([x.detach() for x in teacher_states], dim=1)  # [batch, n, width]
    dots = (t @ student_state.unsqueeze(-1)).squeeze(-1)  # [batch, n]
    if scale:
        dots = dots / math.sqrt(student_state.shape[-1])
    alpha = torch.softmax(dots, dim=-1)
    return (alpha.unsqueeze(-1) * t).sum(1), alpha


def alp_loss(student_states, teacher_states, scale: bool = False):
    """ALP-KD's layer term (eq. 5): ``sum_j MSE(h_s^j, C^j)``; returns the loss and the ``[m, batch, n]`` weights
    (for the heatmap of what each student layer attended to). ``scale``: as in :func:`alp_attention`."""
    total, weights = 0.0, []
    for s in student_states:
        context, alpha = alp_attention(s, teacher_states, scale)
        total = total + F.mse_loss(s, context)
        weights.append(alpha)
    return total, torch.stack(weights)
