"""The cross-encoder teacher of lesson 06: pair layout and truncation, segment ids, fast scoring equal to the plain
baseline, fine-tuning on a toy separable task. Tiny random BERT (width 32) with the packaged MiniLM tokenizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from _support import ADS, QUERIES, tiny_bert
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.text import tokens
from kdtutorial.common.environment import seed_everything
from kdtutorial.ranking.qadsm import ad_text



pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixtures (and tok) in conftest.py




def pieces(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------------------ text
def test_ad_text_joins_title_and_description():
    assert ad_text("Cheap flights", "Book now") == "Cheap flights Book now"
    assert ad_text(" Hotels ", "") == "Hotels"
    assert ad_text(["a", "b"], ["x", ""]) == ["a x", "b"]
    assert ce.ads_of({"title": ["t1", "t2"], "description": ["d1", "d2"]}) == ["t1 d1", "t2 d2"]
    with pytest.raises(ValueError):
        ad_text(["a"], ["x", "y"])
    with pytest.raises(TypeError):
        ad_text("a", ["x"])


def test_pair_layout_is_cls_query_sep_ad_sep(tok):
    text = ce.tokenize_pairs(tok, QUERIES, ADS, max_length=512)
    assert isinstance(text, tokens.TokenizedText) and len(text) == len(QUERIES)
    for q, ad, ids in zip(QUERIES, ADS, text.ids):
        assert ids == [tok.cls_token_id, *pieces(tok, q), tok.sep_token_id, *pieces(tok, ad), tok.sep_token_id]


def test_truncation_to_max_length(tok):
    text = ce.tokenize_pairs(tok, QUERIES, ADS, max_length=12)
    assert text.lengths().max() == 12 and text.lengths()[4] == len(pieces(tok, "hotel hotels")) + 3  # short: as is
    # longest_first cuts the (longer) ad and keeps the two-word query whole
    assert text.ids[0][:4] == [tok.cls_token_id, *pieces(tok, QUERIES[0]), tok.sep_token_id]
    assert text.ids[0][4:-1] == pieces(tok, ADS[0])[:7] and text.ids[0][-1] == tok.sep_token_id
    only_second = ce.tokenize_pairs(tok, QUERIES, ADS, max_length=12, truncation="only_second")
    q = pieces(tok, QUERIES[3])
    assert only_second.ids[3][1 : len(q) + 2] == [*q, tok.sep_token_id] and len(only_second.ids[3]) == 12
    with pytest.raises(ValueError, match="only_second"):
        ce.tokenize_pairs(tok, ["a b c d e f g h i j"], ["ad"], max_length=8, truncation="only_second")
    with pytest.raises(ValueError):
        ce.tokenize_pairs(tok, QUERIES, ADS, max_length=12, truncation="only_first")
    with pytest.raises(ValueError):
        ce.tokenize_pairs(tok, QUERIES, ADS[:2], max_length=12)


def test_literal_sep_in_the_text_is_not_a_separator(tok):
    text = ce.tokenize_pairs(tok, ["flights [SEP] paris"], ["ad"], max_length=32)
    assert text.ids[0].count(tok.sep_token_id) == 2


def test_token_type_ids_match_the_tokenizer(tok):
    text = ce.tokenize_pairs(tok, QUERIES, ADS, max_length=20)
    batch = tokens.pad_rows(text, range(len(text)))
    reference = tok(QUERIES, ADS, truncation="longest_first", max_length=20, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    for sep_id in (None, tok.sep_token_id):
        type_ids = ce.pair_token_type_ids(batch["input_ids"], batch["attention_mask"], sep_id)
        assert torch.equal(type_ids, reference["token_type_ids"])


# ----------------------------------------------------------------------------------------------- model
def test_cross_encoder_logits_and_segment_ids(tok):
    seed_everything(0)
    text = ce.tokenize_pairs(tok, QUERIES, ADS, max_length=20)
    batch = tokens.pad_rows(text, range(len(text)))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for pooling in ("cls", "mean"):
        model = ce.CrossEncoder(tiny_bert(len(tok)), pooling=pooling).eval()
        with torch.no_grad():
            logits = model(ids, mask)
            explicit = model(ids, mask, ce.pair_token_type_ids(ids, mask, tok.sep_token_id))
            all_zero = model(ids, mask, torch.zeros_like(ids))
        assert logits.shape == (len(QUERIES),) and logits.dtype == torch.float32
        assert torch.equal(logits, explicit)
        assert not torch.allclose(logits, all_zero)  # the segment ids reach the encoder
    with pytest.raises(ValueError):
        ce.CrossEncoder(tiny_bert(len(tok)), pooling="max")


def test_longest_first_is_the_tokenizers_rule(tok):
    """Against the tokenizer itself on random lengths, both sides non-empty, every budget from 2 to 37."""
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    for _ in range(400):
        la, lb, max_length = int(rng.integers(1, 40)), int(rng.integers(1, 40)), int(rng.integers(5, 40))
        a, b = " ".join(rng.choice(words, la)), " ".join(rng.choice(words, lb))
        ids = tok(a, b, truncation="longest_first", max_length=max_length)["input_ids"]
        sep = ids.index(tok.sep_token_id)
        keep_a, keep_b = ce.longest_first([len(pieces(tok, a))], [len(pieces(tok, b))], max_length - 3)
        assert (int(keep_a[0]), int(keep_b[0])) == (sep - 1, len(ids) - sep - 2)


def test_pair_matrix_equals_tokenize_pairs(tok):
    rng = np.random.default_rng(1)
    queries = [QUERIES[i] for i in rng.integers(0, 5, 60)] + ["flights [SEP] paris", "x " * 40]
    ads = [ADS[i] for i in rng.integers(0, 5, 60)] + ["ad [CLS]", "y " * 40]
    for max_length in (5, 12, 24, 64):
        slow = ce.tokenize_pairs(tok, queries, ads, max_length=max_length)
        fast = ce.pair_matrix(tok, queries, ads, max_length=max_length, chunk=7)
        assert fast.ids.dtype == np.int32 and len(fast) == len(slow)
        np.testing.assert_array_equal(fast.lengths(), slow.lengths())
        assert fast.ids.shape[1] == slow.lengths().max()
        for row, ids in enumerate(slow.ids):
            assert fast.ids[row, : len(ids)].tolist() == ids
            assert (fast.ids[row, len(ids):] == tok.pad_token_id).all()
        assert ce.PairMatrix.from_text(slow).ids.tolist() == fast.ids.tolist()
    assert len(fast.subset([3, 1])) == 2 and fast.subset([3, 1]).ids[0].tolist() == fast.ids[3].tolist()
    with pytest.raises(ValueError):
        ce.pair_matrix(tok, queries, ads, max_length=4)


def test_pair_index_round_trips():
    queries = ["a", "b", "a", "c", "b"]
    ads = ["x", "x", "y", "z", "y"]
    distinct_q, distinct_a, qi, ai = ce.pair_index(queries, ads)
    assert distinct_q == ["a", "b", "c"] and distinct_a == ["x", "y", "z"]
    assert [distinct_q[i] for i in qi] == queries and [distinct_a[i] for i in ai] == ads
    with pytest.raises(ValueError):
        ce.pair_index(queries, ads[:2])


def test_score_pairs_keeps_the_order_and_equals_the_padded_fp32_baseline(tok):
    rng = np.random.default_rng(0)
    queries = [QUERIES[i] for i in rng.integers(0, 5, 37)]
    ads = [" ".join(ADS[i].split()[: rng.integers(1, 15)]) for i in rng.integers(0, 5, 37)]
    text = ce.tokenize_pairs(tok, queries, ads, max_length=24)
    model = ce.CrossEncoder(tiny_bert(len(tok))).train()
    fast, stats = ce.score_pairs(model, text, batch_size=8, warmup=True)
    assert model.training  # mode restored
    from_matrix, _ = ce.score_pairs(model, ce.pair_matrix(tok, queries, ads, max_length=24), batch_size=8)
    np.testing.assert_array_equal(fast, from_matrix)
    plain, plain_stats = ce.score_pairs_padded(model, text, max_length=24, batch_size=8)
    assert fast.dtype == plain.dtype == np.float32 and fast.shape == (37,)
    np.testing.assert_allclose(fast, plain, atol=1e-5, rtol=0)
    model.eval()
    with torch.no_grad():  # one pair at a time, no padding at all: the original order
        one_by_one = [model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).item() for ids in text.ids]
    np.testing.assert_allclose(fast, one_by_one, atol=1e-5, rtol=0)
    for s in (stats, plain_stats):
        assert set(s) >= {"pairs", "seconds", "pairs_per_s"} and s["pairs"] == 37
        assert s["seconds"] > 0 and s["pairs_per_s"] > 0 and s["batches"] == 5
    assert 0 <= stats["padding"] < plain_stats["padding"] < 1  # bucketing computes less padding
    with pytest.raises(ValueError):
        ce.score_pairs_padded(model, text, max_length=10, batch_size=8)


def test_fine_tuning_learns_a_separable_task(tok):
    """Good when the ad mentions red, Bad when it mentions blue: the loss falls and the pairs are separated."""
    rng = np.random.default_rng(1)
    words = ["shoes", "cars", "pizza", "hotel", "flights", "phone", "watch", "bike"]
    labels = rng.integers(0, 2, 64)
    queries = [" ".join(rng.choice(words, 2)) for _ in labels]
    ads = [f"{rng.choice(words)} {'red' if y else 'blue'} {rng.choice(words)}" for y in labels]
    text = ce.tokenize_pairs(tok, queries, ads, max_length=16)
    seed_everything(0)
    model = ce.CrossEncoder(tiny_bert(len(tok)))
    losses = ce.fine_tune_cross_encoder(model, text, labels, epochs=12, lr=3e-3, batch_size=16, seed=0,
                                        device="cpu", amp=False, progress=False)
    assert len(losses) == 48 and not model.training
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    logits, _ = ce.score_pairs(model, text, batch_size=32)
    assert ((logits > 0) == (labels == 1)).mean() >= 0.95
    short = ce.fine_tune_cross_encoder(model, text, labels, epochs=5, lr=1e-4, batch_size=16, max_steps=3,
                                       progress=False)
    assert len(short) == 3
    with pytest.raises(ValueError):
        ce.fine_tune_cross_encoder(model, text, labels[:10], epochs=1, progress=False)


def test_no_mask_means_no_padding(tok):
    text = ce.tokenize_pairs(tok, QUERIES[:1] * 3, ADS[:1] * 3, max_length=24)
    ids = torch.tensor(text.ids)
    model = ce.CrossEncoder(tiny_bert(len(tok)), pooling="mean").eval()
    with torch.no_grad():
        assert torch.allclose(model(ids, None), model(ids, torch.ones_like(ids)), atol=1e-6)


# ------------------------------------------------------------------------------- last layer at [CLS] only
def test_cls_scorer_equals_the_full_forward(tok):
    """ClsScorer runs the last layer for [CLS] alone; in eval mode (fp32) its logits are the cross-encoder's,
    with padding (masked attention) and without (no mask), with derived and with explicit segment ids."""
    text = ce.tokenize_pairs(tok, QUERIES, ADS, max_length=20)
    batch = tokens.pad_rows(text, range(len(text)))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert not bool(mask.all())  # the batch has padding
    seed_everything(0)
    model = ce.CrossEncoder(tiny_bert(len(tok)), sep_id=tok.sep_token_id).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = ce.ClsScorer(model)
    assert model.training and not fast.training  # the model keeps its mode; the scorer is for inference
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(ids, mask), model(ids, mask), atol=1e-6, rtol=0)
        segments = ce.pair_token_type_ids(ids, mask, tok.sep_token_id)
        torch.testing.assert_close(fast(ids, mask, segments), model(ids, mask, segments), atol=1e-6, rtol=0)
        one = torch.tensor([text.ids[0]])  # a single pair: no padding, no mask
        torch.testing.assert_close(fast(one), model(one), atol=1e-6, rtol=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # copies, the model untouched
    assert len(fast.encoder.encoder.layer) == 1 and fast.encoder.config.num_hidden_layers == 1  # plus the last


def test_score_pairs_cls_only_equals_score_pairs(tok):
    rng = np.random.default_rng(1)
    queries = [QUERIES[i] for i in rng.integers(0, 5, 29)]
    ads = [" ".join(ADS[i].split()[: rng.integers(1, 15)]) for i in rng.integers(0, 5, 29)]
    pairs = ce.pair_matrix(tok, queries, ads, max_length=24)
    model = ce.CrossEncoder(tiny_bert(len(tok)))
    full, _ = ce.score_pairs(model, pairs, batch_size=8, warmup=True)
    fast, stats = ce.score_pairs(model, pairs, batch_size=8, warmup=True, cls_only=True)
    np.testing.assert_allclose(fast, full, atol=1e-5, rtol=0)
    assert stats["pairs"] == 29 and model.training  # the model passed in is not changed, its mode kept
    with pytest.raises(ValueError, match="pooling='cls'"):
        ce.score_pairs(ce.CrossEncoder(tiny_bert(len(tok)), pooling="mean"), pairs, cls_only=True)


def test_cls_scorer_needs_two_layers(tok):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37)
    with pytest.raises(ValueError, match="at least 2 layers"):
        ce.ClsScorer(ce.CrossEncoder(BertModel(config, add_pooling_layer=False)))


def test_warmup_covers_every_shape_with_and_without_padding(tok):
    """The untimed warm-up runs one batch of each (rows, width, padded?) kind the timed loop will meet: a padded
    batch takes the masked attention kernels, an unpadded one the unmasked."""
    rng = np.random.default_rng(2)
    queries = [QUERIES[i] for i in rng.integers(0, 5, 40)]
    ads = [" ".join(ADS[i].split()[: rng.integers(1, 15)]) for i in rng.integers(0, 5, 40)]
    pairs = ce.pair_matrix(tok, queries, ads, max_length=24)
    model = ce.CrossEncoder(tiny_bert(len(tok)))
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append((tuple(args[0].shape), args[1] is None)))
    _, stats = ce.score_pairs(model, pairs, batch_size=4, warmup=True)
    warm, timed = calls[: len(calls) - stats["batches"]], calls[len(calls) - stats["batches"]:]
    assert set(timed) == set(warm) and len(warm) == len(set(warm))
    assert {no_mask for _, no_mask in timed} == {True, False}  # both kinds occur in this data
