"""Lesson 07's comparison machinery on tiny BERT classifiers: the teacher cache, one run's record, the grid,
ALP-KD's attention map, the activation count and the side-by-side step costs."""
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from kdtutorial.text import layercompare as lc
from kdtutorial.text import layerdistil
from kdtutorial.text.finetuning import SentenceClassifier
from kdtutorial.text.layers import layer_map
from kdtutorial.text.tokens import TokenizedText

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

PAD, CLS, SEP, VOCAB = 0, 1, 2, 60


def encoder(layers=4, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=37, attn_implementation="eager")
    return BertModel(cfg, add_pooling_layer=False)


def text(n, seed):
    rng = np.random.default_rng(seed)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(2, 8)).tolist(), SEP] for _ in range(n)]
    return TokenizedText(ids=ids, pad_id=PAD, special_ids=frozenset({PAD, CLS, SEP})), rng.integers(0, 2, n)


def toy_task():
    (tr, ytr), (se, yse), (de, yde) = text(32, 0), text(16, 1), text(16, 2)
    return lc.Task("sst2", tr, ytr, se, yse, de, yde)


def teacher_of(pretrained, task):
    return lc.fine_tune_teacher(pretrained, task, sentences=32, epochs=1, lr=1e-3, batch_size=8, seed=0)


def test_teacher_cache_serves_the_same_outputs_and_counts_hits():
    teacher = SentenceClassifier(encoder()).eval()
    (t, _), cache = text(8, 3), layerdistil.TeacherBatchCache()
    from kdtutorial.text.tokens import padded_batches

    _, batch = next(padded_batches(t, 8))
    a = cache.outputs(teacher, batch["input_ids"], batch["attention_mask"])
    b = cache.outputs(teacher, batch["input_ids"], batch["attention_mask"])
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1) and a[0] is b[0]
    with torch.no_grad():
        logits, states = teacher.logits_and_states(batch["input_ids"], batch["attention_mask"], hidden_states=True)
    assert torch.equal(a[0], logits) and all(torch.equal(x, y) for x, y in zip(a[1], states))
    full = layerdistil.TeacherBatchCache(max_bytes=10)  # too small to store anything: still correct, never stored
    assert torch.equal(full.outputs(teacher, batch["input_ids"], batch["attention_mask"])[0], logits) and len(full) == 0


def test_a_cached_teacher_trains_the_same_student():
    pretrained, task = encoder(), toy_task()
    teacher, _ = teacher_of(pretrained, task)
    setting = lc.Setting(epochs=2, batch_size=8, lr=1e-3)
    plain, s1, _ = lc.train_and_score(teacher, pretrained, task, 2, "ALP-KD", 1, setting)
    cache = layerdistil.TeacherBatchCache()
    cached, s2, _ = lc.train_and_score(teacher, pretrained, task, 2, "ALP-KD", 1, setting, cache=cache)
    assert cache.misses == 8 and cache.hits == 0  # two epochs of four batches, all new
    assert plain["dev"] == cached["dev"] and plain["last_loss"] == pytest.approx(cached["last_loss"], abs=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(s1.state_dict().values(), s2.state_dict().values()))


def test_grid_records_are_paired_and_the_kept_epoch_is_the_best_held_out_one():
    pretrained, task = encoder(), toy_task()
    teacher, scores = teacher_of(pretrained, task)
    assert set(scores) == {"select", "dev"} and "accuracy" in scores["dev"]
    seen = []
    records = lc.compare_methods(teacher, pretrained, task, [2, 1], ["no KD", "PKD-Skip", "CKD-PO"], [0, 1],
                                 lc.Setting(epochs=2, batch_size=8, lr=1e-3), progress=False, cache_bytes=1 << 24,
                                 keep=lambda r, s, d: seen.append((r["method"], type(d).__name__)))
    assert len(records) == 12 and len(seen) == 12
    for r in records:
        assert r["steps"] == 8 and r["epoch"] in (1, 2) and 0 <= r["dev"] <= 100 and r["dev"] == r["dev_accuracy"]
    with pytest.raises(ValueError, match="methods \\['PKD'\\] are not known"):
        lc.compare_methods(teacher, pretrained, task, [2], ["PKD"], [0], lc.Setting(), progress=False)


