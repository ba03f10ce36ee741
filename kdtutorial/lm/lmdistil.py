r"""Training a causal-LM student by each of lesson 08's methods, on the same prompts and token budget.

Every step takes ``batch_size`` windows (a prompt and ``C`` continuation tokens, :mod:`kd.lmtext`) and trains on
the continuation positions only. The methods differ in where the continuation comes from and what is matched:

================== ========================== ====================================================================
method             continuation               loss on the continuation positions
================== ========================== ====================================================================
supervised CE      the real text              next-token cross-entropy (no teacher)
word-level KD      the real text              forward KL(p_T || q_S) per token (Hinton et al. 2015; Kim & Rush
                                              2016, eq. 4, with its alpha = 1)
top-k KD           the real text              forward KL from the teacher's ``top_k`` logits, cached once and
                                              renormalised (:func:`kd.divergences.top_k_forward_kl`)
sequence-level KD  the teacher's (greedy)     cross-entropy on the teacher's tokens (Kim & Rush 2016, eq. 6 with
                                              the beam replaced by greedy decoding), generated once
on-policy JSD      the student's own sample   JSD(beta) per token against the teacher (GKD, Agarwal et al. 2024,
                   (share ``lam`` of steps;   algorithm 1); beta = 1 is the reverse KL of MiniLLM (Gu et al.
                   the real text otherwise)   2024), trained here without MiniLLM's policy gradient
================== ========================== ====================================================================

Same seed, same batches: the order of the training windows and the student's samples follow the seed, so the
methods are paired seed by seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from kdtutorial.common.checks import check_choice
from kdtutorial.common.environment import autocast
from kdtutorial.lm.decoders import lm_logits
from kdtutorial.lm.divergences import (TopKTargets, generalized_jsd, next_token_cross_entropy, token_forward_kl,
                                       top_k_forward_kl, top_k_targets)
from kdtutorial.lm.generation import continue_prompts
from kdtutorial.lm.lmtext import Windows

__all__ = ["LM_METHODS", "LMSetting", "teacher_top_k", "teacher_continuations", "method_loss", "train_lm_student"]

LM_METHODS = ("supervised CE", "word-level KD", "top-k KD", "sequence-level KD", "on-policy JSD")


@dataclass
class LMSetting:
    """What every method shares: steps x batch_size windows, AdamW at ``lr`` (linear decay), and the loss knobs."""

    steps: int = 40
    batch_size: int = 8
    lr: float = 1e-4
    T: float = 1.0          # temperature of the KD terms
    beta: float = 0.5       # JSD(beta): 0 forward KL, 1 reverse KL
    lam: float = 0.5        # on-policy share: the fraction of steps whose continuation the student samples
    top_k: int = 50         # logits kept per token for top-k KD
    sample_temperature: float = 1.0
    device: str = "cpu"
    amp: bool = False
    eval_batch: int = 64
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("beta", "lam"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name.upper()} must be a number in [0, 1], got {value!r}")
        for name in ("steps", "batch_size", "top_k"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name.upper()} must be a positive integer, got {value!r}")


@torch.no_grad()
def teacher_top_k(teacher, windows: Windows, k: int, *, batch_size: int = 64, device="cpu",
                  amp: bool = False) -> TopKTargets:
    """The teacher's ``k`` largest logits at every target position of ``windows``, ``[n, length - 1, k]``."""
    device = torch.device(device)
    values, indices = [], []
    for start in range(0, len(windows), batch_size):
        ids = windows.ids[start:start + batch_size].to(device)
        with autocast(device, amp):
            logits = lm_logits(teacher, ids)[:, :-1].float()
        t = top_k_targets(logits, k)
        values.append(t.values.cpu())
        indices.append(t.indices.cpu())
    return TopKTargets(torch.cat(values), torch.cat(indices), teacher.config.vocab_size)


def teacher_continuations(teacher, windows: Windows, *, batch_size: int = 64, device="cpu") -> Windows:
    """Sequence-level KD's training text: the teacher's greedy continuation of every prompt, made once."""
    return continue_prompts(teacher, windows.prompts(), windows.continuation, sample=False,
                            batch_size=batch_size, device=device)


def method_loss(method: str, student, teacher, ids: torch.Tensor, mask: torch.Tensor, setting: LMSetting,
                top_k: TopKTargets | None = None) -> torch.Tensor:
    """One step's loss for ``method`` on windows ``ids`` (already chosen: real, teacher's or student's text)."""
    check_choice("method", method, LM_METHODS)
    device = ids.device
    with autocast(device, setting.amp):
        logits = lm_logits(student, ids)[:, :-1].float()
    targets = ids[:, 1:]
    if method in ("supervised CE", "sequence-level KD"):
        return next_token_cross_entropy(logits, targets, mask)
    if method == "top-k KD":
        if top_k is None:
            raise ValueError("top-k KD needs the teacher's cached top-k logits (teacher_top_k)")
        return top_k_forward_kl(logits, top_k.to(device), mask, setting.T)
    with torch.no_grad(), autocast(device, setting.amp):
        teacher_logits = lm_logits(teacher, ids)[:, :-1].float()
    if method == "word-level KD":
        return token_forward_kl(logits, teacher_logits, mask, setting.T)
    return generalized_jsd(logits, teacher_logits, setting.beta, mask, setting.T)


def train_lm_student(method: str, student, teacher, train: Windows, setting: LMSetting, seed: int, *,
                     top_k: TopKTargets | None = None, teacher_text: Windows | None = None, progress=None
                     ) -> dict:
    """Train ``student`` in place by ``method`` for ``setting.steps`` steps; return its loss curve and timing.

    ``top_k`` (for top-k KD) and ``teacher_text`` (for sequence-level KD) are made once per teacher and shared by
    every seed. The window order and the on-policy draws follow ``seed``."""
    check_choice("method", method, LM_METHODS)
    if method == "sequence-level KD" and teacher_text is None:
        raise ValueError("sequence-level KD needs the teacher's continuations (teacher_continuations)")
    device = torch.device(setting.device)
    student.to(device).train()
    teacher.to(device).eval()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=setting.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / setting.steps)
    generator = torch.Generator().manual_seed(seed)
    mask_all = train.target_mask()
    order = torch.randperm(len(train), generator=generator)
    first = 0  # where the next batch starts in ``order``
    losses, on_policy_steps, start = [], 0, time.perf_counter()
    for step in range(setting.steps):
        if first + setting.batch_size > len(train):  # a new epoch: a new order (a last partial batch is dropped)
            order = torch.randperm(len(train), generator=generator)
            first = 0
        rows = order[first:first + setting.batch_size]
        first += setting.batch_size
        source = teacher_text if method == "sequence-level KD" else train
        ids = source.ids[rows]
        if method == "on-policy JSD" and torch.rand((), generator=generator).item() < setting.lam:
            draw = int(torch.randint(0, 2**31 - 1, (), generator=generator))
            ids = continue_prompts(student, train.prompts()[rows], train.continuation, sample=True, seed=draw,
                                   temperature=setting.sample_temperature, batch_size=len(rows),
                                   device=device).ids
            on_policy_steps += 1
        loss = method_loss(method, student, teacher, ids.to(device), mask_all[rows].to(device), setting,
                           top_k[rows] if top_k is not None else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach())  # read once after the loop: a .item() per step would wait for the GPU
        if progress is not None:
            progress.update(1)
    student.eval()
    losses = torch.stack(losses).tolist() if losses else []
    return {"losses": losses, "seconds": time.perf_counter() - start, "on_policy_steps": on_policy_steps}
