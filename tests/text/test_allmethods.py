"""Lesson 10's harness (``kdtutorial.text.allmethods``) on tiny random BERT models: every method trains the same
seeds on the same rows with exactly the requested student updates, and this is *asserted* (``check_same_budget``
refuses each kind of mismatch); checkpoint selection, inflation, task averages, the ordering check and the worker
processes' rebuilt models; the Minimax-kNN transfer sets the harness builds (``sentence_knn_data``: the exact nearest
pool sentences; ``pair_knn_data``: a pair's first sentence replaced by its nearest other training sentences) and
the budget over two tasks built with them (one data fingerprint per task); the fingerprint itself; exact averages,
inflation and ordering steps on hand-made records. No network."""
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from _support import CLS, MASK, PAD, SEP, SPECIAL, VOCAB, labelled_toy_text
from kdtutorial.common.statistics import paired
from kdtutorial.text import allmethods as am
from kdtutorial.text import layercompare as lc
from kdtutorial.text.knnaug import knn_data_from_tokens
from kdtutorial.text.tokens import TokenizedText

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py



def text(n, seed):
    return labelled_toy_text(n, seed)


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


# --- Minimax-kNN transfer sets built by the harness, and the budget over two tasks -------------------------------

WORDS = [f"w{i}" for i in range(VOCAB - 5)]  # word i is id 5 + i


class WordTokenizer:
    """``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``, one id per word: enough for ``tokens.tokenize`` and
    ``tokens.tokenize_sentence_pairs`` (the sentences here never need truncating)."""

    pad_token_id = PAD
    all_special_ids = sorted(SPECIAL)

    def __call__(self, first, second=None, truncation=True, max_length=64, padding=False):
        ids = lambda s: [5 + WORDS.index(w) for w in s.split()]  # noqa: E731
        if second is None:
            return {"input_ids": [[CLS, *ids(a), SEP] for a in first]}
        return {"input_ids": [[CLS, *ids(a), SEP, *ids(b), SEP] for a, b in zip(first, second)]}


def sentences(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 6), replace=False)) for _ in range(n)]


def embed(batch):
    """Unit bag-of-words vectors (a fixed random vector per word): similar sentences share words."""
    table = np.random.default_rng(123).normal(size=(len(WORDS), 16))
    vec = np.stack([table[[WORDS.index(w) for w in s.split()]].sum(0) for s in batch])
    return (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)


def single_task():
    from kdtutorial.text.tokens import tokenize

    tok, (tr, se, de) = WordTokenizer(), (sentences(32, 10), sentences(16, 11), sentences(16, 12))
    y = [np.random.default_rng(s).integers(0, 2, n) for s, n in ((20, 32), (21, 16), (22, 16))]
    return lc.Task("sst2", tokenize(tok, tr, 16), y[0], tokenize(tok, se, 16), y[1], tokenize(tok, de, 16), y[2]), tr


def pair_task():
    from kdtutorial.text import glue

    tok = WordTokenizer()
    parts = [glue.GlueData("mrpc", split, sentences(n, 30 + i), sentences(n, 40 + i),
                           np.random.default_rng(50 + i).integers(0, 2, n))
             for i, (split, n) in enumerate((("train", 32), ("train", 16), ("dev", 16)))]
    tokens = [glue.glue_tokens(tok, p, 24) for p in parts]
    return lc.Task("mrpc", tokens[0], parts[0].labels, tokens[1], parts[1].labels, tokens[2], parts[2].labels,
                   train_raw=parts[0])


