"""MATE-KD: Masked Adversarial TExt, a companion to knowledge distillation (Rashid, Lioutas, Rezagholizadeh, ACL 2021).

A generator ``G`` (a masked LM sharing the teacher's and student's vocabulary) rewrites a fraction ``p`` of the
tokens: they become ``[MASK]``, ``G`` predicts a distribution over the vocabulary there, and a Gumbel-softmax sample
of it is mixed into each model's word-embedding table (``probs @ E`` at the chosen positions, ``E[id]`` elsewhere),
so the choice of words stays differentiable in ``G``'s weights (paper, section 3).

* Maximisation step (:func:`generator_step`): ``G`` alone ascends ``KL(T(G(x)) || S(G(x)))``.
* Minimisation step (:func:`student_step`): the student descends ``w_ce CE(y, S(x)) + w_kd tau^2 KL(T(x) || S(x))
  + w_adv tau^2 KL(T(G(x)) || S(G(x)))``, ``G``'s rewrite held fixed (weights: :func:`student_loss_weights`).
* :func:`train_mate_kd` alternates ``n_gen`` generator steps with ``n_student`` student steps (10 / 100 in the
  release). ``adversarial=False``: ``G`` stays untrained (random masked-LM augmentation); ``augment=False``: KD.

Deliberate differences from the released ``train_adversarial_student_bert.py``: its "divergence" is the
cross-entropy ``H(p_t, p_s)``, so its generator also raises the teacher's own entropy (here the KL); it may write
special tokens (here ``banned_ids`` are never written); a sentence may get no masked token (here at least one).
Shared with it: masking probability 0.3 (``--p_value``), Gumbel and KD temperature 1, gradient norms clipped to 5,
a generator learning rate of 5e-7 (its generator is a pretrained DistilRoBERTa-base masked LM).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kdtutorial.common.losses import hard_cross_entropy, kd_kl_loss
from kdtutorial.text.optim import adamw_with_warmup, planned_steps
from kdtutorial.common.environment import autocast
from kdtutorial.text.tokens import pad_rows, padded_batches

__all__ = ["Masking", "student_loss_weights", "choose_positions", "gumbel_softmax", "mix_embeddings", "rewrite",
           "perturbed_logits", "divergence", "generator_step", "student_step", "schedule_phases",
           "steps_with_generator", "train_mate_kd", "rewrite_examples", "unused_token_ids"]

FORMS = ("paper", "release")


@dataclass(frozen=True)
class Masking:
    """How ``G`` rewrites a batch: ``p`` of the eligible tokens become ``[MASK]`` (``mask_token_id``); tokens in
    ``special_ids`` (and padding) are never chosen; ``G`` never writes a token of ``banned_ids``. ``gumbel_tau`` and
    ``hard`` (straight-through one-hot) shape the Gumbel-softmax sample. ``p = 0.3`` is the release's default."""

    mask_token_id: int
    special_ids: frozenset
    banned_ids: frozenset
    p: float = 0.3
    gumbel_tau: float = 1.0
    hard: bool = True

    def __post_init__(self):
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"masking probability p must be in (0, 1], got {self.p}")
        if not self.gumbel_tau > 0:
            raise ValueError(f"Gumbel temperature must be > 0, got {self.gumbel_tau}")

    @classmethod
    def for_text(cls, text, mask_token_id: int, never_write=(), **kwargs) -> "Masking":
        """Special ids from a :class:`~kdtutorial.text.tokens.TokenizedText`; banned: those, ``[MASK]`` and the ids in
        ``never_write`` (e.g. :func:`unused_token_ids`)."""
        special = frozenset(int(i) for i in text.special_ids) | {int(text.pad_id)}
        banned = special | {int(mask_token_id)} | {int(i) for i in never_write}
        return cls(int(mask_token_id), special, frozenset(banned), **kwargs)


