"""Lesson 06's students as independent runs: each job trains one two-tower student of one kind with one seed, on the
labels alone or by the AdsBERT recipe's steps (d) and (e) (distillation on the teacher-scored transfer set, then the
labels with the KD term; TwinBERT, Lu et al., 2020, section 3.4), and scores the test pairs.

A job builds its student with :func:`~kdtutorial.ranking.studentkinds.build_student` (which seeds everything first)
and then draws only from that seed, so a job's result does not depend on which jobs ran before it. The jobs do not
depend on each other, so :func:`run_two_towers` can train them in processes sharing one GPU
(:func:`~kdtutorial.common.processes.run_jobs`): while one student's process prepares a step on the host (C-DSSM's
letter-trigram batches are built on the CPU, about 2 ms for 1,024 pairs on a 2-core CPU; a few-layer TwinBERT launches
small kernels), another's can run on the GPU. On one H100, 8 jobs (one seed of each of the lesson's four students,
both ways) took 140 s one after another and 104 s in 6 processes, while 4 jobs in 4 processes took 90 s against 73 s
(``benchmarks/two_tower_processes.py``; the time in processes includes starting them and sending each the transfer
set). One after another (``workers=1``), only one student is in memory at a time, besides those asked for in ``keep``.
The training calls draw no per-step progress bars (a job often runs in a worker process, whose bars would interleave);
:func:`run_two_towers` advances one bar per finished student.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from kdtutorial.common.environment import release_memory
from kdtutorial.common.processes import run_jobs
from kdtutorial.ranking.rankers import distil_two_tower, fine_tune_two_tower, score_two_tower
from kdtutorial.ranking.studentkinds import build_student, student_kind

__all__ = ["HOWS", "StudentRuns", "student_sides", "train_label_only", "train_distilled", "run_two_tower",
           "run_two_towers"]

#: how a job trains its student: "labels" (labels alone), "distilled" (from the recipe's teacher, target "one"),
#: "mean" (from the mean logit of several teachers, target "mean")
HOWS = ("labels", "distilled", "mean")
_TARGET = {"distilled": "one", "mean": "mean"}  # the teacher each distilling job learns from


def _check_how(how: str) -> None:
    if how not in HOWS:
        raise ValueError(f"how {how!r} is not allowed: expected one of {HOWS}")


@dataclass
class StudentRuns:
    """What every student shares.

    ``pretrained``: the encoder token students take their vocabulary and ``layers`` from. ``tokens`` / ``trigrams``:
    part ("transfer", "train", "test") -> the ``(query side, ad side)`` that token students
    (:func:`~kdtutorial.ranking.rankers.tokenize_sides`) and C-DSSM
    (:func:`~kdtutorial.ranking.rankers.trigram_sides`) read. ``labels``: the training pairs' labels.
    ``teachers``: target ("one", "mean") -> ``(logits on the transfer pairs, logits on the training pairs)``.
    ``rates``: ``labels``, ``distil``, ``finetune``, ``scratch`` (as
    :meth:`~kdtutorial.ranking.studentkinds.StudentKind.rates` takes them). ``epochs``: ``labels``, ``scratch``
    (label-only epochs of students with random weights), ``distil``, ``finetune``. ``batch_size`` / ``distil_batch``:
    labelled pairs / transfer pairs per step. ``kd_loss``, ``temperature``, ``alpha``: the KD term
    (:func:`~kdtutorial.ranking.relevance.relevance_kd_loss`). ``freeze_embeddings``: the lesson's setting (students
    with random weights always learn theirs). ``options``: ``device``, ``amp`` and ``graphs``: the steps on the
    labelled pairs (``batch_size`` a step, bound by launching kernels) replayed from a CUDA graph
    (``optim.train_steps``); the transfer stage always runs eagerly: a step of ``distil_batch`` pairs (1024 in the
    full profile) keeps the GPU busy by itself, so a graph saves nothing there and its one width only adds padding
    (measured on an H100: the students' cell was no faster with it). ``keep``: ``(kind, seed, how)`` jobs whose
    trained student comes back.
    """

    pretrained: nn.Module
    layers: list
    tokens: dict
    trigrams: dict
    labels: np.ndarray
    teachers: dict
    rates: dict
    epochs: dict
    batch_size: int
    distil_batch: int
    kd_loss: str = "mse"
    temperature: float = 1.0
    alpha: float = 0.5
    freeze_embeddings: bool = False
    options: dict = field(default_factory=dict)
    keep: tuple = ()


def student_sides(runs: StudentRuns, kind: str, part: str):
    """The ``(query side, ad side)`` of ``part`` that a student of ``kind`` reads: trigrams for C-DSSM, tokens
    otherwise."""
    sides = runs.trigrams if student_kind(kind).reads == "trigrams" else runs.tokens
    if part not in sides:
        raise ValueError(f"part {part!r} is not allowed: expected one of {sorted(sides)}")
    return sides[part]


def _device(runs: StudentRuns) -> dict:
    """The ``device`` and ``amp`` every training and scoring call of a job takes."""
    return dict(device=runs.options.get("device", "cpu"), amp=runs.options.get("amp", False))


def _training(runs: StudentRuns) -> dict:
    """What a training call on the labelled pairs takes: :func:`_device`'s and ``graphs`` (steps replayed from a CUDA
    graph). The transfer stage takes :func:`_device`'s only: see :class:`StudentRuns`."""
    return dict(_device(runs), graphs=runs.options.get("graphs", False))


