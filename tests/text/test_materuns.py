"""Lesson 05's students as independent runs (``kdtutorial.text.materuns``), on tiny random BERT models: students of
one seed start equal whatever the method; a run equals ``train_mate_kd`` called by hand; only the runs asked for
come back with their student and generator; a run in a process equals it here; unknown methods are refused by name.
No network."""
import copy

import pytest
import torch

from _support import MASK, VOCAB, labelled_toy_text, tiny_bert
from kdtutorial.common.environment import seed_everything
from kdtutorial.common.statistics import accuracy
from kdtutorial.text import materuns, matekd
from kdtutorial.text.finetuning import SentenceClassifier, predict
from transformers import BertConfig, BertForMaskedLM

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py



def text(n, seed):
    return labelled_toy_text(n, seed, lengths=(3, 9))


METHODS = {"student, no KD": dict(form="paper", lam=0.0, augment=False), "KD": dict(augment=False),
           "KD + random mask": dict(adversarial=False), "MATE-KD": dict()}


@pytest.fixture(scope="module")
def shared():
    torch.manual_seed(0)
    generator = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=37)).eval()
    teacher = SentenceClassifier(tiny_bert(VOCAB, 1), n_classes=2).eval().requires_grad_(False)
    options = dict(mask_token_id=MASK, student_steps=5, n_gen=2, n_student=3, batch_size=4, gen_lr=1e-3, lr=1e-3,
                   progress=False)
    return materuns.MateRuns(teacher=teacher, generator=generator, encoder=tiny_bert(VOCAB, 2), layers=[1],
                             train=text(16, 0), test=text(12, 1), methods=METHODS, options=options,
                             keep=[("MATE-KD", 0)])


def test_every_method_runs_from_the_same_start_and_only_kept_runs_come_back(shared):
    jobs = [(m, s, {}) for s in (1, 0) for m in METHODS]
    runs = materuns.run_comparison(shared, jobs)
    assert [(r["method"], r["seed"]) for r in runs] == [(m, s) for m, s, _ in jobs]
    for s in (0, 1):
        assert len({r["start_norm"] for r in runs if r["seed"] == s}) == 1
    kept = [r for r in runs if r["student"] is not None]
    assert [(r["method"], r["seed"]) for r in kept] == [("MATE-KD", 0)]
    assert isinstance(kept[0]["generator"], BertForMaskedLM)
    phases = [h["phase"] for h in kept[0]["history"]]
    assert phases.count("student") == 5 and phases.count("generator") > 0


def test_a_run_is_train_mate_kd_by_hand(shared):
    [run] = materuns.run_comparison(shared, [("KD + random mask", 3, {"n_gen": 1})])
    seed_everything(3)
    student = materuns.copied_student(shared.encoder, shared.layers)
    gen = copy.deepcopy(shared.generator)
    history = matekd.train_mate_kd(shared.teacher, student, gen, *shared.train, seed=3,
                                   **{**shared.options, "adversarial": False, "n_gen": 1})
    assert run["history"] == history
    assert run["test_acc"] == accuracy(predict(student, shared.test[0]), shared.test[1])


def test_a_run_in_a_process_equals_it_here(shared):
    jobs = [("MATE-KD", 0, {}), ("KD", 1, {})]
    here = materuns.run_comparison(shared, jobs)
    there = materuns.run_comparison(shared, jobs, workers=2, threads=torch.get_num_threads())
    for a, b in zip(here, there):
        assert (a["test_acc"], a["history"], a["start_norm"]) == (b["test_acc"], b["history"], b["start_norm"])
    assert all(torch.equal(x, y) for x, y in zip(here[0]["student"].state_dict().values(),
                                                  there[0]["student"].state_dict().values()))


def test_an_unknown_method_is_refused_by_name(shared):
    with pytest.raises(ValueError, match="'PKD'"):
        materuns.run_comparison(shared, [("PKD", 0, {})])