def unused_token_ids(tokenizer) -> frozenset:
    """Ids of a vocabulary's placeholder entries (``[unused0]``, ``[unused1]``, ... in BERT's): no text tokenizes to
    them, so a rewrite that used one would not be text. Pass them to ``never_write``."""
    pattern = re.compile(r"^\[unused\d+\]$")
    return frozenset(int(i) for token, i in tokenizer.get_vocab().items() if pattern.match(token))


def student_loss_weights(form: str = "paper", lam: float = 0.5) -> dict:
    """Weights of the minimisation step's three terms (each KD term carries ``tau**2``).

    ``"paper"``: ``(1 - lam) CE(y, S(x)) + lam KD(x) + lam KD(G(x))``, i.e. the usual KD objective on clean text
    (Hinton et al., 2015) plus the paper's added KD term on the rewritten text, weighted like the clean one.
    ``"release"``: ``1/3`` each, as the released training script computes it (``lam`` is ignored); the paper
    form with ``lam = 0.5`` is the same direction, 1.5 times larger.
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}: expected one of {FORMS}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam (weight of the KD terms) must be in [0, 1], got {lam}")
    if form == "release":
        return {"ce": 1 / 3, "kd_clean": 1 / 3, "kd_perturbed": 1 / 3}
    return {"ce": 1.0 - lam, "kd_clean": lam, "kd_perturbed": lam}


def _f32(x: torch.Tensor) -> torch.Tensor:
    """bf16 logits (autocast) to float32; float32 and float64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _uniform(shape, generator, device) -> torch.Tensor:
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def choose_positions(input_ids, attention_mask, special_ids, p: float, generator=None) -> torch.Tensor:
    """Bool ``[batch, seq]``: each real, non-special token is chosen with probability ``p``.

    Every row with at least one eligible token gets at least one chosen position (its lowest draw), so every
    sentence is rewritten; the release's Bernoulli masking can leave a short sentence untouched.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"masking probability p must be in (0, 1], got {p}")
    special = torch.tensor(sorted(int(i) for i in special_ids), dtype=input_ids.dtype, device=input_ids.device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special)
    draw = _uniform(input_ids.shape, generator, input_ids.device)
    chosen = (draw < p) & eligible
    first = draw.masked_fill(~eligible, 2.0).argmin(dim=1)
    need = eligible.any(dim=1) & ~chosen.any(dim=1)
    chosen[need, first[need]] = True
    return chosen


def gumbel_softmax(logits, tau: float = 1.0, hard: bool = True, generator=None, banned_ids=()) -> torch.Tensor:
    """Gumbel-softmax sample ``softmax((logits + g) / tau)``, ``g = -log(-log u)`` (Jang et al., 2017, eq. 1).

    Seeded by ``generator``. Tokens in ``banned_ids`` get probability 0. ``hard``: straight-through, the forward
    value is exactly the one-hot of the argmax and the gradient is that of the soft sample.
    """
    if not tau > 0:
        raise ValueError(f"Gumbel temperature must be > 0, got {tau}")
    if banned_ids:
        banned = torch.tensor(sorted(int(i) for i in banned_ids), device=logits.device)
        logits = logits.index_fill(-1, banned, float("-inf"))
    u = _uniform(logits.shape, generator, logits.device).clamp(torch.finfo(torch.float32).tiny, 1.0)
    soft = F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)
    return one_hot + (soft - soft.detach())  # exactly one-hot forward; d/d soft is the identity


def mix_embeddings(word_embeddings, input_ids, positions, token_probs) -> torch.Tensor:
    """``inputs_embeds [batch, seq, hidden]``: ``token_probs @ E`` at ``positions``, ``E[input_ids]`` elsewhere.

    ``word_embeddings`` is an ``nn.Embedding`` or its weight ``E [vocab, hidden]``; ``token_probs`` is
    ``[n_chosen, vocab]`` in the row-major order of ``positions`` (or ``[batch, seq, vocab]``).
    """
    weight = getattr(word_embeddings, "weight", word_embeddings)
    if token_probs.dim() == 3:
        token_probs = token_probs[positions]
    plain = F.embedding(input_ids, weight)
    mixed = (token_probs.to(weight.dtype) @ weight).to(plain.dtype)
    return plain.index_put(positions.nonzero(as_tuple=True), mixed)


def _masked_lm_logits(model, input_ids, attention_mask, positions) -> torch.Tensor:
    """Vocabulary logits at ``positions`` only: a BERT masked LM's head applied to the chosen rows (a 30k-word
    projection of every position would cost more than the encoder); any other model via ``.logits``."""
    if hasattr(model, "cls") and hasattr(model, "base_model"):
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return model.cls(hidden[positions])
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[positions]


def rewrite(generator_model, input_ids, attention_mask, positions, mask_token_id: int, *, tau: float = 1.0,
            hard: bool = True, banned_ids=(), noise_generator=None) -> torch.Tensor:
    """``[n_chosen, vocab]`` token distributions ``G`` writes at ``positions``: ``G`` reads the sentence with
    ``[MASK]`` there, and its logits go through :func:`gumbel_softmax` (MATE-KD section 3, the generator)."""
    masked = input_ids.masked_fill(positions, mask_token_id)
    logits = _f32(_masked_lm_logits(generator_model, masked, attention_mask, positions))
    return gumbel_softmax(logits, tau, hard, noise_generator, banned_ids)


def perturbed_logits(generator_model, teacher, student, input_ids, attention_mask, masking: Masking, *,
                     noise_generator=None, grad_to_generator: bool = True, amp: bool = False):
    """``(teacher_logits, student_logits)`` on ``G``'s rewrite of the batch (float32). Without
    ``grad_to_generator`` the rewrite is a constant (the minimisation step); the teacher then gets no graph.

    When no gradient goes to ``G`` and the sample is hard (one-hot), the rewritten token ids are fed instead of
    ``one_hot @ E``: the same word vectors exactly, without two ``[n_chosen, vocab] @ [vocab, hidden]`` products."""
    to_generator = grad_to_generator and torch.is_grad_enabled()
    positions = choose_positions(input_ids, attention_mask, masking.special_ids, masking.p, noise_generator)
    with torch.set_grad_enabled(to_generator), autocast(input_ids.device, amp):
        probs = rewrite(generator_model, input_ids, attention_mask, positions, masking.mask_token_id,
                        tau=masking.gumbel_tau, hard=masking.hard, banned_ids=masking.banned_ids,
                        noise_generator=noise_generator)
    new_ids = None
    if masking.hard and not to_generator:
        new_ids = input_ids.clone()
        new_ids[positions] = probs.argmax(dim=-1)
    out = []
    for model in (teacher, student):
        track = torch.is_grad_enabled() and (grad_to_generator or model is student)
        with torch.set_grad_enabled(track), autocast(input_ids.device, amp):
            if new_ids is not None:
                out.append(_f32(model(new_ids, attention_mask)))
            else:
                embeds = mix_embeddings(model.encoder.get_input_embeddings(), input_ids, positions, probs)
                out.append(_f32(model(inputs_embeds=embeds, attention_mask=attention_mask)))
    return tuple(out)


def divergence(teacher_logits, student_logits, tau: float = 1.0, per_example: bool = False) -> torch.Tensor:
    """``KL(softmax(t / tau) || softmax(s / tau))``, batch mean (or per example): the maximisation objective.

    Without ``tau**2``, and unlike :func:`kdtutorial.common.losses.kd_kl_loss` the teacher side is not detached: the
    teacher's logits depend on ``G``'s rewrite, so ``G`` gets gradients through both models.
    """
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")
    log_t, log_s = F.log_softmax(teacher_logits / tau, dim=-1), F.log_softmax(student_logits / tau, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1)
    return kl if per_example else kl.mean()


def _update(model, loss, optimiser, schedule, clip) -> None:
    """One step of ``model`` alone: ``backward(inputs=...)`` leaves every other model's ``.grad`` untouched."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward(inputs=[p for p in model.parameters() if p.requires_grad])
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimiser.step()
    if schedule is not None:
        schedule.step()


