"""Lesson 06's students as independent runs (``kdtutorial.ranking.studentruns``), on toy pairs with a tiny random BERT:
a job equals the rankers' calls made by hand (labels only, distilled, from the mean teacher); a job does not depend on
the jobs before it; a job in a process equals it here, bit for bit on the CPU; only the jobs asked for bring their
student back; bad kinds, hows and targets are refused by name. No network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _support import tiny_bert
from kdtutorial.ranking import rankers, studentruns
from kdtutorial.ranking.studentkinds import build_student
from kdtutorial.ranking.twotower import CDSSM
from test_rankers import toy_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixtures (and tok) in conftest.py

EPOCHS = dict(labels=1, scratch=2, distil=1, finetune=1)
RATES = dict(labels=1e-3, distil=2e-3, finetune=1e-3, scratch=3e-3)


@pytest.fixture(scope="module")
def runs(tok):
    parts = {"transfer": toy_pairs(24, 0), "train": toy_pairs(16, 1), "test": toy_pairs(12, 2)}
    tokens = {p: rankers.tokenize_sides(tok, q, a, 8, 16) for p, (q, a, _, _) in parts.items()}
    tokens["transfer"] = rankers.padded_sides(*tokens["transfer"])  # as the lesson passes it
    trigrams = {p: rankers.trigram_sides(CDSSM(), q, a) for p, (q, a, _, _) in parts.items()}
    one = (parts["transfer"][3], parts["train"][3])
    mean = tuple(0.5 * t for t in one)  # a second teacher that differs from the first
    return studentruns.StudentRuns(
        pretrained=tiny_bert(tok.vocab_size), layers=[1, 0], tokens=tokens, trigrams=trigrams,
        labels=parts["train"][2], teachers={"one": one, "mean": mean}, rates=RATES, epochs=EPOCHS, batch_size=8,
        distil_batch=8, kd_loss="mse", alpha=0.5, freeze_embeddings=True, keep=[("TwinBERT_res", 0, "distilled")])


def test_a_label_only_job_is_fine_tuning_by_hand(runs):
    for kind, epochs, lr, frozen in (("TwinBERT_res", 1, 1e-3, True), ("C-DSSM", 2, 3e-3, False)):
        [job] = studentruns.run_two_towers(runs, [(kind, 4, "labels")])
        model = build_student(kind, runs.pretrained, runs.layers, 4)
        side = runs.trigrams if kind == "C-DSSM" else runs.tokens
        rankers.fine_tune_two_tower(model, *side["train"], runs.labels, epochs=epochs, lr=lr, batch_size=8, seed=4,
                                    freeze_embeddings=frozen and kind != "C-DSSM", progress=False)
        assert np.array_equal(job["test_logits"], rankers.score_two_tower(model, *side["test"]))
        assert job["after_distillation"] is None and job["student"] is None


@pytest.mark.parametrize("how, teacher", [("distilled", "one"), ("mean", "mean")])
def test_a_distilled_job_is_the_recipe_by_hand(runs, how, teacher):
    [job] = studentruns.run_two_towers(runs, [("TwinBERT_1L", 2, how)])
    on_transfer, on_train = runs.teachers[teacher]
    model = build_student("TwinBERT_1L", runs.pretrained, runs.layers, 2)
    rankers.distil_two_tower(model, *runs.tokens["transfer"], on_transfer, kind="mse", epochs=1, lr=2e-3,
                             batch_size=8, seed=2, freeze_embeddings=True, progress=False)
    assert np.array_equal(job["after_distillation"], rankers.score_two_tower(model, *runs.tokens["test"]))
    rankers.fine_tune_two_tower(model, *runs.tokens["train"], runs.labels, teacher_logits=on_train, kind="mse",
                                alpha=0.5, epochs=1, lr=1e-3, batch_size=8, seed=2, freeze_embeddings=True,
                                progress=False)
    assert np.array_equal(job["test_logits"], rankers.score_two_tower(model, *runs.tokens["test"]))


def test_the_mean_teacher_gives_another_student(runs):
    one, mean = studentruns.run_two_towers(runs, [("C-DSSM", 0, "distilled"), ("C-DSSM", 0, "mean")])
    assert not np.array_equal(one["test_logits"], mean["test_logits"])


def test_a_job_does_not_depend_on_the_jobs_before_it(runs):
    jobs = [("C-DSSM", 1, "labels"), ("TwinBERT-Tiny", 0, "distilled"), ("TwinBERT_res", 0, "distilled")]
    forward = studentruns.run_two_towers(runs, jobs)
    backward = studentruns.run_two_towers(runs, jobs[::-1])[::-1]
    for a, b in zip(forward, backward):
        assert (a["kind"], a["seed"], a["how"]) == (b["kind"], b["seed"], b["how"])
        assert np.array_equal(a["test_logits"], b["test_logits"])
    assert [j["student"] is not None for j in forward] == [False, False, True]  # only the kept job


def test_a_job_in_a_process_equals_it_here(runs):
    jobs = [("TwinBERT_res", 0, "distilled"), ("C-DSSM", 3, "mean"), ("TwinBERT-Tiny", 1, "labels")]
    here = studentruns.run_two_towers(runs, jobs)
    there = studentruns.run_two_towers(runs, jobs, workers=2, threads=torch.get_num_threads())
    for a, b in zip(here, there):
        assert np.array_equal(a["test_logits"], b["test_logits"])
    assert np.array_equal(here[0]["after_distillation"], there[0]["after_distillation"])
    assert all(torch.equal(x, y) for x, y in zip(here[0]["student"].state_dict().values(),
                                                  there[0]["student"].state_dict().values()))


def test_bad_jobs_are_refused_by_name(runs):
    with pytest.raises(ValueError, match="student kind 'BERT' is not allowed"):
        studentruns.run_two_towers(runs, [("BERT", 0, "labels")])
    with pytest.raises(ValueError, match="how 'teacher' is not allowed: expected one of"):
        studentruns.run_two_towers(runs, [("C-DSSM", 0, "teacher")])
    with pytest.raises(ValueError, match="target 'best' is not allowed"):
        studentruns.train_distilled(runs, build_student("C-DSSM", runs.pretrained, [0], 0), "C-DSSM", 0,
                                    target="best")
    with pytest.raises(ValueError, match="part 'dev' is not allowed"):
        studentruns.student_sides(runs, "TwinBERT_res", "dev")
