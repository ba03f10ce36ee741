"""DistilBERT's training objective (Sanh et al., 2019, section 3) and an internal-representation variant.

The *triple loss* of a student ``s`` learning from a teacher ``t`` on masked text is

    L = w_ce * L_ce + w_mlm * L_mlm + w_cos * L_cos

* ``L_ce``  soft-target loss on the masked positions: ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` averaged
  over the masked tokens (the release's ``KLDivLoss(reduction="batchmean")`` restricted to the mask, T = 2).
  The paper writes it as the cross-entropy ``-sum_i t_i log s_i``; the two differ by the teacher's entropy,
  a constant, so they have the same gradient (a test shows it).
* ``L_mlm`` the ordinary masked-language-model loss on the true tokens (BERT's 15% masking, 80/10/10).
* ``L_cos`` ``1 - cos(h_s, h_t)`` between the last hidden states, averaged over real (non-padding) tokens,
  which "aligns the directions" of the two models' hidden vectors.

The release's example weights are ``w_ce = 5, w_mlm = 2, w_cos = 1`` (:data:`RELEASE_WEIGHTS`).

The *internal-representation* variant (Aguilar et al., "Knowledge Distillation from Internal Representations",
AAAI 2020) matches what happens inside the network instead of the last hidden state: ``L_attn`` is the KL
divergence between the teacher's and the student's self-attention distributions of mapped layers (student layer
``i`` <-> teacher layer ``layers[i]``), MiniLM's loss (Wang et al., NeurIPS 2020; TinyBERT, Jiao et al. 2020,
uses an MSE on the attention scores instead), and ``L_cls`` is ``1 - cos`` between their [CLS] vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdtutorial.common.losses import kd_kl_loss

__all__ = [
    "RELEASE_WEIGHTS", "INTERNAL_WEIGHTS", "IGNORE_INDEX", "mask_tokens", "masked_soft_target_loss",
    "masked_soft_cross_entropy", "mlm_loss", "hidden_cosine_loss", "attention_kl_loss", "cls_cosine_loss",
    "LossParts", "distillation_loss", "check_weights",
]

IGNORE_INDEX = -100  # label of positions that are not predicted (the PyTorch / transformers convention)
RELEASE_WEIGHTS = {"ce": 5.0, "mlm": 2.0, "cos": 1.0, "attn": 0.0, "cls": 0.0}
INTERNAL_WEIGHTS = {"ce": 5.0, "mlm": 2.0, "cos": 0.0, "attn": 1.0, "cls": 1.0}


def mask_tokens(input_ids: torch.Tensor, special_tokens_mask: torch.Tensor, *, mask_token_id: int,
                vocab_size: int, generator: torch.Generator | None = None, prob: float = 0.15,
                mask_frac: float = 0.8, random_frac: float = 0.1):
    """BERT's masking (Devlin et al., 2019, section 3.1), used by DistilBERT.

    Each non-special token is selected with probability ``prob``; a selected token becomes ``[MASK]`` with
    probability ``mask_frac``, a random token with probability ``random_frac`` and stays as it is otherwise.
    Returns ``(masked_ids, labels)`` where ``labels`` holds the original token at selected positions and
    :data:`IGNORE_INDEX` elsewhere. ``input_ids`` is not modified.
    """
    if not 0 < prob < 1 or mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1:
        raise ValueError(f"bad masking fractions: prob={prob}, mask_frac={mask_frac}, random_frac={random_frac}")
    device = input_ids.device
    shape = input_ids.shape

    def uniform():
        return torch.rand(shape, generator=generator, device="cpu").to(device)

    selectable = ~special_tokens_mask.bool()
    selected = (uniform() < prob) & selectable
    draw = uniform()
    to_mask = selected & (draw < mask_frac)
    to_random = selected & (draw >= mask_frac) & (draw < mask_frac + random_frac)
    random_ids = torch.randint(vocab_size, shape, generator=generator, device="cpu").to(device)
    masked = input_ids.clone()
    masked[to_mask] = mask_token_id
    masked[to_random] = random_ids[to_random]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[selected] = input_ids[selected]
    return masked, labels


def _selected(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows of ``[batch, seq, vocab]`` logits at the predicted positions, as ``[n_selected, vocab]`` (float32).

    Logits already restricted to the masked positions (``[n, vocab]`` with ``labels`` of shape ``[n]``) pass
    through unchanged.
    """
    selected = logits[labels != IGNORE_INDEX]
    return selected.to(torch.promote_types(selected.dtype, torch.float32))


def masked_soft_target_loss(student_logits, teacher_logits, labels, T: float = 2.0) -> torch.Tensor:
    """``L_ce``: ``T^2 * KL(p_t^T || p_s^T)`` averaged over the masked positions (``labels != -100``)."""
    s, t = _selected(student_logits, labels), _selected(teacher_logits, labels)
    if len(s) == 0:  # no masked token in the batch: no signal, but keep the graph
        return student_logits.sum() * 0.0
    return kd_kl_loss(s, t, T)