def generator_step(generator_model, teacher, student, batch, optimiser, masking: Masking, *, tau: float = 1.0,
                   schedule=None, noise_generator=None, clip: float | None = 5.0, amp: bool = False) -> float:
    """Maximisation step: one update of ``G`` alone ascending ``KL(T(G(x)) || S(G(x)))`` at temperature ``tau``
    (MATE-KD section 3); teacher and student get no parameter gradients. Returns the divergence before it."""
    t_logits, s_logits = perturbed_logits(generator_model, teacher, student, batch["input_ids"],
                                          batch["attention_mask"], masking, noise_generator=noise_generator, amp=amp)
    value = divergence(t_logits, s_logits, tau)
    _update(generator_model, -value, optimiser, schedule, clip)
    return value.item()


def student_step(student, teacher, batch, labels, optimiser, weights: dict, *, generator_model=None,
                 masking: Masking | None = None, tau: float = 1.0, schedule=None, noise_generator=None,
                 clip: float | None = 5.0, amp: bool = False) -> dict:
    """Minimisation step: ``w_ce CE(y, S(x)) + w_kd_clean KD(x) + w_kd_perturbed KD(G(x))``, with
    ``KD = tau**2 KL`` (:func:`kdtutorial.common.losses.kd_kl_loss`); ``G``'s rewrite is a constant here and only the
    student is updated. Returns the terms and the total as floats. With every KD weight 0 (fine-tuning on the
    labels alone) the teacher is not run and only ``ce`` and ``loss`` are returned."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with autocast(ids.device, amp):
        s_clean = _f32(student(ids, mask))
    parts = {"ce": hard_cross_entropy(s_clean, labels)}
    if weights.get("kd_clean", 0.0) > 0 or weights.get("kd_perturbed", 0.0) > 0:
        with torch.no_grad(), autocast(ids.device, amp):
            t_clean = _f32(teacher(ids, mask))
        parts["kd_clean"] = kd_kl_loss(s_clean, t_clean, tau)
    if weights.get("kd_perturbed", 0.0) > 0:
        if generator_model is None or masking is None:
            raise ValueError("the perturbed KD term needs generator_model and masking")
        t_adv, s_adv = perturbed_logits(generator_model, teacher, student, ids, mask, masking,
                                        noise_generator=noise_generator, grad_to_generator=False, amp=amp)
        parts["kd_perturbed"] = kd_kl_loss(s_adv, t_adv, tau)
    loss = sum(weights[k] * v for k, v in parts.items())
    _update(student, loss, optimiser, schedule, clip)
    return {**{k: v.item() for k, v in parts.items()}, "loss": loss.item()}


def schedule_phases(steps: int, n_gen: int = 10, n_student: int = 100) -> list:
    """``"generator"`` or ``"student"`` for each of ``steps`` batches: ``n_gen`` of one, then ``n_student`` of the
    other, repeated (the release's 10 / 100). ``n_gen = 0``: student steps only."""
    if n_student < 1:
        raise ValueError(f"n_student must be >= 1 (student steps per cycle), got {n_student}")
    if n_gen < 0:
        raise ValueError(f"n_gen must be >= 0 (generator steps per cycle), got {n_gen}")
    return ["generator" if k % (n_gen + n_student) < n_gen else "student" for k in range(steps)]


def steps_with_generator(student_steps: int, n_gen: int = 10, n_student: int = 100) -> int:
    """The number of batches whose :func:`schedule_phases` holds exactly ``student_steps`` student steps (and
    ends with one): the generator's batches come on top, so runs with and without a generator can give the
    student the same number of updates."""
    if student_steps < 0:
        raise ValueError(f"student_steps must be >= 0, got {student_steps}")
    schedule_phases(0, n_gen, n_student)  # checks n_gen and n_student
    cycles, rest = divmod(int(student_steps), n_student)
    return cycles * (n_gen + n_student) + (n_gen + rest if rest else 0)


def train_mate_kd(teacher, student, generator_model, text, labels, *, mask_token_id: int, epochs: int = 2,
                  max_steps: int | None = None, student_steps: int | None = None, n_gen: int = 10,
                  n_student: int = 100, p: float = 0.3, tau: float = 1.0, lam: float = 0.5, form: str = "paper",
                  adversarial: bool = True, augment: bool = True, lr: float = 5e-5, gen_lr: float = 5e-7,
                  batch_size: int = 32, warmup: float = 0.1, weight_decay: float = 0.01, clip: float | None = 5.0,
                  freeze_embeddings: bool = False, never_write=(), seed: int = 0, device="cpu", amp: bool = False,
                  progress: bool = True, after_step=None) -> list:
    """Train ``student`` with MATE-KD and return one dict per batch (``step``, ``phase``, then ``divergence`` for a
    generator step or the loss terms for a student step).

    (Not :func:`kdtutorial.text.optim.train_steps`: two models with two optimisers alternate, and each step must
    update one of them alone.) Every batch is one step of the phase :func:`schedule_phases` gives (generator batches are not used by the
    student, as in the release). ``adversarial=False``: ``G`` is never trained (random masked-LM augmentation);
    ``augment=False``: plain KD, ``G`` unused (may be ``None``). The teacher is never updated (eval mode). AdamW with
    warm-up/decay for student (``lr``) and generator (``gen_lr``, the release's 5e-7); one seeded generator draws
    masks and Gumbel noise.

    ``student_steps`` (instead of ``epochs`` / ``max_steps``): exactly that many student updates, the generator's
    batches on top (:func:`steps_with_generator`), passing over the data as many times as that takes; so a KD
    run and a MATE-KD run can get the same student updates. ``freeze_embeddings``: the student's embedding layer
    and the generator's word embeddings (tied to its output matrix) are not trained: cheaper CPU steps, and no
    optimiser state for the two largest matrices (as in :func:`kdtutorial.text.finetuning.fine_tune`). ``never_write``: token ids
    ``G`` may not write, on top of the special tokens and ``[MASK]`` (:meth:`Masking.for_text`).
    ``after_step(updates)``: called after every student update with the student updates so far (it may put the
    student in eval mode; training resumes in train mode).
    """
    weights = student_loss_weights(form, lam)
    masking = Masking.for_text(text, mask_token_id, never_write, p=p)
    if augment and generator_model is None:
        raise ValueError("augment=True needs a generator_model (a masked LM); augment=False is plain KD")
    if not augment:
        weights["kd_perturbed"] = 0.0
    device = torch.device(device)
    n_gen = n_gen if adversarial and augment else 0
    if student_steps is None:
        total = planned_steps(len(text), batch_size, epochs, max_steps)
    else:
        total = steps_with_generator(student_steps, n_gen, n_student)
    phases = schedule_phases(total, n_gen, n_student)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    teacher.to(device).eval()
    student.to(device).train()
    if len(text) == 0 and total > 0:
        raise ValueError("text is empty: there is nothing to train on")
    frozen = []
    if freeze_embeddings:
        frozen = [w for w in student.encoder.embeddings.parameters() if w.requires_grad]
        if augment and adversarial:  # the generator's word embeddings, also its tied output matrix
            frozen += [w for w in generator_model.get_input_embeddings().parameters() if w.requires_grad]
    for w in frozen:
        w.requires_grad_(False)
    opt, sched = adamw_with_warmup([w for w in student.parameters() if w.requires_grad], lr=lr,
                                   weight_decay=weight_decay, warmup=warmup, steps=max(1, phases.count("student")),
                                   device=device)
    if augment:
        generator_model.to(device).train(adversarial)
        gen_opt, gen_sched = adamw_with_warmup([w for w in generator_model.parameters() if w.requires_grad],
                                               lr=gen_lr, weight_decay=0.0,
                                               warmup=warmup, steps=max(1, phases.count("generator")), device=device)
    noise = torch.Generator(device=device).manual_seed(int(seed))
    history = []
    epoch = 0
    try:
        with tqdm(total=total, desc="MATE-KD", leave=False, disable=not progress) as bar:
            while len(history) < total:
                for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + epoch):
                    if len(history) >= total:
                        break
                    phase = phases[len(history)]
                    batch = {k: v.to(device) for k, v in batch.items()}
                    if phase == "generator":
                        value = generator_step(generator_model, teacher, student, batch, gen_opt, masking, tau=tau,
                                               schedule=gen_sched, noise_generator=noise, clip=clip, amp=amp)
                        out = {"divergence": value}
                    else:
                        out = student_step(student, teacher, batch, labels[rows].to(device), opt, weights,
                                           generator_model=generator_model if augment else None, masking=masking,
                                           tau=tau, schedule=sched, noise_generator=noise, clip=clip, amp=amp)
                    history.append({"step": len(history) + 1, "phase": phase, **out})
                    bar.update(1)
                    if after_step is not None and phase == "student":
                        after_step(sum(h["phase"] == "student" for h in history))
                        student.train()
                epoch += 1
    finally:
        for w in frozen:
            w.requires_grad_(True)
    student.eval()
    if augment:
        generator_model.eval()
    return history


