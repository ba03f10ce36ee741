"""Independent runs in processes (``kdtutorial.common.processes``) and lesson 03's variants built on it
(``kdtutorial.text.twostage``), on tiny random BERT models: models survive the trip as class, config and weights
with their mode and frozen parameters; a job computed in a process equals the same job computed here, bit for bit
on the CPU with as many threads; every variant of lesson 03 runs, keeps what it is asked to keep, and bad variants
are refused by name (the pool itself: ``tests/common/test_workerpool.py``). No network."""
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from kdtutorial.common import processes
from kdtutorial.text import twostage
from kdtutorial.text.finetuning import SentenceClassifier, fine_tune_and_test
from _support import MASK, VOCAB, labelled_toy_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py



def text(n, seed):
    return labelled_toy_text(n, seed)


def masked_lm(layers=4, seed=0):
    torch.manual_seed(seed)
    return BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers,
                                      num_attention_heads=4, intermediate_size=37)).eval()


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_models_travel_as_parts_with_their_mode_and_frozen_parameters():
    clf = SentenceClassifier(masked_lm().base_model, n_classes=3, dropout=0.2).train()
    clf.encoder.embeddings.requires_grad_(False)
    teacher = masked_lm(seed=1)
    packed = processes.portable({"clf": clf, "pair": (teacher, torch.ones(2)), "n": 5})
    assert isinstance(packed["clf"], processes._ModuleParts) and packed["n"] == 5
    back = processes.restored(packed)
    assert same_weights(back["clf"], clf) and same_weights(back["pair"][0], teacher)
    assert back["clf"].training and not back["pair"][0].training
    assert back["clf"].dropout.p == 0.2 and back["clf"].head.out_features == 3
    assert [p.requires_grad for p in back["clf"].parameters()] == [p.requires_grad for p in clf.parameters()]
    assert back["pair"][1].tolist() == [1.0, 1.0]


def test_a_module_without_a_config_travels_as_it_is():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    back = processes.restored(processes.portable([lin]))[0]
    assert back is not lin and same_weights(back, lin)


def _fine_tune_job(shared, seed):
    (tr, ytr), (te, yte) = shared["train"], shared["test"]
    acc, clf = fine_tune_and_test(shared["encoder"], tr, ytr, te, yte, seed=seed, epochs=1, lr=1e-3, batch_size=8,
                                  progress=False)
    return acc, clf


def test_a_job_in_a_process_equals_the_same_job_here():
    shared = {"encoder": masked_lm().base_model, "train": text(24, 0), "test": text(16, 1)}
    here = processes.run_jobs(_fine_tune_job, shared, [0, 1], workers=1)
    there = processes.run_jobs(_fine_tune_job, shared, [0, 1], workers=2, threads=torch.get_num_threads())
    for (acc_a, clf_a), (acc_b, clf_b) in zip(here, there):
        assert acc_a == acc_b and same_weights(clf_a, clf_b)


@pytest.fixture(scope="module")
def two_stage():
    return twostage.TwoStage(
        teacher=masked_lm(), layers=[0, 2], unlabeled=text(24, 2)[0], mask_token_id=MASK, train=text(24, 0),
        test=text(16, 1), seeds=[0, 1], distil=dict(T=2.0, lr=1e-3, batch_size=8),
        fine_tune=dict(epochs=1, lr=1e-3, batch_size=8, progress=False), keep={"distilled": 1})


VARIANTS = {
    "teacher": dict(init="teacher", weights=None),
    "copied": dict(init="copy", weights=None),
    "distilled": dict(init="copy", weights={"ce": 5.0, "mlm": 2.0, "cos": 1.0}),
    "random": dict(init="random", weights={"ce": 5.0, "mlm": 2.0, "cos": 1.0}),
    "internal": dict(init="copy", weights={"ce": 5.0, "mlm": 2.0, "attn": 1.0, "cls": 1.0}),
}


def test_every_variant_runs_and_keeps_what_it_is_asked_to(two_stage):
    out = twostage.run_variants(two_stage, VARIANTS)
    assert [o["name"] for o in out] == list(VARIANTS)
    by = {o["name"]: o for o in out}
    for o in out:
        assert [r["seed"] for r in o["records"]] == [0, 1] and all(0 <= r["test_acc"] <= 100 for r in o["records"])
    assert by["teacher"]["log"] == [] and by["copied"]["log"] == [] and len(by["distilled"]["log"]) == 3
    assert by["teacher"]["parameters"] > by["copied"]["parameters"] == by["distilled"]["parameters"]
    assert isinstance(by["distilled"]["classifier"], SentenceClassifier) and by["teacher"]["classifier"] is None
    assert two_stage.teacher.config._attn_implementation == "sdpa"  # put back after the eager variant


def test_a_variant_is_the_same_in_a_process(two_stage):
    pick = {k: VARIANTS[k] for k in ("distilled", "internal")}
    here = twostage.run_variants(two_stage, pick)
    there = twostage.run_variants(two_stage, pick, workers=2, threads=torch.get_num_threads())
    for a, b in zip(here, there):
        assert a["records"] == b["records"]
        assert a["log"] == b["log"]


@pytest.mark.parametrize("spec, match", [(dict(init="bottom"), "init = 'bottom' is not allowed"),
                                         (dict(init="random", weights=None), "needs distillation weights"),
                                         (dict(init="teacher", weights={"ce": 1.0}), "is not distilled")])
def test_bad_variants_are_refused_by_name(spec, match):
    with pytest.raises(ValueError, match=match):
        twostage.check_variants({"v": spec})