def train_label_only(runs: StudentRuns, model: nn.Module, kind: str, seed: int) -> nn.Module:
    """``model`` (a fresh student of ``kind``) trained on the labelled pairs alone (binary cross-entropy):
    ``epochs["labels"]`` epochs, ``epochs["scratch"]`` for a student with random weights."""
    k = student_kind(kind)
    epochs = k.label_epochs(epochs=runs.epochs["labels"], scratch=runs.epochs["scratch"])
    fine_tune_two_tower(model, *student_sides(runs, kind, "train"), runs.labels, epochs=epochs,
                        lr=k.rates(**runs.rates)["labels"], batch_size=runs.batch_size, seed=seed,
                        freeze_embeddings=k.freezes_embeddings(runs.freeze_embeddings), progress=False,
                        **_training(runs))
    return model


def train_distilled(runs: StudentRuns, model: nn.Module, kind: str, seed: int, *, target: str = "one",
                    loss: str | None = None, temperature: float | None = None):
    """Steps (d) and (e) on ``model`` (a fresh student of ``kind``): ``epochs["distil"]`` passes learning teacher
    ``target``'s logits on the transfer set, then ``epochs["finetune"]`` on the labels with the KD term
    (``alpha * KD + (1 - alpha) * BCE``). ``loss`` / ``temperature`` replace the shared KD loss. Returns the model
    and its test logits between the two steps (after distillation, before fine-tuning)."""
    if target not in runs.teachers:
        raise ValueError(f"target {target!r} is not allowed: expected one of {sorted(runs.teachers)}")
    loss = runs.kd_loss if loss is None else loss
    temperature = runs.temperature if temperature is None else temperature
    on_transfer, on_train = runs.teachers[target]
    k = student_kind(kind)
    lr, frozen, device = k.rates(**runs.rates), k.freezes_embeddings(runs.freeze_embeddings), _device(runs)
    distil_two_tower(model, *student_sides(runs, kind, "transfer"), on_transfer, kind=loss, temperature=temperature,
                     epochs=runs.epochs["distil"], lr=lr["distil"], batch_size=runs.distil_batch, seed=seed,
                     freeze_embeddings=frozen, progress=False, **device)
    after_distillation = score_two_tower(model, *student_sides(runs, kind, "test"), **device)
    fine_tune_two_tower(model, *student_sides(runs, kind, "train"), runs.labels, teacher_logits=on_train, kind=loss,
                        alpha=runs.alpha, temperature=temperature, epochs=runs.epochs["finetune"], lr=lr["finetune"],
                        batch_size=runs.batch_size, seed=seed, freeze_embeddings=frozen, progress=False,
                        **_training(runs))
    return model, after_distillation


def run_two_tower(runs: StudentRuns, job) -> dict:
    """One job ``(kind, seed, how)`` (``how`` one of :data:`HOWS`): a fresh student built from ``seed``, trained,
    and scored on the test pairs. Returns ``{"kind", "seed", "how", "test_logits", "after_distillation": the test
    logits before fine-tuning (None for "labels"), "student": None unless the job is in ``keep``}``."""
    kind, seed, how = job
    _check_how(how)
    model = build_student(kind, runs.pretrained, runs.layers, seed)
    after_distillation = None
    if how == "labels":
        train_label_only(runs, model, kind, seed)
    else:
        model, after_distillation = train_distilled(runs, model, kind, seed, target=_TARGET[how])
    logits = score_two_tower(model, *student_sides(runs, kind, "test"), **_device(runs))
    kept = (kind, seed, how) in set(runs.keep)
    out = dict(kind=kind, seed=seed, how=how, test_logits=logits, after_distillation=after_distillation,
               student=model.cpu() if kept else None)
    del model
    release_memory()  # freed optimiser buffers go back before the next student
    return out


def run_two_towers(runs: StudentRuns, jobs, *, workers: int = 1, threads: int | None = None, progress=None) -> list:
    """:func:`run_two_tower` for every job, results in the order of ``jobs``; ``workers > 1`` trains that many at a time
    in processes on the same device (the same results, up to a GPU's run-to-run variation; ``threads``: CPU threads
    each, as :func:`~kdtutorial.common.processes.run_jobs` takes them). ``progress``: a tqdm bar advanced once per
    student."""
    jobs = [(kind, int(seed), how) for kind, seed, how in jobs]
    for kind, _, how in jobs:
        student_kind(kind)  # an unknown kind or how fails here, before any process starts
        _check_how(how)
    return run_jobs(run_two_tower, runs, jobs, workers=workers, threads=threads, progress=progress)
