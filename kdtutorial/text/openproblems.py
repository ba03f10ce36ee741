"""Two of the talk's open problems, measured with lesson 10's harness (:mod:`kdtutorial.text.allmethods`).

* **Which teacher checkpoint?** "More accurate teachers are NOT necessarily better teachers": one teacher run is
  scored every ``every`` updates and kept at four points (:func:`teacher_checkpoints`): the first scoring
  (*early*), the one nearest half-way (*middle*), the best on the held-out part of train (*best*) and the last,
  after many epochs (*over-trained*). :func:`distil_from_checkpoints` distils the same KD students from each.
* **Noisy labels**: a share of the training labels is flipped (:func:`kdtutorial.common.labelnoise.flip_labels`),
  the teacher is fine-tuned on those noisy labels, and three students learn from the same noisy set
  (:func:`noisy_label_study`): labels alone, KD at ``alpha = 0.5`` and KD weighted towards the teacher. Scores are
  on the clean dev set; the record also says how often the teacher restores the true label of a flipped row (can
  KD "refine" noisy data?).
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from kdtutorial.common.environment import release_memory, seed_everything
from kdtutorial.common.labelnoise import flip_labels
from kdtutorial.text import glue
from kdtutorial.text.allmethods import AllSetting, Prepared, run_students
from kdtutorial.text.finetuning import SentenceClassifier, fine_tune, predict
from kdtutorial.text.layercompare import Task

__all__ = ["CHECKPOINT_NAMES", "NOISY_METHODS", "teacher_checkpoints", "teacher_from_state",
           "distil_from_checkpoints", "noisy_label_study"]

CHECKPOINT_NAMES = ("early", "middle", "best", "over-trained")
#: student name -> (harness method, KD weight alpha or None for the setting's own)
NOISY_METHODS = {"labels only": ("no KD", None), "KD, alpha 0.5": ("KD", 0.5), "KD, alpha 0.9": ("KD", 0.9)}


def teacher_checkpoints(pretrained_encoder, task: Task, *, sentences: int, epochs: int, every: int, lr: float,
                        batch_size: int, seed: int, device="cpu", amp: bool = False,
                        freeze_embeddings: bool = False, graphs: bool = False) -> list[dict]:
    """Fine-tune one teacher on the first ``sentences`` rows for ``epochs``, scored every ``every`` updates; returns
    the four kept checkpoints (:data:`CHECKPOINT_NAMES`) as dicts ``name``, ``update``, ``select``, ``dev`` (the
    task's main metric, percent) and ``state`` (CPU weights), plus ``curve``: every scoring as ``(update, select,
    dev)`` in the first dict. ``graphs``: the teacher's steps replayed from a CUDA graph
    (:func:`kdtutorial.text.finetuning.fine_tune`; the scorings run eagerly between two replays)."""
    metric = glue.main_metric(task.name)
    text, labels = task.first(sentences)
    total = epochs * -(-len(text) // batch_size)
    if not 1 <= every <= total:
        raise ValueError(f"every = {every!r} is not allowed: 1 .. the run's {total} updates")
    marks = list(range(every, total + 1, every))
    middle = min(marks, key=lambda u: abs(u - total / 2))
    seed_everything(seed)
    teacher = SentenceClassifier(copy.deepcopy(pretrained_encoder), n_classes=int(task.train_labels.max()) + 1)
    kept, curve = {}, []

    def snapshot(name, u, select, dev):
        # frozen weights (e.g. frozen embeddings) never change during the run: one shared copy for every checkpoint
        frozen = {k for k, p in teacher.named_parameters() if not p.requires_grad}
        shared = {k: v for k, v in (kept[next(iter(kept))]["state"].items() if kept else ()) if k in frozen}
        kept[name] = {"name": name, "update": u, "select": select, "dev": dev,
                      "state": {k: shared[k] if k in shared else v.detach().to("cpu", copy=True)
                                for k, v in teacher.state_dict().items()}}

    def after(u):
        if u % every and u != total:
            return
        select = task.score(teacher, "select", device=device, amp=amp)[metric]
        dev = task.score(teacher, "dev", device=device, amp=amp)[metric]
        curve.append((u, select, dev))
        if len(curve) == 1:
            snapshot("early", u, select, dev)
        if u == middle:
            snapshot("middle", u, select, dev)
        if "best" not in kept or select > kept["best"]["select"]:
            snapshot("best", u, select, dev)
        if u == total:
            snapshot("over-trained", u, select, dev)

    fine_tune(teacher, text, labels, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, device=device, amp=amp,
              freeze_embeddings=freeze_embeddings, progress=False, after_step=after, graphs=graphs)
    out = [kept[n] for n in CHECKPOINT_NAMES]
    out[0]["curve"] = curve
    del teacher
    release_memory()
    return out


def teacher_from_state(pretrained_encoder, state: dict, n_classes: int) -> SentenceClassifier:
    """A frozen teacher classifier rebuilt from checkpoint weights ``state``."""
    teacher = SentenceClassifier(copy.deepcopy(pretrained_encoder), n_classes=n_classes)
    teacher.load_state_dict(state)
    return teacher.eval().requires_grad_(False)


def distil_from_checkpoints(checkpoints, pretrained_encoder, task: Task, seeds, setting: AllSetting, *,
                            workers: int = 1, progress=None) -> list:
    """KD students (:func:`kdtutorial.text.allmethods.train_one`, method ``"KD"``) from each teacher checkpoint,
    the same seeds for every checkpoint; one record per student with ``checkpoint``, ``teacher_dev`` and
    ``teacher_select`` added. ``workers``: as in :func:`~kdtutorial.text.allmethods.run_students`."""
    n_classes = int(task.train_labels.max()) + 1

    def prepared(group):
        return {c["name"]: Prepared(task, teacher_from_state(pretrained_encoder, c["state"], n_classes), {},
                                    pretrained_encoder, None, -1, frozenset(), None) for c in group}

    # one teacher in memory at a time when training serially (a 2 GB machine); all of them for the workers
    groups = [list(checkpoints)] if workers > 1 else [[c] for c in checkpoints]
    out = []
    for group in groups:
        jobs = [(c["name"], "KD", seed, setting) for c in group for seed in seeds]
        records = run_students(prepared(group), jobs, workers=workers, progress=progress)
        by_name = {c["name"]: c for c in group}
        out += [{**r, "checkpoint": key, "teacher_dev": by_name[key]["dev"], "teacher_select": by_name[key]["select"]}
                for r, (key, _, _, _) in zip(records, jobs)]
        release_memory()
    return out


def noisy_label_study(pretrained_encoder, task: Task, shares, seeds, setting: AllSetting, *, teacher_sentences: int,
                      teacher_epochs: int, teacher_lr: float, teacher_batch: int, data_seed: int = 0,
                      workers: int = 1, progress=None, graphs: bool = False) -> tuple[list, list]:
    """For each share of flipped labels (:func:`~kdtutorial.common.labelnoise.flip_labels`, seeded by
    ``data_seed``): a teacher fine-tuned on the first ``teacher_sentences`` noisy rows, then every student of
    :data:`NOISY_METHODS` on the same noisy rows and seeds. Returns ``(students, teachers)``: student records with
    ``noise`` and ``student`` added; one teacher record per share with its clean ``dev`` score and ``restored``, the
    share of flipped training rows on which the teacher predicts the true label (percent). ``workers``: as in
    :func:`~kdtutorial.text.allmethods.run_students` (the teachers are trained first, one after another);
    ``graphs``: the teachers' steps replayed from a CUDA graph (:func:`kdtutorial.text.finetuning.fine_tune`)."""
    teachers, students = [], []
    n_classes = int(task.train_labels.max()) + 1
    # one noisy teacher in memory at a time when training serially (a 2 GB machine); all of them for the workers
    groups = [list(shares)] if workers > 1 else [[share] for share in shares]
    for group in groups:
        group_students, group_teachers = _noisy_group(pretrained_encoder, task, group, seeds, setting, n_classes,
                                                      teacher_sentences, teacher_epochs, teacher_lr, teacher_batch,
                                                      data_seed, workers, progress, graphs)
        students += group_students
        teachers += group_teachers
    return students, teachers