def masked_soft_cross_entropy(student_logits, teacher_logits, labels, T: float = 2.0) -> torch.Tensor:
    """The paper's form of ``L_ce``: ``-T^2 * sum_i p_t,i^T log p_s,i^T``, mean over masked positions."""
    s = _selected(student_logits, labels) / T
    t = _selected(teacher_logits, labels).detach() / T
    if len(s) == 0:  # no masked token in the batch
        return student_logits.sum() * 0.0
    return -(F.softmax(t, dim=-1) * F.log_softmax(s, dim=-1)).sum(dim=-1).mean() * T**2


def mlm_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_mlm``: cross-entropy of the student's prediction of the original token at the masked positions."""
    if not (labels != IGNORE_INDEX).any():
        return student_logits.sum() * 0.0
    return F.cross_entropy(student_logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


def hidden_cosine_loss(student_hidden, teacher_hidden, attention_mask) -> torch.Tensor:
    """``L_cos``: mean of ``1 - cos(h_s, h_t)`` over the real tokens (``attention_mask == 1``)."""
    keep = attention_mask.bool()
    cos = F.cosine_similarity(student_hidden[keep].float(), teacher_hidden.detach()[keep].float(), dim=-1)
    return (1 - cos).mean()


def attention_kl_loss(student_attentions, teacher_attentions, attention_mask, layers, eps: float = 1e-12):
    """``L_attn``: ``KL(A_t || A_s)`` of the attention distributions, student layer ``i`` vs teacher ``layers[i]``.

    Attentions are ``[batch, heads, query, key]`` row-stochastic tensors (transformers returns them with
    ``attn_implementation="eager"``). The KL of each row is averaged over heads, real query positions and the
    mapped layers.
    """
    if not student_attentions or not teacher_attentions:
        raise ValueError("no attention maps: load both models with attn_implementation=\"eager\" "
                         "(transformers 5 returns attentions only then)")
    if len(student_attentions) != len(layers):
        raise ValueError(f"{len(student_attentions)} student attention maps but {len(layers)} mapped layers")
    rows = attention_mask.bool()[:, None, :].float()  # [B, 1, Q]: real query positions
    total = 0.0
    for s_att, layer in zip(student_attentions, layers):
        t_att = teacher_attentions[layer].detach().float()
        kl = (t_att * (torch.log(t_att + eps) - torch.log(s_att.float() + eps))).sum(dim=-1)  # [B, H, Q]
        total = total + (kl * rows).sum() / (rows.sum() * kl.shape[1])
    return total / len(layers)


def cls_cosine_loss(student_hidden, teacher_hidden) -> torch.Tensor:
    """``L_cls``: mean of ``1 - cos`` between the student's and the teacher's first-token ([CLS]) vectors."""
    s, t = student_hidden[:, 0].float(), teacher_hidden.detach()[:, 0].float()
    return (1 - F.cosine_similarity(s, t, dim=-1)).mean()


@dataclass
class LossParts:
    """The weighted total and each term: ``terms`` detached tensors (reading them later does not make the host wait
    for the GPU at every step), ``parts`` the same as floats for logging."""

    total: torch.Tensor
    terms: dict

    @property
    def parts(self) -> dict:
        return {key: value.item() for key, value in self.terms.items()}


def check_weights(weights: dict) -> dict:
    """Validate a loss-weight dict: known keys, non-negative values, at least one positive."""
    unknown = set(weights) - set(RELEASE_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; allowed {sorted(RELEASE_WEIGHTS)}")
    full = {key: float(weights.get(key, 0.0)) for key in RELEASE_WEIGHTS}
    if any(value < 0 for value in full.values()) or not any(full.values()):
        raise ValueError(f"loss weights must be >= 0 with at least one > 0, got {full}")
    return full


def distillation_loss(student_out, teacher_out, labels, attention_mask, *, weights=None, T: float = 2.0,
                      layers=None) -> LossParts:
    """The weighted sum of the terms whose weight is positive (all DistilBERT terms by default).

    ``student_out`` / ``teacher_out`` are masked-LM model outputs with ``logits`` and ``hidden_states``
    (and ``attentions`` when the ``attn`` weight is positive, with ``layers`` mapping student to teacher layers).
    ``logits`` may be the full ``[batch, seq, vocab]`` tensor with ``labels`` of shape ``[batch, seq]``, or
    only the masked rows ``[n, vocab]`` with their ``[n]`` labels (cheaper: the vocabulary projection is the
    most expensive matrix product of a small BERT).
    """
    weights = check_weights(RELEASE_WEIGHTS if weights is None else weights)
    terms = {
        "ce": lambda: masked_soft_target_loss(student_out.logits, teacher_out.logits, labels, T),
        "mlm": lambda: mlm_loss(student_out.logits, labels),
        "cos": lambda: hidden_cosine_loss(student_out.hidden_states[-1], teacher_out.hidden_states[-1],
                                          attention_mask),
        "attn": lambda: attention_kl_loss(student_out.attentions, teacher_out.attentions, attention_mask,
                                          layers),
        "cls": lambda: cls_cosine_loss(student_out.hidden_states[-1], teacher_out.hidden_states[-1]),
    }
    total, parts = 0.0, {}
    for key, weight in weights.items():
        if weight > 0:
            value = terms[key]()
            parts[key] = value.detach().float()
            total = total + weight * value
    return LossParts(total, parts)