@pytest.fixture(scope="module")
def two_tasks(prep):
    """sst2 with neighbours from a sentence pool (``sentence_knn_data``), mrpc with neighbours from its own training
    sentences (``pair_knn_data``); the same pretrained encoder and generator as ``prep``."""
    out = {}
    task, train_sentences = single_task()
    teacher, scores = lc.fine_tune_teacher(prep.pretrained, task, sentences=32, epochs=1, lr=1e-3, batch_size=8, seed=0)
    teacher.requires_grad_(False)
    text, labels = task.first(24)
    pool = sentences(40, 13)
    knn = am.sentence_knn_data(teacher, WordTokenizer(), text, labels, train_sentences[:24], pool, embed(pool),
                               embed(train_sentences[:24]), K=3, max_length=16)
    out["sst2"] = am.Prepared(task, teacher, scores, prep.pretrained, prep.generator, MASK, frozenset({59}), knn)
    task = pair_task()
    teacher, scores = lc.fine_tune_teacher(prep.pretrained, task, sentences=32, epochs=1, lr=1e-3, batch_size=8, seed=0)
    teacher.requires_grad_(False)
    text, labels = task.first(24)
    knn = am.pair_knn_data(teacher, WordTokenizer(), text, task.train_raw.subset(range(24)), labels, embed, K=3,
                           max_length=24, pool_raw=task.train_raw)
    out["mrpc"] = am.Prepared(task, teacher, scores, prep.pretrained, prep.generator, MASK, frozenset({59}), knn)
    return out


def test_budget_over_two_tasks_with_the_harness_knn_sets(two_tasks):
    setting = am.AllSetting(updates=3, batch_size=8, lr=1e-3, sentences=24, layers=2, n_gen=1, n_student=2, k1=2,
                            max_distance=1.0, checkpoints=3, gen_lr=1e-3)
    records = am.compare_all(two_tasks, am.METHODS, [0, 1], setting)
    assert len(records) == 2 * 2 * len(am.METHODS)
    assert all(r["updates"] == setting.updates for r in records)
    marks = am.checkpoint_updates(setting.updates, setting.checkpoints)
    assert marks == [1, 2, 3]
    for name, prep in two_tasks.items():
        rows = [r for r in records if r["task"] == name]
        text, labels = prep.task.first(setting.sentences)
        assert {r["data"] for r in rows} == {am.data_fingerprint(text, labels)}  # one fingerprint per task
        assert am.data_fingerprint(prep.knn.train_text, prep.knn.labels) == am.data_fingerprint(text, labels)
        assert {r["method"] for r in rows} == set(am.METHODS)
        assert all(sorted(r["seed"] for r in rows if r["method"] == m) == [0, 1] for m in am.METHODS)
        for r in rows:
            assert r["selected_update"] in marks and r["dev_oracle"] >= r["dev"]
            assert r["dev_oracle"] == max(c[2] for c in r["checkpoints"])
            assert r["dev"] == r[f"dev_{'f1' if name == 'mrpc' else 'accuracy'}"]
    assert len({r["data"] for r in records}) == 2  # the two tasks' rows differ


def test_sentence_knn_data_holds_the_exact_nearest_pool_sentences():
    from kdtutorial.text.finetuning import SentenceClassifier, predict
    from kdtutorial.text.tokens import tokenize

    torch.manual_seed(1)
    teacher = SentenceClassifier(BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                                      num_attention_heads=2, intermediate_size=37),
                                           add_pooling_layer=False)).eval()
    train, pool, tok = sentences(10, 1), sentences(30, 2), WordTokenizer()
    text, labels = tokenize(tok, train, 16), np.arange(10) % 2
    data = am.sentence_knn_data(teacher, tok, text, labels, train, pool, embed(pool), embed(train), K=4, max_length=16)
    sims = embed(train) @ embed(pool).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :4]
    assert data.K == 4 and len(data) == 10 and data.train_text is text
    for i in range(10):
        assert [data.cand_sentences[j] for j in data.neighbours[i]] == [pool[j] for j in order[i]]
        assert np.allclose(data.scores[i].numpy(), sims[i, order[i]], atol=1e-5)
    assert len(set(data.cand_sentences)) == len(data.cand_sentences) == len(set(order.reshape(-1).tolist()))
    assert [pool[j] for j in data.pool_rows] == data.cand_sentences
    assert data.cand_text.ids == tokenize(tok, data.cand_sentences, 16).ids
    assert torch.allclose(data.cand_teacher_logits, predict(teacher, data.cand_text), atol=1e-6)
    assert torch.allclose(data.teacher_logits, predict(teacher, text), atol=1e-6)
    assert data.random_rows.tolist() == data.neighbours[:, 0].tolist()
    with pytest.raises(ValueError, match="9 training sentences for 10 tokenised rows"):
        am.sentence_knn_data(teacher, tok, text, labels, train[:9], pool, embed(pool), embed(train[:9]), K=4,
                             max_length=16)