def test_students_start_from_the_bottom_layers_or_at_random():
    pretrained = encoder()
    bottom = lc.new_student(pretrained, 2, "bottom")
    assert torch.equal(bottom.encoder.encoder.layer[1].output.dense.weight, pretrained.encoder.layer[1].output.dense.weight)
    random = lc.new_student(pretrained, 2, "random")
    assert not torch.equal(random.encoder.embeddings.word_embeddings.weight, pretrained.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="init = 'top' is not allowed"):
        lc.new_student(pretrained, 2, "top")
    with pytest.raises(ValueError, match="student layers = 5 is not allowed"):
        lc.new_student(pretrained, 5)


def test_alp_attention_map_rows_sum_to_one_and_other_terms_are_refused():
    pretrained, task = encoder(), toy_task()
    teacher = SentenceClassifier(encoder()).eval()
    d = layerdistil.LayerDistiller(teacher, lc.new_student(pretrained, 2), "alp", layer_map("alp", 2, 4))
    weights = lc.alp_attention_map(d, task.dev, batch_size=8)
    assert weights.shape == (2, 4) and np.allclose(weights.sum(1), 1.0, atol=1e-6)
    pkd = layerdistil.LayerDistiller(teacher, lc.new_student(pretrained, 2), "pkd", layer_map("pkd-skip", 2, 4))
    with pytest.raises(ValueError, match="only ALP-KD"):
        lc.alp_attention_map(pkd, task.dev)


def test_saved_activation_bytes_counts_what_backward_keeps():
    x = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(32, 16, requires_grad=True)
    assert lc.saved_activation_bytes(lambda: (x @ w).sum()) == x.numel() * 4 + w.numel() * 4  # matmul keeps both
    with torch.no_grad():
        assert lc.saved_activation_bytes(lambda: (x @ w).sum()) == 0


def test_step_costs_measure_every_method_side_by_side():
    pretrained, task = encoder(), toy_task()
    teacher = SentenceClassifier(encoder()).eval()
    rows = lc.step_costs(teacher, pretrained, task, 2, ["no KD", "TinyBERT", "ALP-KD"], lc.Setting(batch_size=8),
                         steps=1, rounds=1)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"no KD", "TinyBERT", "ALP-KD"} and all(r["ms_per_step"] > 0 for r in rows)
    # TinyBERT's attention scores are extra tensors autograd keeps; the teacher keeps nothing (no grad)
    assert by["TinyBERT"]["saved_activations_mib"] > by["no KD"]["saved_activations_mib"] > 0
    assert not any(p.requires_grad for p in teacher.parameters())


def test_paper_tables_cover_the_reported_tasks():
    for m, table in lc.PAPER.items():
        assert {"teacher", "no KD", "KD", "PKD-Skip", "ALP-KD"} <= set(table)
        assert all(set(row) == set(lc.REPORTED) for row in table.values())
    assert lc.PAPER_AVERAGE[4]["ALP-KD"] == 77.01 and lc.PAPER_AVERAGE[2]["ALP-KD"] == 67.08


def test_saved_activation_bytes_leaves_no_graph_behind():
    """A pack hook that returned the saved tensor itself would tie an output (tanh saves its result) to its own
    graph node: a cycle through autograd's C++ side that gc cannot free (lesson 07 once kept 0.8 GB that way)."""
    import gc
    import weakref

    w = torch.randn(64, 64, requires_grad=True)
    refs = []

    def forward():
        h = torch.tanh(torch.randn(32, 64) @ w)
        refs.append(weakref.ref(h))
        return h.sum()

    assert lc.saved_activation_bytes(forward) > 0
    gc.collect()
    assert refs[0]() is None
