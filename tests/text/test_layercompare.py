"""Lesson 07's comparison machinery on tiny BERT classifiers: the teacher cache, one run's record, the grid,
ALP-KD's attention map, the activation count and the side-by-side step costs."""
from types import SimpleNamespace

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


def test_the_training_loop_hands_the_cache_a_key_made_on_the_host(monkeypatch):
    """A key made from device tensors waits for the GPU every step; the loop makes it from the host batch, and it is
    the key the cache would make itself."""
    pretrained, task = encoder(), toy_task()
    teacher, _ = teacher_of(pretrained, task)
    keys, outputs = [], layerdistil.TeacherBatchCache.outputs

    def spy(self, teacher, input_ids, attention_mask, key=None):
        keys.append((key, layerdistil.TeacherBatchCache.key(input_ids, attention_mask)))
        return outputs(self, teacher, input_ids, attention_mask, key)

    monkeypatch.setattr(layerdistil.TeacherBatchCache, "outputs", spy)
    cache = layerdistil.TeacherBatchCache()
    lc.train_and_score(teacher, pretrained, task, 2, "PKD-Skip", 1, lc.Setting(epochs=1, batch_size=8, lr=1e-3),
                       cache=cache)
    assert len(keys) == 4 and all(given is not None and given == made for given, made in keys)


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


def test_grid_in_processes_equals_it_here_and_hands_back_alp_attention():
    pretrained, task = encoder(), toy_task()
    teacher, _ = teacher_of(pretrained, task)
    setting = lc.Setting(epochs=1, batch_size=8, lr=1e-3)
    grid = dict(sizes=[2], methods=["KD", "ALP-KD"], seeds=[0, 1], setting=setting, progress=False,
                cache_bytes=1 << 24, attention_seeds=[0])
    here_maps, there_maps = {}, {}
    here = lc.compare_methods(teacher, pretrained, task, attention=here_maps, **grid)
    there = lc.compare_methods(teacher, pretrained, task, attention=there_maps, workers=2,
                               threads=torch.get_num_threads(), **grid)
    drop = ("seconds", "peak_mib")
    assert [{k: v for k, v in r.items() if k not in drop} for r in here] == \
        [{k: v for k, v in r.items() if k not in drop} for r in there]
    assert list(here_maps) == list(there_maps) == [("sst2", 2, "ALP-KD", 0)]
    weights = here_maps["sst2", 2, "ALP-KD", 0]
    assert weights.shape == (2, 4) and np.allclose(weights.sum(1), 1.0)
    assert np.array_equal(weights, there_maps["sst2", 2, "ALP-KD", 0])
    with pytest.raises(ValueError, match="keep is called with each trained student"):
        lc.compare_methods(teacher, pretrained, task, workers=2, keep=lambda *a: None, **grid)


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


def test_scaled_alp_kd_trains_with_its_own_term_and_draws_its_map():
    pretrained, task = encoder(), toy_task()
    teacher, _ = teacher_of(pretrained, task)
    setting = lc.Setting(epochs=1, batch_size=8, lr=1e-3)
    record, _, distiller = lc.train_and_score(teacher, pretrained, task, 2, "ALP-KD (scaled)", 0, setting)
    assert distiller.term == "alp-scaled" and record["method"] == "ALP-KD (scaled)" and record["steps"] == 4
    weights = lc.alp_attention_map(distiller, task.dev, batch_size=8)
    assert weights.shape == (2, 4) and np.allclose(weights.sum(1), 1.0, atol=1e-6)
    # the distiller's term is ALP's on the same states, with the dot products divided by sqrt(width)
    from kdtutorial.text import intermediate
    from kdtutorial.text.tokens import padded_batches

    _, batch = next(padded_batches(task.dev, 8))
    distiller.eval()
    with torch.no_grad():
        distiller(batch["input_ids"], batch["attention_mask"])
        _, s_states = distiller.student.logits_and_states(batch["input_ids"], batch["attention_mask"], hidden_states=True)
        _, t_states = teacher.logits_and_states(batch["input_ids"], batch["attention_mask"], hidden_states=True)
    expected, _ = intermediate.alp_loss([s_states[j][:, 0] for j in (1, 2)], [t[:, 0] for t in t_states[1:]], scale=True)
    assert torch.allclose(distiller.layer_loss, expected, atol=1e-6)


def test_beta_search_reuses_known_runs_trains_the_rest_and_chooses_on_held_out_data(monkeypatch):
    pretrained, task = encoder(), toy_task()
    teacher, _ = teacher_of(pretrained, task)
    setting = lc.Setting(epochs=2, batch_size=8, lr=1e-3, betas={"pkd": 10.0})
    known = lc.compare_methods(teacher, pretrained, task, [2], ["PKD-Skip"], [0, 1], setting, progress=False)
    trained = []
    original = lc.compare_methods

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        trained.extend((r["seed"], args[6].betas["pkd"]) for r in out)
        return out

    monkeypatch.setattr(lc, "compare_methods", counting)
    search = lc.beta_search(teacher, pretrained, task, 2, "PKD-Skip", [10, 1000], [0, 1], setting, known=known,
                            progress=False)
    monkeypatch.undo()
    assert sorted(trained) == [(0, 1000.0), (1, 1000.0)]  # beta = 10 was known: not trained again
    assert [(r["beta"], r["seed"]) for r in search] == [(10.0, 0), (10.0, 1), (1000.0, 0), (1000.0, 1)]
    assert [r["dev"] for r in search[:2]] == [r["dev"] for r in known]
    again = lc.beta_search(teacher, pretrained, task, 2, "PKD-Skip", [1000], [0], setting, progress=False)
    assert again[0]["dev"] == search[2]["dev"] and again[0]["selection"] == search[2]["selection"]  # same seed, same run
    with pytest.raises(ValueError, match="method = 'KD' is not allowed: expected a method with a layer term"):
        lc.beta_search(teacher, pretrained, task, 2, "KD", [1], [0], setting)


def test_chosen_beta_looks_at_the_held_out_score_only_and_breaks_ties_low():
    rows = [{"beta": 10.0, "selection": 80.0, "dev": 50.0}, {"beta": 10.0, "selection": 82.0, "dev": 50.0},
            {"beta": 100.0, "selection": 79.0, "dev": 99.0}, {"beta": 100.0, "selection": 81.0, "dev": 99.0},
            {"beta": 1.0, "selection": 81.0, "dev": 10.0}]
    assert lc.chosen_beta(rows) == 1.0  # means 81 / 80 / 81: a tie between 1 and 10 goes to the smaller; dev ignored
    assert lc.chosen_beta(rows[:4]) == 10.0


def test_the_teacher_cache_takes_a_quarter_of_a_gpu_at_most_40_gib_and_256_mib_on_a_cpu(monkeypatch):
    assert lc.teacher_cache_budget("cpu") == 256 << 20
    for total, expected in [(80 << 30, 20 << 30), (141 << 30, (141 << 30) // 4), (200 << 30, 40 << 30)]:
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, t=total: SimpleNamespace(total_memory=t))
        assert lc.teacher_cache_budget("cuda:0") == expected
