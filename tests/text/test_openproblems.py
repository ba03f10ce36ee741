"""The two open problems (``kdtutorial.text.openproblems``) on a tiny random BERT and toy ids: the four teacher
checkpoints come in order with consistent update counts (early is the first scoring, over-trained the last, middle
the scoring nearest half-way, best the highest held-out score, earliest on ties), each keeps the weights of its own
update (a teacher rebuilt from it scores what was recorded), bad ``every`` is refused; KD students from each
checkpoint share seeds and rows; the noisy-label study gives one teacher record per share (flipped rows, clean dev
score, restored share recomputed here) and one student record per ``NOISY_METHODS`` entry, seed and share, all on
that share's seeded noisy labels. No network."""
import copy

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from kdtutorial.common.environment import seed_everything
from kdtutorial.common.labelnoise import flip_labels
from kdtutorial.text import allmethods as am
from kdtutorial.text import layercompare as lc
from kdtutorial.text import openproblems as op
from kdtutorial.text.finetuning import SentenceClassifier, fine_tune, predict
from kdtutorial.text.tokens import TokenizedText

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

PAD, CLS, SEP, VOCAB = 0, 1, 2, 60
SETTING = am.AllSetting(updates=4, batch_size=8, lr=1e-3, sentences=24, layers=2, checkpoints=2)


def text(n, seed):
    rng = np.random.default_rng(seed)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(2, 8)).tolist(), SEP] for _ in range(n)]
    return TokenizedText(ids=ids, pad_id=PAD, special_ids=frozenset({PAD, CLS, SEP})), rng.integers(0, 2, n)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    pretrained = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=37), add_pooling_layer=False)
    (tr, ytr), (se, yse), (de, yde) = text(32, 0), text(16, 1), text(16, 2)
    return pretrained, lc.Task("sst2", tr, ytr, se, yse, de, yde)


@pytest.fixture(scope="module")
def kept(setup):
    pretrained, task = setup
    return op.teacher_checkpoints(pretrained, task, sentences=32, epochs=3, every=2, lr=1e-3, batch_size=8, seed=0)


def test_teacher_checkpoints_come_in_order_with_consistent_updates(kept):
    assert [c["name"] for c in kept] == ["early", "middle", "best", "over-trained"] == list(op.CHECKPOINT_NAMES)
    curve = kept[0]["curve"]
    assert [u for u, _, _ in curve] == [2, 4, 6, 8, 10, 12]  # every 2 of 3 epochs x 4 batches
    assert all("curve" not in c for c in kept[1:])
    early, middle, best, last = kept
    assert early["update"] == curve[0][0] == 2 and last["update"] == curve[-1][0] == 12
    assert middle["update"] == 6  # nearest half of the 12 updates
    top = max(s for _, s, _ in curve)
    assert best["select"] == top and best["update"] == min(u for u, s, _ in curve if s == top)  # earliest on ties
    by_update = {u: (s, d) for u, s, d in curve}
    for c in kept:
        assert (c["select"], c["dev"]) == by_update[c["update"]]
        assert set(c) >= {"name", "update", "select", "dev", "state"}
        assert all(v.device.type == "cpu" for v in c["state"].values())


def test_each_checkpoint_keeps_the_weights_of_its_own_update(setup, kept):
    pretrained, task = setup
    for c in kept:
        teacher = op.teacher_from_state(pretrained, c["state"], 2)
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        assert task.score(teacher, "select")["accuracy"] == pytest.approx(c["select"])
        assert task.score(teacher, "dev")["accuracy"] == pytest.approx(c["dev"])
    head = "head.weight"
    assert not torch.equal(kept[0]["state"][head], kept[3]["state"][head])  # trained between early and the end
    assert not any(kept[0]["state"][k] is kept[3]["state"][k] for k in kept[0]["state"] if "layer.0" in k)


def test_uneven_scoring_still_ends_with_the_last_update_and_bad_every_is_refused(setup):
    pretrained, task = setup
    kept = op.teacher_checkpoints(pretrained, task, sentences=32, epochs=2, every=3, lr=1e-3, batch_size=8, seed=1)
    assert [u for u, _, _ in kept[0]["curve"]] == [3, 6, 8]  # 8 updates: every 3, and the last one
    assert [c["update"] for c in kept if c["name"] != "best"] == [3, 3, 8]  # 3 is nearer half-way (4) than 6
    for every in (0, 13):
        with pytest.raises(ValueError, match=f"every = {every} is not allowed: 1 .. the run's 12 updates"):
            op.teacher_checkpoints(pretrained, task, sentences=32, epochs=3, every=every, lr=1e-3, batch_size=8,
                                   seed=0)