@torch.no_grad()
def rewrite_examples(generator_model, teacher, student, tokenizer, text, rows, *, mask_token_id: int,
                     p: float = 0.3, tau: float = 1.0, never_write=(), seed: int = 0, device="cpu") -> list:
    """``G``'s hard rewrite of the sentences at ``rows``, for a table: one dict per sentence with ``original``,
    ``rewritten`` (decoded), ``replaced`` (``(old, new)`` tokens) and the teacher-student ``divergence``
    (KL at ``tau``) on the rewritten and, as ``divergence_original``, on the original sentence. ``G`` never writes
    a special token, ``[MASK]`` or an id of ``never_write``. The three models are left in eval mode."""
    device = torch.device(device)
    masking = Masking.for_text(text, mask_token_id, never_write, p=p)
    batch = {k: v.to(device) for k, v in pad_rows(text, rows).items()}
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for m in (generator_model, teacher, student):
        m.to(device).eval()
    noise = torch.Generator(device=device).manual_seed(int(seed))
    positions = choose_positions(ids, mask, masking.special_ids, p, noise)
    probs = rewrite(generator_model, ids, mask, positions, mask_token_id, banned_ids=masking.banned_ids,
                    noise_generator=noise)
    new_ids = ids.clone()
    new_ids[positions] = probs.argmax(dim=-1)
    kl_new = divergence(_f32(teacher(new_ids, mask)), _f32(student(new_ids, mask)), tau, per_example=True)
    kl_old = divergence(_f32(teacher(ids, mask)), _f32(student(ids, mask)), tau, per_example=True)
    out = []
    for r in range(ids.shape[0]):
        n = int(mask[r].sum())
        where = positions[r, :n].nonzero().flatten().tolist()
        out.append({"original": tokenizer.decode(ids[r, :n].tolist(), skip_special_tokens=True),
                    "rewritten": tokenizer.decode(new_ids[r, :n].tolist(), skip_special_tokens=True),
                    "replaced": list(zip(tokenizer.convert_ids_to_tokens(ids[r, where].tolist()),
                                         tokenizer.convert_ids_to_tokens(new_ids[r, where].tolist()))),
                    "divergence": kl_new[r].item(), "divergence_original": kl_old[r].item()})
    return out