def _noisy_group(pretrained_encoder, task, shares, seeds, setting, n_classes, teacher_sentences, teacher_epochs,
                 teacher_lr, teacher_batch, data_seed, workers, progress, graphs=False):
    """:func:`noisy_label_study` for the shares of one group: their teachers, then their students."""
    metric = glue.main_metric(task.name)
    teachers, prepared = [], {}
    for share in shares:
        noisy, flipped = flip_labels(task.train_labels, share, data_seed, n_classes)
        noisy_task = dataclasses.replace(task, train_labels=noisy)
        seed_everything(data_seed)
        teacher = SentenceClassifier(copy.deepcopy(pretrained_encoder), n_classes=n_classes)
        text, labels = noisy_task.first(teacher_sentences)
        fine_tune(teacher, text, labels, epochs=teacher_epochs, lr=teacher_lr, batch_size=teacher_batch,
                  seed=data_seed, device=setting.device, amp=setting.amp,
                  freeze_embeddings=setting.freeze_embeddings, progress=False, graphs=graphs)
        teacher.eval().requires_grad_(False)
        n = min(setting.sentences, len(noisy))
        rows = np.flatnonzero(flipped[:n])
        restored = float("nan")
        if len(rows):
            logits = predict(teacher, task.train.subset(rows.tolist()), device=setting.device, amp=setting.amp)
            restored = 100.0 * float((logits.argmax(-1).numpy() == task.train_labels[rows]).mean())
        teachers.append({"noise": share, "dev": noisy_task.score(teacher, "dev", device=setting.device,
                                                                 amp=setting.amp)[metric],
                         "flipped": int(flipped[:n].sum()), "restored": restored})
        prepared[share] = Prepared(noisy_task, teacher, {}, pretrained_encoder, None, -1, frozenset(), None)
    jobs, names = [], []
    for share in shares:
        for name, (method, alpha) in NOISY_METHODS.items():
            s = setting if alpha is None else dataclasses.replace(setting, alpha=alpha)
            for seed in seeds:
                jobs.append((share, method, seed, s))
                names.append(name)
    records = run_students(prepared, jobs, workers=workers, progress=progress)
    students = [{**r, "noise": share, "student": name, "method": name}
                for r, name, (share, _, _, _) in zip(records, names, jobs)]
    del prepared
    release_memory()
    return students, teachers
