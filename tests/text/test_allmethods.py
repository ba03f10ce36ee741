"""Lesson 10's harness (``kdtutorial.text.allmethods``) on tiny random BERT models: every method trains the same
seeds on the same rows with exactly the requested student updates, and this is *asserted* (``check_same_budget``
refuses each kind of mismatch); checkpoint selection, inflation, task averages, the ordering check and the worker
processes' rebuilt models. No network."""
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from kdtutorial.common.statistics import paired
from kdtutorial.text import allmethods as am
from kdtutorial.text import layercompare as lc
from kdtutorial.text.knnaug import knn_data_from_tokens
from kdtutorial.text.tokens import TokenizedText

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

PAD, CLS, SEP, MASK, VOCAB = 0, 2, 3, 4, 60
SPECIAL = frozenset({PAD, 1, CLS, SEP, MASK})


def text(n, seed):
    rng = np.random.default_rng(seed)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(2, 8)).tolist(), SEP] for _ in range(n)]
    return TokenizedText(ids=ids, pad_id=PAD, special_ids=SPECIAL), rng.integers(0, 2, n)


@pytest.fixture(scope="module")
def prep():
    torch.manual_seed(0)
    pretrained = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=37), add_pooling_layer=False)
    (tr, ytr), (se, yse), (de, yde) = text(32, 0), text(16, 1), text(16, 2)
    task = lc.Task("sst2", tr, ytr, se, yse, de, yde)
    teacher, scores = lc.fine_tune_teacher(pretrained, task, sentences=32, epochs=1, lr=1e-3, batch_size=8, seed=0)
    teacher.requires_grad_(False)
    generator = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=37)).eval()
    train, labels = task.first(24)
    cand, _ = text(48, 3)
    neighbours = np.arange(48).reshape(24, 2)
    knn = knn_data_from_tokens(teacher, train, labels, cand, [f"c{i}" for i in range(48)], neighbours,
                               np.ones((24, 2), np.float32), np.arange(8), np.arange(48))
    return am.Prepared(task, teacher, scores, pretrained, generator, MASK, frozenset(), knn)


SETTING = am.AllSetting(updates=4, batch_size=8, lr=1e-3, sentences=24, layers=2, n_gen=1, n_student=2, k1=1,
                        max_distance=1.0, checkpoints=2, gen_lr=1e-3)


def test_every_method_gets_the_same_seeds_rows_and_updates(prep):
    records = am.compare_all({"sst2": prep}, am.METHODS, [0, 1], SETTING)
    assert len(records) == 2 * len(am.METHODS)
    assert {r["updates"] for r in records} == {SETTING.updates}
    assert len({r["data"] for r in records}) == 1
    for m in am.METHODS:
        assert sorted(r["seed"] for r in records if r["method"] == m) == [0, 1]
    marks = am.checkpoint_updates(SETTING.updates, SETTING.checkpoints)
    for r in records:
        assert r["selected_update"] in marks and r["dev_oracle"] >= r["dev"]
        assert [c[0] for c in r["checkpoints"]] == marks
        best = max(r["checkpoints"], key=lambda c: (c[1], -c[0]))
        assert (r["selection"], r["dev"]) == (best[1], best[2])


def test_a_record_does_not_depend_on_the_other_methods_or_the_worker(prep):
    alone = am.train_one("KD", prep, 1, SETTING)
    again = am.train_one("KD", prep, 1, SETTING)
    assert alone["checkpoints"] == again["checkpoints"]
    [worker] = am.run_students({"sst2": prep}, [("sst2", "PKD", 1, SETTING)], workers=2)
    here = am.train_one("PKD", prep, 1, SETTING)
    assert np.allclose([c[1:] for c in worker["checkpoints"]], [c[1:] for c in here["checkpoints"]])


def test_the_knn_rows_must_be_the_students_rows(prep):
    other = am.Prepared(prep.task, prep.teacher, {}, prep.pretrained, prep.generator, MASK, frozenset(),
                        knn_data_from_tokens(prep.teacher, *text(24, 9), *text(48, 3)[:1], [f"c{i}" for i in range(48)],
                                             np.arange(48).reshape(24, 2), np.ones((24, 2)), np.arange(8),
                                             np.arange(48)))
    with pytest.raises(ValueError, match="is not the 24 rows the students train on"):
        am.train_one("Minimax-kNN", other, 0, SETTING)


def rec(task, method, seed, dev, updates=4, data="a"):
    return {"task": task, "method": method, "seed": seed, "dev": dev, "updates": updates, "data": data,
            "dev_oracle": dev + 1.0}