def test_kd_students_from_each_checkpoint_share_seeds_rows_and_updates(setup, kept):
    pretrained, task = setup
    records = op.distil_from_checkpoints([kept[0], kept[3]], pretrained, task, [0, 1], SETTING)
    assert [(r["checkpoint"], r["seed"]) for r in records] == [("early", 0), ("early", 1), ("over-trained", 0),
                                                               ("over-trained", 1)]
    text_, labels = task.first(SETTING.sentences)
    assert {r["data"] for r in records} == {am.data_fingerprint(text_, labels)}
    assert all(r["method"] == "KD" and r["updates"] == SETTING.updates for r in records)
    for r in records:
        c = kept[0] if r["checkpoint"] == "early" else kept[3]
        assert (r["teacher_dev"], r["teacher_select"]) == (c["dev"], c["select"])
    am.check_same_budget(records, SETTING.updates)


def test_noisy_label_study_records_per_share_teachers_and_every_student(setup):
    pretrained, task = setup
    clean = task.train_labels.copy()
    shares, seeds, data_seed = [0.0, 0.25], [0, 1], 3
    students, teachers = op.noisy_label_study(pretrained, task, shares, seeds, SETTING, teacher_sentences=32,
                                              teacher_epochs=1, teacher_lr=1e-3, teacher_batch=8, data_seed=data_seed)
    assert np.array_equal(task.train_labels, clean)  # the clean task is left as it was
    assert [t["noise"] for t in teachers] == shares
    assert len(students) == len(shares) * len(op.NOISY_METHODS) * len(seeds)
    for share, t in zip(shares, teachers):
        noisy, flipped = flip_labels(clean, share, data_seed, 2)
        assert t["flipped"] == int(flipped[:24].sum())
        # the same teacher, trained here as the study does, restores the true label on this share of the rows
        seed_everything(data_seed)
        teacher = SentenceClassifier(copy.deepcopy(pretrained), n_classes=2)
        fine_tune(teacher, task.train, noisy[:32], epochs=1, lr=1e-3, batch_size=8, seed=data_seed, progress=False)
        assert t["dev"] == pytest.approx(task.score(teacher, "dev")["accuracy"])
        rows = np.flatnonzero(flipped[:24])
        if share == 0:
            assert t["flipped"] == 0 and np.isnan(t["restored"])
        else:
            assert t["flipped"] > 0
            restored = 100 * np.mean(predict(teacher, task.train.subset(rows)).argmax(-1).numpy() == clean[rows])
            assert t["restored"] == pytest.approx(restored) and 0 <= t["restored"] <= 100
        part = [r for r in students if r["noise"] == share]
        fingerprint = am.data_fingerprint(task.train.subset(range(24)), noisy[:24])
        assert {r["data"] for r in part} == {fingerprint}  # every student on this share's noisy rows
        for name in op.NOISY_METHODS:
            mine = [r for r in part if r["student"] == name]
            assert sorted(r["seed"] for r in mine) == seeds
            assert all(r["method"] == name and r["updates"] == SETTING.updates for r in mine)
    assert {r["data"] for r in students if r["noise"] == 0.0} != {r["data"] for r in students if r["noise"] == 0.25}
    assert {r["student"] for r in students} == set(op.NOISY_METHODS)


def test_the_teachers_steps_replay_from_a_graph_only_on_a_gpu(setup):
    pretrained, task = setup
    with pytest.raises(ValueError, match="graphs=True is not allowed on device 'cpu'"):
        op.teacher_checkpoints(pretrained, task, sentences=32, epochs=1, every=2, lr=1e-3, batch_size=8, seed=0,
                               graphs=True)
    with pytest.raises(ValueError, match="graphs=True is not allowed on device 'cpu'"):
        op.noisy_label_study(pretrained, task, [0.25], [0], SETTING, teacher_sentences=32, teacher_epochs=1,
                             teacher_lr=1e-3, teacher_batch=8, graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_graphed_teacher_checkpoints_score_as_the_eager_ones_on_a_gpu(setup):
    """Without dropout the replayed steps are the eager steps: every scoring of the curve agrees."""
    _, task = setup
    torch.manual_seed(0)
    pretrained = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                           add_pooling_layer=False)
    curves = {}
    for graphs in (False, True):
        kept = op.teacher_checkpoints(pretrained, task, sentences=32, epochs=3, every=2, lr=1e-3, batch_size=8,
                                      seed=0, device="cuda", graphs=graphs)
        curves[graphs] = kept[0]["curve"]
    assert [u for u, _, _ in curves[True]] == [u for u, _, _ in curves[False]]
    assert np.allclose([(s, d) for _, s, d in curves[True]], [(s, d) for _, s, d in curves[False]], atol=1e-6)