def test_pair_knn_data_replaces_the_first_sentence_by_its_nearest_other_sentences():
    from kdtutorial.text import glue
    from kdtutorial.text.finetuning import SentenceClassifier, predict
    from kdtutorial.text.tokens import tokenize_sentence_pairs

    torch.manual_seed(1)
    teacher = SentenceClassifier(BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                                      num_attention_heads=2, intermediate_size=37),
                                           add_pooling_layer=False)).eval()
    tok = WordTokenizer()
    pool_raw = glue.GlueData("rte", "train", sentences(20, 5), sentences(20, 6), np.arange(20) % 2)
    raw = pool_raw.subset(range(8))
    text, labels = glue.glue_tokens(tok, raw, 24), raw.labels
    data = am.pair_knn_data(teacher, tok, text, raw, labels, embed, K=3, max_length=24, pool_raw=pool_raw)
    pool = sorted(set(pool_raw.sentence1) | set(pool_raw.sentence2))
    vec = embed(pool)
    for i, (a, b) in enumerate(zip(raw.sentence1, raw.sentence2)):
        sims = {s: float(vec[pool.index(s)] @ vec[pool.index(a)]) for s in pool if s not in (a, b)}
        nearest = sorted(sims, key=lambda s: -sims[s])[:3]
        got = [data.cand_sentences[j] for j in data.neighbours[i]]
        assert got == [f"{s} ||| {b}" for s in nearest]  # its own two sentences never count
        assert np.allclose(data.scores[i].numpy(), [sims[s] for s in nearest], atol=1e-5)
        assert [data.cand_text.ids[j] for j in data.neighbours[i]] == tokenize_sentence_pairs(tok, nearest, [b] * 3, 24).ids
    assert data.train_text is text and len(data.cand_text) == 8 * 3
    assert torch.allclose(data.cand_teacher_logits, predict(teacher, data.cand_text), atol=1e-6)
    with pytest.raises(ValueError, match="7 training pairs for 8 tokenised rows"):
        am.pair_knn_data(teacher, tok, text, raw.subset(range(7)), labels, embed, K=3, max_length=24)


def test_data_fingerprint_sees_every_id_every_label_and_the_row_boundaries():
    a = TokenizedText([[2, 7, 3], [2, 9, 9, 3]], PAD, SPECIAL)
    fp = am.data_fingerprint(a, [0, 1])
    assert len(fp) == 16 and fp == am.data_fingerprint(TokenizedText([[2, 7, 3], [2, 9, 9, 3]], PAD, SPECIAL),
                                                      np.array([0, 1]))
    assert fp == am.data_fingerprint(a, torch.tensor([0, 1]))  # labels as a tensor (KnnData keeps them so)
    assert fp != am.data_fingerprint(a, [1, 1])
    assert fp != am.data_fingerprint(TokenizedText([[2, 7, 3], [2, 9, 8, 3]], PAD, SPECIAL), [0, 1])
    assert fp != am.data_fingerprint(TokenizedText([[2, 7, 3, 2], [9, 9, 3]], PAD, SPECIAL), [0, 1])
    assert fp != am.data_fingerprint(a.subset([1, 0]), [1, 0])  # the order counts too


def test_check_same_budget_is_per_task_and_names_the_task():
    sst2 = [rec("sst2", m, s, 50.0, data="a") for m in ("no KD", "KD") for s in (0, 1)]
    cola = [rec("cola", m, s, 20.0, data="c") for m in ("no KD", "KD") for s in (3,)]
    am.check_same_budget(sst2 + cola, 4)  # other seeds and other data in another task are fine
    with pytest.raises(AssertionError, match=r"cola: the methods ran different seeds"):
        am.check_same_budget(sst2 + cola + [rec("cola", "PKD", 4, 20.0, data="c")], 4)
    with pytest.raises(AssertionError, match=r"sst2: the methods trained on different data: \['a', 'b'\]"):
        am.check_same_budget(sst2[:3] + [rec("sst2", "KD", 1, 50.0, data="b")] + cola, 4)
    with pytest.raises(AssertionError, match=r"cola: student updates differ from 4: \[\('KD', 3, 3\)\]"):
        am.check_same_budget(sst2 + cola[:1] + [rec("cola", "KD", 3, 20.0, updates=3, data="c")], 4)


