"""DistilBERT's two stages for several student variants (lesson 03): general-purpose distillation on unlabeled text
(Sanh et al., 2019, section 3: the triple loss of :mod:`kdtutorial.text.distilbert`), then task fine-tuning of each
resulting encoder once per seed.

A variant is ``{"init": ..., "weights": ...}``: ``init`` "teacher" (the teacher's own encoder, not distilled),
"copy" (the student with the teacher's layers ``layers``, :func:`~kdtutorial.text.students.copy_layers_student`) or
"random" (a student of ``len(layers)`` layers from random weights); ``weights`` the loss weights of the general
distillation (:func:`~kdtutorial.text.pretraining.general_distillation`), or ``None`` for no distillation. A weight
``attn`` > 0 (the internal-representation variant) runs both models with eager attention, which returns the maps.

Each variant is one job (:func:`run_variant`: distil, then fine-tune for every seed), and the variants do not depend
on each other, so :func:`run_variants` can run them in processes sharing one GPU
(:func:`~kdtutorial.common.processes.run_jobs`); one after another (``workers=1``) only one student is in memory at a
time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from kdtutorial.common.environment import seed_everything
from kdtutorial.common.modules import count_parameters
from kdtutorial.text.finetuning import SentenceClassifier, fine_tune_and_test
from kdtutorial.text.pretraining import general_distillation
from kdtutorial.common.processes import run_jobs
from kdtutorial.text.students import copy_layers_student, random_student

__all__ = ["INITS", "TwoStage", "check_variants", "distil_student", "run_variant", "run_variants"]

#: how a variant's encoder starts
INITS = ("teacher", "copy", "random")


@dataclass
class TwoStage:
    """What every variant shares: the masked-LM ``teacher``, the teacher ``layers`` a student copies, the
    ``unlabeled`` text of the general stage with its ``distil`` options (``T``, ``lr``, ``batch_size``; the
    ``mask_token_id``), the labelled ``train`` and ``test`` sets (``(text, labels)``), the fine-tuning ``seeds`` and
    options ``fine_tune`` (as :func:`~kdtutorial.text.finetuning.fine_tune_and_test` takes them), the ``seed`` of the
    general stage, ``device`` and ``amp``; ``keep``: ``{variant: seed}`` whose fine-tuned classifier is returned."""

    teacher: object
    layers: list
    unlabeled: object
    mask_token_id: int
    train: tuple
    test: tuple
    seeds: list
    distil: dict = field(default_factory=dict)
    fine_tune: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    keep: dict = field(default_factory=dict)


def check_variants(variants: dict) -> dict:
    """``variants`` if every one has a known ``init`` (and ``weights`` when it is "random"); else a ValueError naming
    the variant and what is allowed."""
    for name, spec in variants.items():
        if spec.get("init") not in INITS:
            raise ValueError(f"variant {name!r}: init = {spec.get('init')!r} is not allowed: one of {', '.join(INITS)}")
        if spec["init"] == "random" and spec.get("weights") is None:
            raise ValueError(f"variant {name!r}: a random-init student needs distillation weights (weights = None)")
        if spec["init"] == "teacher" and spec.get("weights") is not None:
            raise ValueError(f"variant {name!r}: the teacher's own encoder is not distilled (weights must be None)")
    return variants


def distil_student(shared: TwoStage, spec: dict):
    """One general-purpose distillation run (seeded with ``shared.seed``): ``(the student's encoder, loss log)``."""
    teacher, eager = shared.teacher, spec["weights"].get("attn", 0) > 0
    teacher.set_attn_implementation("eager" if eager else "sdpa")
    seed_everything(shared.seed)
    if spec["init"] == "copy":
        student = copy_layers_student(teacher, shared.layers)
    else:
        student = random_student(teacher, len(shared.layers))
    log = general_distillation(teacher, student, shared.unlabeled, mask_token_id=shared.mask_token_id,
                               weights=spec["weights"], seed=shared.seed, device=shared.device, amp=shared.amp,
                               progress=False, **shared.distil)
    teacher.set_attn_implementation("sdpa")
    student.set_attn_implementation("sdpa")
    return student.base_model.cpu(), log


def run_variant(shared: TwoStage, job) -> dict:
    """One variant ``job = (name, spec)``: its encoder (distilled if ``spec["weights"]``), fine-tuned and tested once
    per seed. Returns ``{"name", "records": [{"method", "seed", "test_acc"}], "log": the general stage's loss rows
    (empty without distillation), "parameters": of its classifier, "classifier": the kept one or None}``."""
    name, spec = job
    log = []
    if spec.get("weights") is not None:
        encoder, log = distil_student(shared, spec)
    elif spec["init"] == "copy":
        encoder = copy_layers_student(shared.teacher, shared.layers).base_model
    else:
        encoder = shared.teacher.base_model
    out = {"name": name, "records": [], "log": log, "classifier": None,
           "parameters": count_parameters(SentenceClassifier(encoder))}
    (train_text, train_labels), (test_text, test_labels) = shared.train, shared.test
    for s in shared.seeds:
        acc, clf = fine_tune_and_test(encoder, train_text, train_labels, test_text, test_labels, seed=s,
                                      device=shared.device, amp=shared.amp, **shared.fine_tune)
        out["records"].append({"method": name, "seed": s, "test_acc": acc})
        if shared.keep.get(name) == s:
            out["classifier"] = clf
        del clf
    return out


def run_variants(shared: TwoStage, variants: dict, *, workers: int = 1, threads: int | None = None,
                 progress=None) -> list:
    """:func:`run_variant` for every variant, in order; ``workers > 1`` runs that many at a time in processes on the
    same device (:func:`~kdtutorial.common.processes.run_jobs`, with ``threads`` CPU threads each: the same results, up to
    a GPU's run-to-run variation).
    ``progress``: a tqdm bar advanced once per variant."""
    check_variants(variants)
    return run_jobs(run_variant, shared, list(variants.items()), workers=workers, threads=threads, progress=progress)
