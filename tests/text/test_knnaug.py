"""kNN-augmented KD (``kdtutorial.text.knnaug``): the candidate set, each augmentation's choice of sentences, the
training loop's loss and counts, paired starts, and the comparison. Teacher and student are tiny random BERT
classifiers on a toy word tokenizer; nothing uses the network."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _support import tiny_bert
from kdtutorial.common.losses import kd_kl_loss
from kdtutorial.text import knnaug, minimax
from kdtutorial.text.finetuning import SentenceClassifier, predict
from kdtutorial.text.tokens import pad_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

VOCAB = 50
WORDS = [f"w{i}" for i in range(40)]


class WordTokenizer:
    """[CLS] words [SEP], one id per word: enough of a tokenizer for ``kd.tokens.tokenize``."""

    pad_token_id, cls, sep = 0, 1, 2
    all_special_ids = [0, 1, 2]

    def __call__(self, sentences, truncation=True, max_length=64, padding=False):
        ids = [[self.cls] + [3 + WORDS.index(w) for w in s.split()][: max_length - 2] + [self.sep] for s in sentences]
        return {"input_ids": ids}


def classifier(seed, scale=10.0):
    model = SentenceClassifier(tiny_bert(VOCAB, seed), n_classes=2, dropout=0.0)
    for m in model.modules():  # no dropout anywhere: train and eval mode compute the same logits
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    with torch.no_grad():
        model.head.weight.mul_(scale)
    return model.eval()


def sentences(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 7))) for _ in range(n)]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    teacher = classifier(0)
    train, pool = sentences(12, 1), sentences(60, 2)
    labels = np.arange(12) % 2
    nb = np.stack([np.random.default_rng(i).choice(60, size=5, replace=False) for i in range(12)])
    data = knnaug.build_knn_data(teacher, WordTokenizer(), train, labels, pool, nb, np.ones(nb.shape),
                                 random_count=20, seed=0, max_length=16, batch_size=7)
    return teacher, train, pool, nb, data


def test_build_knn_data_maps_every_neighbour_and_scores_it_once(setup):
    teacher, train, pool, nb, data = setup
    assert data.K == 5 and len(data) == 12
    for i in range(12):
        assert [data.cand_sentences[j] for j in data.neighbours[i]] == [pool[j] for j in nb[i]]
    assert data.pool_rows[data.neighbours].tolist() == nb.tolist()
    assert len(set(data.pool_rows[data.random_rows].tolist())) == 20  # drawn without replacement
    assert len(data.cand_sentences) == len(set(data.pool_rows.tolist()))  # each candidate once
    assert torch.allclose(data.teacher_logits, predict(teacher, data.train_text), atol=1e-6)
    assert torch.allclose(data.cand_teacher_logits, predict(teacher, data.cand_text), atol=1e-6)
    assert data.neighbour_logits([3]).shape == (1, 5, 2)
    d = minimax.teacher_distance(data.teacher_logits, data.neighbour_logits())
    assert torch.equal(data.allowed(0.1), d <= 0.1)
    with pytest.raises(ValueError, match="random_count = 61 is not allowed"):
        knnaug.build_knn_data(teacher, WordTokenizer(), train, np.zeros(12), pool, nb, random_count=61)
    with pytest.raises(ValueError, match=r"\[n, K\] with n = 12"):
        knnaug.build_knn_data(teacher, WordTokenizer(), train, np.zeros(12), pool, nb[:5], random_count=5)


def test_methods_and_their_errors():
    methods = knnaug.knn_methods(8, [1, 4], 0.22)
    assert list(methods) == ["KD", "KD + random pool", "KD + vanilla-8NN", "KD + Minimax-8NN (k1 = 1)",
                             "KD + Minimax-8NN (k1 = 4)"]
    assert methods["KD + Minimax-8NN (k1 = 4)"] == knnaug.Augmentation("minimax", 4, 0.22)
    assert methods["KD + random pool"].per_example == 8
    with pytest.raises(ValueError, match=r"k1 = 9 is not allowed"):
        knnaug.knn_methods(8, [9], 0.22)
    with pytest.raises(ValueError, match=r"kind = 'nearest' is not allowed: choose one of"):
        knnaug.Augmentation("nearest", 2)


def test_each_augmentation_chooses_what_it_says(setup):
    teacher, train, pool, nb, data = setup
    student = classifier(5)
    rows = np.array([0, 3, 4])
    none, _ = knnaug.augmented_rows(knnaug.Augmentation("none"), data, rows)
    assert len(none) == 0
    knn, scored = knnaug.augmented_rows(knnaug.Augmentation("knn", 5), data, rows)
    assert knn.tolist() == data.neighbours[rows].reshape(-1).tolist() and scored == 0
    g = torch.Generator().manual_seed(0)
    rnd, _ = knnaug.augmented_rows(knnaug.Augmentation("random", 3), data, rows, generator=g)
    assert len(rnd) == 9 and set(rnd.tolist()) <= set(data.random_rows.tolist())
    # Minimax: by hand, the k1 allowed neighbours of largest KL(teacher || student) per row
    aug = knnaug.Augmentation("minimax", 2, 0.3)
    allowed = data.allowed(0.3)
    chosen, scored = knnaug.augmented_rows(aug, data, rows, student)
    assert scored == int(allowed[rows].sum())
    s_logits = predict(student, data.cand_text)
    expected = []
    for r in rows:
        ok = [j for j in range(5) if allowed[r, j]]
        kl = {j: minimax.candidate_divergence(data.cand_teacher_logits[data.neighbours[r, j]],
                                              s_logits[data.neighbours[r, j]]).item() for j in ok}
        expected += [data.neighbours[r, j].item() for j in sorted(ok, key=lambda j: (-kl[j], j))[:2]]
    assert sorted(chosen.tolist()) == sorted(expected)
    assert not student.training  # put back in the mode it came in
    student.train()
    knnaug.augmented_rows(aug, data, rows, student)
    assert student.training


def test_the_loss_of_one_step_is_the_documented_objective(setup):
    teacher, train, pool, nb, data = setup
    setting = knnaug.KnnSetting(steps=1, batch_size=4, lr=0.0, tau=2.0, alpha=0.3, clip=None)
    student = classifier(5)
    run = knnaug.train_knn_student(student, data, knnaug.Augmentation("knn", 5), setting, seed=3)
    # rebuild the first batch as the loop draws it (shuffle seeded with seed * 1000 + epoch)
    rows = np.random.default_rng(3000).permutation(12)[:4]
    with torch.no_grad():
        b = pad_rows(data.train_text, rows)
        s = student(b["input_ids"], b["attention_mask"])
        extra = data.neighbours[rows].reshape(-1)
        a = pad_rows(data.cand_text, extra.numpy())
        sa = student(a["input_ids"], a["attention_mask"])
    expected = (0.7 * F.cross_entropy(s, data.labels[rows]) + 0.3 * kd_kl_loss(s, data.teacher_logits[rows], 2.0)
                + 0.3 * kd_kl_loss(sa, data.cand_teacher_logits[extra], 2.0))
    assert run.history[0]["loss"] == pytest.approx(expected.item(), rel=1e-4)  # lr 0: the weights did not move
    assert run.augmented == 20 and run.scored == 0 and run.seconds > 0


def test_same_seed_same_start_and_batches_and_the_counts(setup):
    teacher, train, pool, nb, data = setup
    setting = knnaug.KnnSetting(steps=6, batch_size=4, lr=1e-3, tau=1.0)
    runs = {}
    for name, aug in knnaug.knn_methods(5, [2], 1.0).items():
        runs[name] = knnaug.train_knn_student(classifier(5), data, aug, setting, seed=1)
    first_ce = {name: r.history[0]["ce"] for name, r in runs.items()}
    assert len({round(v, 6) for v in first_ce.values()}) == 1  # same student start, same first batch
    assert runs["KD"].augmented == 0
    assert runs["KD + vanilla-5NN"].augmented == 6 * 4 * 5
    assert runs["KD + random pool"].augmented == 6 * 4 * 5
    assert runs["KD + Minimax-5NN (k1 = 2)"].augmented == 6 * 4 * 2  # no filter (max_distance 1): always 2
    assert runs["KD + Minimax-5NN (k1 = 2)"].scored == 6 * 4 * 5
    again = knnaug.train_knn_student(classifier(5), data, knnaug.Augmentation("minimax", 2), setting, seed=1)
    assert [h["loss"] for h in again.history] == [h["loss"] for h in runs["KD + Minimax-5NN (k1 = 2)"].history]


def test_compare_knn_methods_records_every_student(setup):
    teacher, train, pool, nb, data = setup
    setting = knnaug.KnnSetting(steps=2, batch_size=4)
    methods = {k: v for k, v in knnaug.knn_methods(5, [1], 1.0).items() if k in ("KD", "KD + Minimax-5NN (k1 = 1)")}
    records, runs = knnaug.compare_knn_methods(lambda seed: classifier(seed + 10), data, methods, [0, 1], setting,
                                               data.train_text, data.labels.numpy())
    assert [(r["method"], r["seed"]) for r in records] == [(m, s) for s in (0, 1) for m in methods]
    assert all(0 <= r["test_acc"] <= 100 for r in records) and set(runs) == {(r["method"], r["seed"]) for r in records}
    assert [r["augmented"] for r in records] == [0, 8, 0, 8]