def test_unknown_methods_are_refused(prep):
    with pytest.raises(ValueError, match="method = 'TinyBERT' is not allowed"):
        am.train_one("TinyBERT", prep, 0, SETTING)
    with pytest.raises(ValueError, match=r"methods \['TinyBERT'\] are not known"):
        am.compare_all({"sst2": prep}, ["KD", "TinyBERT"], [0], SETTING)
    with pytest.raises(ValueError, match="checkpoints = 5 is not allowed: 1 .. updates \\(4\\)"):
        am.checkpoint_updates(4, 5)
    assert am.checkpoint_updates(10, 4) == [2, 5, 8, 10] and am.checkpoint_updates(3, 3) == [1, 2, 3]


def test_averages_count_only_seeds_every_task_ran_and_other_metrics():
    records = [{"task": "sst2", "method": "KD", "seed": 0, "dev": 80.0, "selection": 70.0},
               {"task": "cola", "method": "KD", "seed": 0, "dev": 21.0, "selection": 30.0},
               {"task": "sst2", "method": "KD", "seed": 1, "dev": 90.0, "selection": 71.0},  # no cola run for seed 1
               {"task": "sst2", "method": "no KD", "seed": 0, "dev": 79.0, "selection": 60.0},
               {"task": "cola", "method": "no KD", "seed": 0, "dev": 10.0, "selection": 40.0}]
    assert am.average_records(records) == [{"method": "KD", "seed": 0, "dev": 50.5},
                                           {"method": "no KD", "seed": 0, "dev": 44.5}]
    assert am.average_records(records, "selection") == [{"method": "KD", "seed": 0, "selection": 50.0},
                                                        {"method": "no KD", "seed": 0, "selection": 50.0}]


def test_inflation_is_oracle_minus_selected_per_student():
    records = [{"task": "sst2", "method": "KD", "seed": 0, "dev": 80.0, "dev_oracle": 82.5},
               {"task": "cola", "method": "PKD", "seed": 3, "dev": 20.0, "dev_oracle": 20.0}]
    assert am.inflation(records) == [{"task": "sst2", "method": "KD", "seed": 0, "inflation": 2.5},
                                     {"task": "cola", "method": "PKD", "seed": 3, "inflation": 0.0}]


def test_talk_ordering_pairs_each_neighbour_of_the_order():
    values = {"no KD": [50.0, 52.0, 51.0], "KD": [51.0, 52.5, 53.0], "PKD": [50.0, 51.0, 51.8]}
    average = [{"method": m, "seed": s, "dev": v} for m, vs in values.items() for s, v in enumerate(vs)]
    steps = am.talk_ordering(average, ("no KD", "KD", "PKD"))
    assert [(a, b) for a, b, _ in steps] == [("no KD", "KD"), ("KD", "PKD")]
    first, second = steps[0][2], steps[1][2]
    assert (first.method, first.baseline, first.seeds) == ("KD", "no KD", (0, 1, 2))
    assert first.differences == (1.0, 0.5, 2.0) and first.mean == pytest.approx(3.5 / 3)
    assert (first.n_higher, first.n_lower) == (3, 0)
    assert first.verdict == "not distinguishable"  # 7/6 +- 4.30 * 0.764 / sqrt(3): the interval holds 0
    assert second.differences == pytest.approx((-1.0, -1.5, -1.2)) and second.mean == pytest.approx(-3.7 / 3)
    assert second.verdict == "lower"  # -1.23 +- 4.30 * 0.252 / sqrt(3) = -1.86 .. -0.61
