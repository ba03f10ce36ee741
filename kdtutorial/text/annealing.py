"""Annealing KD on text (Jafari, Rezagholizadeh, Sharma, Ghodsi, EACL 2021), and its combination with MATE-KD.

Annealing KD in two stages, counted in student updates so that it can share a budget with every other method:

* stage I, ``stage1`` updates: regress the teacher's logits scaled by ``phi(T)`` (eq. 5,
  :func:`kdtutorial.common.losses.annealing_kd_loss`), ``T`` stepping down from ``tau_max`` to 1 in equal blocks of
  updates (:func:`stage1_phis`; the paper steps once per epoch, eq. 6);
* stage II, the remaining updates: cross-entropy on the labels alone, with a fresh optimiser.

The combination (the talk's "Annealing + MATE", "Combined KD"): stage I regresses ``phi(T) z_t`` on the original
sentence *and* on MATE-KD's rewrite of it, the generator alternating ``n_gen`` maximisation steps with ``n_student``
student steps as in MATE-KD (:func:`kdtutorial.text.matekd.generator_step`); stage II as above. Its stage-I loss
(:func:`combined_stage1_loss`) is the mean of the two regressions,

    ``L_I = 1/2 ( ||z_s(x) - phi z_t(x)||^2 + ||z_s(G(x)) - phi z_t(G(x))||^2 )``,

our reading of the released combination (MSE to the annealed teacher logits on original and generated inputs, with
equal weights). The generator keeps MATE-KD's objective, the teacher-student KL on its rewrites.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kdtutorial.common.environment import autocast
from kdtutorial.common.losses import annealing_kd_loss
from kdtutorial.common.schedules import phi
from kdtutorial.text.finetuning import predict
from kdtutorial.text.matekd import Masking, generator_step, perturbed_logits, schedule_phases, steps_with_generator
from kdtutorial.text.optim import adamw_with_warmup, to_device, train_steps
from kdtutorial.text.tokens import padded_batches

__all__ = ["stage_updates", "stage1_phis", "combined_stage1_loss", "train_annealing_text", "train_annealing_mate"]


def stage_updates(updates: int, stage1_share: float) -> tuple[int, int]:
    """``(stage I updates, stage II updates)`` of a budget of ``updates``: ``round(stage1_share * updates)`` for
    stage I (at least 1), the rest for stage II."""
    if not isinstance(updates, int) or updates < 1:
        raise ValueError(f"updates must be a positive integer, got {updates!r}")
    if not 0 < stage1_share <= 1:
        raise ValueError(f"stage1_share must be in (0, 1], got {stage1_share!r}")
    first = min(updates, max(1, int(round(stage1_share * updates))))
    return first, updates - first


def stage1_phis(stage1: int, tau_max: int) -> list[float]:
    """``phi(T)`` for each of ``stage1`` updates: ``T = tau_max, ..., 1`` in equal blocks (update ``u`` gets
    ``T = tau_max - floor(u * tau_max / stage1)``), so the targets sharpen from ``z_t / tau_max`` to ``z_t``
    (Jafari et al. 2021, eq. 5-6, with blocks of updates in place of epochs). With fewer updates than temperatures
    (``1 < stage1 < tau_max``) some temperatures are skipped: update ``u`` gets
    ``T = tau_max - floor(u * (tau_max - 1) / (stage1 - 1))``, which still starts at ``tau_max`` and ends at 1."""
    if not isinstance(stage1, int) or stage1 < 1:
        raise ValueError(f"stage1 must be a positive integer, got {stage1!r}")
    if 1 < stage1 < tau_max:  # the formula above would stop short of T = 1 (e.g. 6 updates, tau_max 10: T = 2)
        return [phi(tau_max - (u * (tau_max - 1)) // (stage1 - 1), tau_max) for u in range(stage1)]
    return [phi(tau_max - (u * tau_max) // stage1, tau_max) for u in range(stage1)]


def combined_stage1_loss(s_clean, t_clean, s_rewritten, t_rewritten, phi_value: float) -> torch.Tensor:
    """Stage I of Annealing + MATE: ``1/2 (||z_s(x) - phi z_t(x)||^2 + ||z_s(G(x)) - phi z_t(G(x))||^2)``, each
    term :func:`~kdtutorial.common.losses.annealing_kd_loss` (squared L2 over classes, mean over the batch)."""
    return 0.5 * (annealing_kd_loss(s_clean, t_clean, phi_value) + annealing_kd_loss(s_rewritten, t_rewritten, phi_value))


def _stage2(student, text, labels, *, updates, seed, first_epoch, lr, batch_size, device, amp, freeze_embeddings,
            offset, after_step, progress):
    """Stage II: cross-entropy on the labels for ``updates`` updates (a fresh AdamW with warm-up and decay)."""
    if updates == 0:
        return []

    def batches(epoch):
        for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + first_epoch + epoch):
            yield rows, (batch["input_ids"], batch["attention_mask"])

    frozen = list(student.encoder.embeddings.parameters()) if freeze_embeddings else []
    epochs = -(-updates // max(1, -(-len(text) // batch_size)))
    step_hook = None if after_step is None else (lambda u: after_step(offset + u))
    return train_steps(student, batches, lambda logits, rows: F.cross_entropy(logits, to_device(labels[rows], logits.device)),
                       n_rows=len(text), epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.01, warmup=0.1,
                       device=device, amp=amp, max_steps=updates, frozen=frozen, desc="annealing KD, stage II",
                       progress=progress, after_step=step_hook)


def train_annealing_text(teacher, student, text, labels, *, updates: int, stage1_share: float = 0.5, tau_max: int = 10,
                       lr: float = 5e-5, batch_size: int = 32, seed: int = 0, device="cpu", amp: bool = False,
                       freeze_embeddings: bool = False, after_step=None, progress: bool = False) -> dict:
    """Annealing KD with a budget of ``updates`` student updates (module docstring); returns ``{"stage1": losses,
    "stage2": losses}``. The teacher's logits on ``text`` are computed once (it is frozen). ``after_step(u)`` is
    called after every update with the updates so far, counted across both stages."""
    first, second = stage_updates(updates, stage1_share)
    phis = stage1_phis(first, tau_max)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    z_t = predict(teacher, text, batch_size=256, device=device, amp=amp).float()
    done = {"u": 0}

    def batches(epoch):
        for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + epoch):
            yield rows, (batch["input_ids"], batch["attention_mask"])

    def loss_of(logits, rows):
        value = annealing_kd_loss(logits, to_device(z_t[rows], logits.device), phis[min(done["u"], first - 1)])
        done["u"] += 1
        return value

    per_epoch = max(1, -(-len(text) // batch_size))
    frozen = list(student.encoder.embeddings.parameters()) if freeze_embeddings else []
    stage1 = train_steps(student, batches, loss_of, n_rows=len(text), epochs=-(-first // per_epoch),
                         batch_size=batch_size, lr=lr, weight_decay=0.01, warmup=0.1, device=device, amp=amp,
                         max_steps=first, frozen=frozen, desc="annealing KD, stage I", progress=progress,
                         after_step=after_step)
    stage2 = _stage2(student, text, labels, updates=second, seed=seed, first_epoch=-(-first // per_epoch), lr=lr,
                     batch_size=batch_size, device=device, amp=amp, freeze_embeddings=freeze_embeddings, offset=first,
                     after_step=after_step, progress=progress)
    return {"stage1": stage1, "stage2": stage2}


def train_annealing_mate(teacher, student, generator_model, text, labels, *, mask_token_id: int, updates: int,
                         stage1_share: float = 0.5, tau_max: int = 10, n_gen: int = 10, n_student: int = 100,
                         p: float = 0.3, tau: float = 1.0, lr: float = 5e-5, gen_lr: float = 5e-7,
                         batch_size: int = 32, clip: float | None = 5.0, never_write=(), seed: int = 0, device="cpu",
                         amp: bool = False, freeze_embeddings: bool = False, after_step=None,
                         progress: bool = False) -> dict:
    """Annealing + MATE (module docstring) with a budget of ``updates`` student updates; returns ``{"stage1":
    [one dict per batch], "stage2": losses}``. Stage I's generator batches come on top of its student updates (as in
    :func:`kdtutorial.text.matekd.train_mate_kd`); ``tau`` is the generator's KL temperature."""
    first, second = stage_updates(updates, stage1_share)
    phis = stage1_phis(first, tau_max)
    device = torch.device(device)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    masking = Masking.for_text(text, mask_token_id, never_write, p=p)
    n_gen = int(n_gen)
    total = steps_with_generator(first, n_gen, n_student)
    phases = schedule_phases(total, n_gen, n_student)
    teacher.to(device).eval()
    student.to(device).train()
    generator_model.to(device).train(n_gen > 0)
    frozen = []
    if freeze_embeddings:
        frozen = [w for w in student.encoder.embeddings.parameters() if w.requires_grad]
        frozen += [w for w in generator_model.get_input_embeddings().parameters() if w.requires_grad]
    for w in frozen:
        w.requires_grad_(False)
    opt, sched = adamw_with_warmup([w for w in student.parameters() if w.requires_grad], lr=lr, weight_decay=0.01,
                                   warmup=0.1, steps=first, device=device)
    gen_opt, gen_sched = adamw_with_warmup([w for w in generator_model.parameters() if w.requires_grad], lr=gen_lr,
                                           weight_decay=0.0, warmup=0.1, steps=max(1, phases.count("generator")),
                                           device=device)
    noise = torch.Generator(device=device).manual_seed(int(seed))
    history, done, epoch = [], 0, 0
    try:
        with tqdm(total=total, desc="annealing + MATE, stage I", leave=False, disable=not progress) as bar:
            while len(history) < total:
                for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + epoch):
                    if len(history) >= total:
                        break
                    batch = {k: v.to(device) for k, v in batch.items()}
                    if phases[len(history)] == "generator":
                        value = generator_step(generator_model, teacher, student, batch, gen_opt, masking, tau=tau,
                                               schedule=gen_sched, noise_generator=noise, clip=clip, amp=amp)
                        history.append({"phase": "generator", "divergence": value})
                    else:
                        ids, mask = batch["input_ids"], batch["attention_mask"]
                        with autocast(device, amp):
                            s_clean = student(ids, mask).float()
                            with torch.no_grad():
                                t_clean = teacher(ids, mask).float()
                        t_adv, s_adv = perturbed_logits(generator_model, teacher, student, ids, mask, masking,
                                                        noise_generator=noise, grad_to_generator=False, amp=amp)
                        loss = combined_stage1_loss(s_clean, t_clean, s_adv.float(), t_adv.float(), phis[done])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if clip is not None:
                            torch.nn.utils.clip_grad_norm_(student.parameters(), clip)
                        opt.step()
                        sched.step()
                        done += 1
                        history.append({"phase": "student", "loss": loss.item(), "phi": phis[done - 1]})
                        if after_step is not None:
                            after_step(done)
                            student.train()
                    bar.update(1)
                epoch += 1
    finally:
        for w in frozen:
            w.requires_grad_(True)
    generator_model.eval()
    stage2 = _stage2(student, text, labels, updates=second, seed=seed, first_epoch=epoch, lr=lr,
                     batch_size=batch_size, device=device, amp=amp, freeze_embeddings=freeze_embeddings, offset=first,
                     after_step=after_step, progress=progress)
    student.eval()
    return {"stage1": history, "stage2": stage2}
