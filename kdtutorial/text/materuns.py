"""Lesson 05's comparison as independent runs: students trained by :func:`~kdtutorial.text.matekd.train_mate_kd`
(MATE-KD, Rashid et al., 2021, section 3; or one of its ablations: no KD, KD, KD + random mask) for several methods
and seeds, each one job.

Every student starts as the classifier of :func:`copied_student` (the encoder's embeddings and chosen layers, a fresh
linear head) built right after ``seed_everything(seed)``, so students of one seed start equal whatever the method.
The jobs do not depend on each other, so :func:`run_comparison` can train them in processes sharing one GPU
(:func:`~kdtutorial.common.processes.run_jobs`); one after another (``workers=1``) only one student is in memory at a
time, besides those asked for in ``keep``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from kdtutorial.common.environment import release_memory, seed_everything
from kdtutorial.common.statistics import accuracy
from kdtutorial.text.finetuning import SentenceClassifier, predict
from kdtutorial.text.matekd import train_mate_kd
from kdtutorial.common.processes import run_jobs
from kdtutorial.text.students import copy_layers_encoder

__all__ = ["MateRuns", "copied_student", "run_student", "run_comparison"]


@dataclass
class MateRuns:
    """What every student shares: the frozen ``teacher``, the fitted masked-LM ``generator`` (each augmenting
    student gets a copy), the ``encoder`` and ``layers`` students are cut from, the ``train`` and ``test`` sets
    (``(text, labels)``), the ``methods`` (name -> options of ``train_mate_kd``), the ``options`` every method shares
    (``device`` and ``amp`` among them), and ``keep``: ``(method, seed)`` pairs whose student and generator come
    back."""

    teacher: object
    generator: object
    encoder: object
    layers: list
    train: tuple
    test: tuple
    methods: dict
    options: dict = field(default_factory=dict)
    keep: tuple = ()


def copied_student(encoder, layers) -> SentenceClassifier:
    """A student: ``encoder``'s embeddings and layers ``layers`` under a fresh linear head (call after seeding)."""
    return SentenceClassifier(copy_layers_encoder(encoder, list(layers)))


def run_student(shared: MateRuns, job) -> dict:
    """One student, ``job = (method, seed, overrides)`` (``overrides``: options replacing the method's, e.g. another
    ``n_gen``). Returns ``{"method", "seed", "test_acc", "history": one dict per batch, "start_norm": the norm of its
    initial weights, "student", "generator": both None unless (method, seed) is in ``keep``}``."""
    method, seed, overrides = job
    if method not in shared.methods:
        raise ValueError(f"method {method!r} is not known: expected one of {', '.join(shared.methods)}")
    seed_everything(seed)
    student = copied_student(shared.encoder, shared.layers)
    start_norm = float(torch.cat([p.detach().flatten() for p in student.parameters()]).norm())
    options = {**shared.options, **shared.methods[method], **overrides}
    generator = copy.deepcopy(shared.generator) if options.get("augment", True) else None
    (train_text, train_labels), (test_text, test_labels) = shared.train, shared.test
    history = train_mate_kd(shared.teacher, student, generator, train_text, train_labels, seed=seed, **options)
    logits = predict(student, test_text, device=options.get("device", "cpu"), amp=options.get("amp", False))
    kept = (method, seed) in set(shared.keep)
    out = {"method": method, "seed": seed, "test_acc": accuracy(logits, test_labels), "history": history,
           "start_norm": start_norm, "student": student.cpu() if kept else None,
           "generator": generator if kept else None}
    del student, generator
    release_memory()  # the optimisers' freed buffers go back to the OS before the next student
    return out


def run_comparison(shared: MateRuns, jobs, *, workers: int = 1, threads: int | None = None,
                 progress=None) -> list:
    """:func:`run_student` for every job, in order; ``workers > 1`` trains that many at a time in processes on the
    same device (the same results, up to a GPU's run-to-run variation; ``threads``: CPU threads each, as
    :func:`~kdtutorial.common.processes.run_jobs` takes them). ``progress``: a tqdm bar advanced once per
    student."""
    jobs = [(method, int(seed), dict(overrides)) for method, seed, overrides in jobs]
    unknown = sorted({m for m, _, _ in jobs} - set(shared.methods))
    if unknown:
        raise ValueError(f"methods {unknown} are not known: expected some of {', '.join(shared.methods)}")
    return run_jobs(run_student, shared, jobs, workers=workers, threads=threads, progress=progress)
