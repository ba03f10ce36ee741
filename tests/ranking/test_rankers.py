"""Two-tower students of lesson 06: aligned sides and pair batches, distillation pulling the student to the teacher,
fine-tuning, direct scoring in the original order, cached-ad serving equal to direct scoring (TwinBERT and C-DSSM).
Tiny random BERT (width 32) with the packaged MiniLM tokenizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _support import tiny_bert
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.ranking import rankers
from kdtutorial.text import tokens
from kdtutorial.common.environment import seed_everything
from kdtutorial.ranking.twotower import CDSSM, TwinBERT, letter_trigram_batch
from kdtutorial.ranking.qadsm import ad_text

WORDS = ["shoes", "cars", "pizza", "hotel", "flights", "phone", "watch", "bike", "cheap", "used", "best", "near"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixtures (and tok) in conftest.py




def toy_pairs(n: int, seed: int):
    """Queries of 1-3 words, ads of 2-9 words; the 'teacher' says Good (+3) when the ad says red, Bad (-3) else."""
    rng = np.random.default_rng(seed)
    good = rng.integers(0, 2, n)
    queries = [" ".join(rng.choice(WORDS, rng.integers(1, 4))) for _ in range(n)]
    ads = [ad_text(" ".join(rng.choice(WORDS, rng.integers(1, 4))),
                      " ".join([*rng.choice(WORDS, rng.integers(0, 5)), "red" if y else "blue"])) for y in good]
    return queries, ads, good, np.where(good == 1, 3.0, -3.0).astype(np.float32)


def mse(a, b) -> float:
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


# -------------------------------------------------------------------------------------------- the sides
def test_tokenize_sides_aligned_and_truncated(tok):
    queries, ads, _, _ = toy_pairs(20, seed=0)
    q_text, ad_text = rankers.tokenize_sides(tok, queries, ads, max_query_len=4, max_ad_len=8)
    assert len(q_text) == len(ad_text) == 20
    assert q_text.lengths().max() <= 4 and ad_text.lengths().max() == 8
    for q, ids in zip(queries, q_text.ids):
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert ids[1:-1] == tok(q, add_special_tokens=False)["input_ids"][:2]
    with pytest.raises(ValueError):
        rankers.tokenize_sides(tok, queries, ads[:3], 4, 8)


def test_pair_batches_select_the_same_rows_on_both_sides(tok):
    queries, ads, _, _ = toy_pairs(23, seed=1)
    q_text, ad_text = rankers.tokenize_sides(tok, queries, ads, 8, 16)
    seen = []
    for rows, (q_ids, q_mask), (ad_ids, ad_mask) in rankers.pair_batches(q_text, ad_text, 5, shuffle=True, seed=3):
        assert torch.equal(q_ids, tokens.pad_rows(q_text, rows)["input_ids"])
        assert torch.equal(ad_ids, tokens.pad_rows(ad_text, rows)["input_ids"])
        assert q_mask.shape[1] == q_text.lengths()[rows].max() and ad_mask.shape[1] == ad_text.lengths()[rows].max()
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(23)) and seen != list(range(23))
    for rows, (q_ids, q_mask), (ad_ids, ad_mask) in rankers.pair_batches(q_text, ad_text, 5, widths=(8, 16)):
        assert q_ids.shape == q_mask.shape == (len(rows), 8) and ad_ids.shape == (len(rows), 16)
        plain = tokens.pad_rows(ad_text, rows)
        width = plain["input_ids"].shape[1]
        assert torch.equal(ad_ids[:, :width], plain["input_ids"]) and (ad_ids[:, width:] == tok.pad_token_id).all()
        assert torch.equal(ad_mask.sum(1), plain["attention_mask"].sum(1))
    with pytest.raises(ValueError):
        next(rankers.pair_batches(q_text, ad_text, 5, widths=(2, 16)))
    rows = np.concatenate([r for r, _, _ in rankers.pair_batches(q_text, ad_text, 5, sort_by_length=True)])
    assert np.all(np.diff(ad_text.lengths()[rows]) >= 0)
    q_tri, ad_tri = rankers.trigram_sides(CDSSM(n_buckets=512), queries, ads)
    for rows, (q_ids, q_mask), _ in rankers.pair_batches(q_tri, ad_tri, 7):
        reference = letter_trigram_batch([queries[i] for i in rows], 512)
        assert torch.equal(q_ids, reference[0]) and torch.equal(q_mask, reference[1])


# -------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind,temperature", [("mse", 1.0), ("bce", 2.0)])
def test_distillation_pulls_the_student_to_the_teacher(tok, kind, temperature):
    queries, ads, _, teacher = toy_pairs(64, seed=2)
    q_text, ad_text = rankers.tokenize_sides(tok, queries, ads, 8, 16)
    seed_everything(0)
    student = TwinBERT(tiny_bert(len(tok)), crossing="res")
    before = mse(rankers.score_two_tower(student, q_text, ad_text), teacher)
    losses = rankers.distil_two_tower(student, q_text, ad_text, teacher, kind=kind, temperature=temperature,
                                      epochs=10, lr=3e-3, batch_size=16, seed=0, device="cpu", amp=False,
                                      progress=False)
    after = mse(rankers.score_two_tower(student, q_text, ad_text), teacher)
    assert len(losses) == 40 and not student.training
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert after < 0.25 * before


def test_distillation_of_a_cdssm_through_the_trigram_adapter():
    queries, ads, _, teacher = toy_pairs(64, seed=3)
    seed_everything(0)
    student = CDSSM(n_buckets=2048, embed=16, conv=32, out=16)
    q_text, ad_text = rankers.trigram_sides(student, queries, ads)
    before = mse(rankers.score_two_tower(student, q_text, ad_text), teacher)
    losses = rankers.distil_two_tower(student, q_text, ad_text, teacher, epochs=10, lr=1e-2, batch_size=16,
                                      progress=False)
    after = mse(rankers.score_two_tower(student, q_text, ad_text), teacher)
    assert len(losses) == 40 and after < 0.25 * before


def test_fine_tuning_on_labels_and_on_labels_plus_teacher(tok):
    queries, ads, labels, teacher = toy_pairs(48, seed=4)
    q_text, ad_text = rankers.tokenize_sides(tok, queries, ads, 8, 16)
    for teacher_logits in (None, teacher):
        seed_everything(0)
        student = TwinBERT(tiny_bert(len(tok)), crossing="res")
        losses = rankers.fine_tune_two_tower(student, q_text, ad_text, labels, teacher_logits=teacher_logits,
                                             alpha=0.5, epochs=8, lr=3e-3, batch_size=16, seed=0, device="cpu",
                                             amp=False, progress=False)
        assert len(losses) == 24 and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
        logits = rankers.score_two_tower(student, q_text, ad_text)
        assert ((logits > 0) == (labels == 1)).mean() >= 0.9
    assert len(rankers.fine_tune_two_tower(student, q_text, ad_text, labels, max_steps=2, freeze_embeddings=True,
                                           progress=False)) == 2
    assert all(p.requires_grad for p in student.parameters())
    with pytest.raises(ValueError):  # temperature applies to kind="bce" only
        rankers.fine_tune_two_tower(student, q_text, ad_text, labels, teacher_logits=teacher, temperature=2.0,
                                    progress=False)
    with pytest.raises(ValueError):
        rankers.distil_two_tower(student, q_text, ad_text, teacher[:10], progress=False)


# --------------------------------------------------------------------------------------- scoring, serving
def test_score_two_tower_keeps_the_original_order(tok):
    queries, ads, _, _ = toy_pairs(19, seed=5)
    q_text, ad_text = rankers.tokenize_sides(tok, queries, ads, 8, 16)
    student = TwinBERT(tiny_bert(len(tok))).train()
    logits, stats = rankers.score_two_tower(student, q_text, ad_text, batch_size=4, return_stats=True)
    assert student.training and logits.dtype == np.float32 and logits.shape == (19,)
    student.eval()
    with torch.no_grad():
        one_by_one = [student(torch.tensor([q]), torch.ones(1, len(q), dtype=torch.long),
                              torch.tensor([a]), torch.ones(1, len(a), dtype=torch.long)).item()
                      for q, a in zip(q_text.ids, ad_text.ids)]
    np.testing.assert_allclose(logits, one_by_one, atol=1e-5, rtol=0)
    assert stats["pairs"] == 19 and stats["seconds"] > 0 and stats["pairs_per_s"] > 0


@pytest.mark.parametrize("crossing", ["cos", "res"])
def test_cached_ad_serving_equals_direct_scoring(tok, crossing):
    rng = np.random.default_rng(6)
    queries, ads, _, _ = toy_pairs(9, seed=6)
    distinct_q, distinct_a = queries[:5], ads  # 5 queries x 9 ads, 30 candidate pairs with repeats
    qi, ai = rng.integers(0, 5, 30), rng.integers(0, 9, 30)
    q_text, _ = rankers.tokenize_sides(tok, distinct_q, distinct_q, 8, 8)
    _, ad_text = rankers.tokenize_sides(tok, distinct_a, distinct_a, 8, 16)
    seed_everything(0)
    student = TwinBERT(tiny_bert(len(tok)), crossing=crossing).eval()
    served, stats = rankers.serve_with_cached_ads(student, q_text, ad_text, qi, ai, batch_size=4, score_chunk=7)
    direct = rankers.score_two_tower(student, q_text.subset(qi), ad_text.subset(ai), batch_size=4)
    assert served.dtype == np.float32 and served.shape == (30,)
    np.testing.assert_allclose(served, direct, atol=1e-5, rtol=0)
    assert (stats["pairs"], stats["queries"], stats["ads"]) == (30, 5, 9)
    for key in ("ad_seconds", "ads_per_s", "cache_mb", "query_seconds", "scoring_seconds", "online_seconds",
                "pairs_per_s"):
        assert stats[key] > 0, key
    assert stats["online_seconds"] == pytest.approx(stats["query_seconds"] + stats["scoring_seconds"])
    with pytest.raises(ValueError):
        rankers.serve_with_cached_ads(student, q_text, ad_text, qi, ai + 9)
    with pytest.raises(ValueError):
        rankers.serve_with_cached_ads(student, q_text, ad_text, qi, ai[:3])


def test_cached_ad_serving_of_a_cdssm():
    queries, ads, _, _ = toy_pairs(12, seed=7)
    distinct_q, distinct_a, qi, ai = rankers.pair_index(queries[:4] * 3, ads)
    student = CDSSM(n_buckets=512, embed=8, conv=16, out=8, shared=False).eval()
    q_text, _ = rankers.trigram_sides(student, distinct_q, distinct_q)
    _, ad_text = rankers.trigram_sides(student, distinct_a, distinct_a)
    served, _ = rankers.serve_with_cached_ads(student, q_text, ad_text, qi, ai)
    pairs_q, pairs_a = rankers.trigram_sides(student, queries[:4] * 3, ads)
    np.testing.assert_allclose(served, rankers.score_two_tower(student, pairs_q, pairs_a), atol=1e-5, rtol=0)


def test_training_throughput_measures_a_copy(tok):
    queries, ads, _, teacher = toy_pairs(16, seed=8)
    q_text, ad_text = rankers.tokenize_sides(tok, queries, ads, 8, 16)
    student = TwinBERT(tiny_bert(len(tok)), crossing="res")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    for widths in (None, (8, 16)):
        stats = rankers.training_throughput(student, q_text, ad_text, teacher, steps=3, batch_size=8, widths=widths,
                                            warmup_steps=1)
        assert stats["steps"] == 3 and stats["pairs"] == 24 and stats["seconds"] > 0 and stats["pairs_per_s"] > 0
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError):
        rankers.training_throughput(student, q_text, ad_text, teacher, steps=0)


def test_serving_latency_times_both_ways(tok):

    queries, ads, _, _ = toy_pairs(12, seed=9)
    pair_q, pair_a = queries[:3] * 4, ads
    distinct_q, distinct_a, qi, ai = rankers.pair_index(pair_q, pair_a)
    q_text, _ = rankers.tokenize_sides(tok, distinct_q, distinct_q, 8, 8)
    _, ad_text = rankers.tokenize_sides(tok, distinct_a, distinct_a, 16, 16)
    student = TwinBERT(tiny_bert(len(tok)), crossing="res").train()
    teacher = ce.CrossEncoder(tiny_bert(len(tok), seed=1))
    pairs = ce.pair_matrix(tok, pair_q, pair_a, 24)
    out = rankers.serving_latency(student, teacher, q_text, ad_text, pairs, qi, ai, n_queries=2, warmup=1)
    assert out["requests"] == 2 and out["mean_candidates"] == 4
    for key in ("two_tower_ms", "cross_encoder_ms"):
        assert 0 < out[key]["median"] <= out[key]["p95"]
    assert student.training and teacher.training  # modes restored
    with pytest.raises(ValueError):
        rankers.serving_latency(student, teacher, q_text, ad_text, pairs, qi[:5], ai, n_queries=2)


@pytest.mark.parametrize("crossing", ["cos", "res"])
def test_serve_grid_equals_direct_scoring(tok, crossing):
    queries, ads, _, _ = toy_pairs(6, seed=10)
    q_text, _ = rankers.tokenize_sides(tok, queries[:4], queries[:4], 8, 8)
    _, ad_text = rankers.tokenize_sides(tok, ads, ads, 16, 16)
    student = TwinBERT(tiny_bert(len(tok)), crossing=crossing).eval()
    grid, stats = rankers.serve_grid(student, q_text, ad_text, batch_size=3)
    qi, ai = np.repeat(np.arange(4), 6), np.tile(np.arange(6), 4)
    direct = rankers.score_two_tower(student, q_text.subset(qi), ad_text.subset(ai))
    np.testing.assert_allclose(grid.reshape(-1), direct, atol=1e-5, rtol=0)
    assert stats["pairs"] == 24 and stats["pairs_per_s"] > 0
    cdssm = CDSSM(n_buckets=64).eval()  # C-DSSM's cosine crossing has the grid too
    grid, _ = rankers.serve_grid(cdssm, *rankers.trigram_sides(cdssm, queries[:4], ads[:4]))
    np.testing.assert_allclose(np.diag(grid), rankers.score_two_tower(cdssm, *rankers.trigram_sides(cdssm, queries[:4], ads[:4])),
                               atol=1e-5, rtol=0)
    with pytest.raises(TypeError):
        rankers.serve_grid(torch.nn.Linear(2, 2), q_text, ad_text)


def test_sentence_vectors_are_unit_mean_pooled_and_leave_the_encoder_alone(tok):
    encoder = tiny_bert(len(tok)).train()
    texts = ["cheap flights", "used cars near me boston", "pizza"]
    vectors = rankers.sentence_vectors(encoder, tok, texts, 8, batch_size=2)
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert encoder.training and next(encoder.parameters()).device.type == "cpu"  # mode and device kept
    encoder.eval()
    with torch.no_grad():  # one text at a time, no padding: the plain mean over its tokens, normalised
        for text, vector in zip(texts, vectors):
            ids = torch.tensor([tok(text, truncation=True, max_length=8)["input_ids"]])
            mean = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].mean(0)
            np.testing.assert_allclose(vector, (mean / mean.norm()).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="max_length"):
        rankers.sentence_vectors(encoder, tok, texts, 2)


def test_trigram_text_batches_equal_hashing_each_batch():
    """The cached trigram table gives letter_trigram_batch's tensors for any rows, through index and subset."""
    queries = ["Kaffeemaschine", "kaffee maschine günstig", "", "a", "Schuhe Herren Größe 44"] * 3
    ads = ["Kaffeevollautomat - jetzt im Angebot", "x", "Schuhe für Herren und Damen online kaufen", "", "ab"] * 3
    q_text, ad_text = rankers.trigram_sides(CDSSM(n_buckets=97), queries, ads, max_words=3)
    assert len(q_text.texts) == 5 and len(q_text) == 15
    for rows in ([0], [2], [2, 3], [4, 1, 0, 7], list(range(15))):
        for text, raw in ((q_text, queries), (ad_text, ads)):
            want = letter_trigram_batch([raw[r] for r in rows], 97, 3)
            got = text.batch(rows)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    sub = q_text.subset([4, 2, 9])
    want = letter_trigram_batch([queries[4], queries[2], queries[9]], 97, 3)
    assert all(torch.equal(a, b) for a, b in zip(sub.batch([0, 1, 2]), want))
    np.testing.assert_array_equal(sub.lengths(), [3, 0, 3])
    qi = np.array([1, 1, 0]); ai = np.array([0, 1, 1])
    q2, a2 = rankers.trigram_sides(CDSSM(n_buckets=97), ["a b", "c"], ["d", "e f g"], query_ids=qi, ad_ids=ai)
    assert torch.equal(a2.batch([0, 1, 2])[0], letter_trigram_batch(["d", "e f g", "e f g"], 97)[0])
    with pytest.raises(ValueError, match="index"):
        rankers.TrigramText(["a"], index=[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_a_graphed_two_tower_trains_as_the_eager_loop(tok):
    """distil_two_tower and fine_tune_two_tower (KD + BCE, whose label check a capture must skip) with graphs=True:
    the eager loop's losses and scores, to float32 rounding (batches padded to one width instead of their longest
    row; no dropout, float32). Runs on a GPU only."""
    from transformers import BertConfig, BertModel

    queries, ads, labels, teacher = toy_pairs(52, seed=5)
    q_text, ad_text = rankers.tokenize_sides(tok, queries, ads, 8, 16)
    runs = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        student = TwinBERT(BertModel(config, add_pooling_layer=False), crossing="res")
        common = dict(lr=3e-3, batch_size=16, seed=0, device="cuda", amp=False, progress=False, graphs=graphs)
        losses = rankers.distil_two_tower(student, q_text, ad_text, teacher, epochs=3, **common)
        losses += rankers.fine_tune_two_tower(student, q_text, ad_text, labels, teacher_logits=teacher, epochs=3,
                                              **common)
        runs[graphs] = losses, rankers.score_two_tower(student, q_text, ad_text, device="cuda")
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(runs[True][1], runs[False][1], rtol=1e-3, atol=1e-4)