def test_check_same_budget_refuses_each_kind_of_mismatch():
    good = [rec("sst2", m, s, 50.0) for m in ("no KD", "KD") for s in (0, 1)]
    am.check_same_budget(good, 4)
    with pytest.raises(AssertionError, match="different seeds"):
        am.check_same_budget(good[:-1] + [rec("sst2", "KD", 2, 50.0)], 4)
    with pytest.raises(AssertionError, match="different data"):
        am.check_same_budget(good[:-1] + [rec("sst2", "KD", 1, 50.0, data="b")], 4)
    with pytest.raises(AssertionError, match="student updates differ from 4"):
        am.check_same_budget(good[:-1] + [rec("sst2", "KD", 1, 50.0, updates=5)], 4)


def test_averages_inflation_and_the_ordering():
    records = [rec(t, m, s, base + (2.0 if m == "KD" else 0.0) + s)
               for t, base in (("sst2", 80.0), ("cola", 20.0)) for m in ("no KD", "KD") for s in (0, 1, 2)]
    average = am.average_records(records)
    assert {(r["method"], r["seed"]): r["dev"] for r in average} == {
        ("no KD", 0): 50.0, ("no KD", 1): 51.0, ("no KD", 2): 52.0, ("KD", 0): 52.0, ("KD", 1): 53.0, ("KD", 2): 54.0}
    assert {r["inflation"] for r in am.inflation(records)} == {1.0}
    [(a, b, v)] = am.talk_ordering(average, ("no KD", "KD"))
    assert (a, b, v.mean, v.verdict) == ("no KD", "KD", 2.0, "higher")
    assert am.claim_status(v) == "reproduces"
    assert am.claim_status(paired(average, "no KD", "KD", metric="dev")) == "does not reproduce: the opposite"
    assert am.claim_status(paired(average[:2] + average[3:5], "KD", "no KD", metric="dev")).startswith("not judged")


def test_checkpoint_updates():
    assert am.checkpoint_updates(150, 3) == [50, 100, 150]
    assert am.checkpoint_updates(10, 1) == [10]
    with pytest.raises(ValueError, match="checkpoints = 0 is not allowed"):
        am.checkpoint_updates(10, 0)


def test_teacher_checkpoints_keep_four_named_points_and_share_frozen_weights(prep):
    from kdtutorial.text import openproblems as op

    kept = op.teacher_checkpoints(prep.pretrained, prep.task, sentences=32, epochs=3, every=2, lr=1e-3,
                                  batch_size=8, seed=0, freeze_embeddings=True)
    assert [c["name"] for c in kept] == list(op.CHECKPOINT_NAMES)
    curve = kept[0]["curve"]
    assert [u for u, _, _ in curve] == list(range(2, 13, 2))
    assert kept[0]["update"] == curve[0][0] and kept[3]["update"] == curve[-1][0]
    assert kept[2]["select"] == max(s for _, s, _ in curve) and kept[1]["update"] == 6
    emb = next(k for k in kept[0]["state"] if "word_embeddings" in k)
    assert all(c["state"][emb] is kept[0]["state"][emb] for c in kept)  # frozen: one copy
    layer = next(k for k in kept[0]["state"] if "layer.0.attention.self.query.weight" in k)
    assert not torch.equal(kept[0]["state"][layer], kept[3]["state"][layer])  # trained: its own copy
    records = op.distil_from_checkpoints(kept[:2], prep.pretrained, prep.task, [0, 1], SETTING)
    assert [(r["checkpoint"], r["seed"]) for r in records] == [("early", 0), ("early", 1), ("middle", 0), ("middle", 1)]


def test_noisy_label_study_trains_each_student_on_the_same_noisy_rows(prep):
    from kdtutorial.text import openproblems as op

    students, teachers = op.noisy_label_study(prep.pretrained, prep.task, [0.0, 0.5], [0, 1], SETTING,
                                              teacher_sentences=32, teacher_epochs=1, teacher_lr=1e-3,
                                              teacher_batch=8)
    assert [t["noise"] for t in teachers] == [0.0, 0.5] and teachers[0]["flipped"] == 0
    assert teachers[1]["flipped"] == 12 and 0 <= teachers[1]["restored"] <= 100  # round(0.5 * 24) of the rows used
    assert len(students) == 2 * len(op.NOISY_METHODS) * 2
    for share in (0.0, 0.5):
        part = [r for r in students if r["noise"] == share]
        assert len({r["data"] for r in part}) == 1 and {r["updates"] for r in part} == {SETTING.updates}
    assert {r["data"] for r in students if r["noise"] == 0.0} != {r["data"] for r in students if r["noise"] == 0.5}
