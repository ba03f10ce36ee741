"""Lesson 06's lean teacher scorer: LeanCrossEncoder gives the cross-encoder's logits (float32, padded or not, both
attention forms, with and without segment ids), exact-length batching covers every pair once with no padding, and
``score_pairs(lean=True, exact_lengths=True)`` equals the default path and the padded baseline. Tiny random BERTs
(width 32) with the packaged MiniLM tokenizer, offline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _support import ADS, QUERIES, tiny_bert
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.ranking import leanscorer as ls
from kdtutorial.text import tokens


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixtures (and tok) in conftest.py


def bert(vocab_size: int, *, seed: int = 0, **config):
    """A random BERT encoder like ``tiny_bert`` (2 layers, width 32) with config overrides (seeded)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    kw = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    return BertModel(BertConfig(**{**kw, **config}), add_pooling_layer=False)


def cross_encoder(tok, *, token_types: bool = True, **kw) -> ce.CrossEncoder:
    """A ``pooling="cls"`` cross-encoder in eval mode; ``token_types=False``: a single-type encoder
    (``type_vocab_size=1``), which gets no segment ids. Weights drawn ten times wider than BERT's init (0.2, not
    0.02) so that the logits differ from pair to pair and a wrong term shows well above the tolerance; the head bias
    is non-zero so it is checked too."""
    encoder = bert(len(tok), type_vocab_size=2 if token_types else 1, initializer_range=0.2)
    model = ce.CrossEncoder(encoder, **kw)
    with torch.no_grad():
        model.head.bias.fill_(0.25)
    assert model.uses_token_types == token_types
    return model.eval()


def padded_batch(tok, max_length: int = 20):
    batch = tokens.pad_rows(ce.tokenize_pairs(tok, QUERIES, ADS, max_length=max_length), range(len(QUERIES)))
    return batch["input_ids"], batch["attention_mask"]


def unpadded_batch(tok, rows: int = 6, length: int = 13, seed: int = 0):
    """Pairs of one length, ``[CLS] q [SEP] ad [SEP]`` with the first [SEP] at different places: no padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, len(tok), (rows, length), generator=g)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    ids[torch.arange(rows), torch.arange(rows) % (length - 3) + 1] = tok.sep_token_id
    return ids


def scoring_texts(n: int, seed: int):
    """``n`` (query, ad) pairs of many lengths, drawn as ``test_crossencoder`` draws them."""
    rng = np.random.default_rng(seed)
    queries = [QUERIES[i] for i in rng.integers(0, 5, n)]
    ads = [" ".join(ADS[i].split()[: rng.integers(1, 15)]) for i in rng.integers(0, 5, n)]
    return queries, ads


def pairs_for_scoring(tok, n: int = 37, seed: int = 0):
    """A PairMatrix of ``n`` pairs of many lengths, at most 24 tokens."""
    return ce.pair_matrix(tok, *scoring_texts(n, seed), max_length=24)


# ---------------------------------------------------------------------------------------- the lean model
@pytest.mark.parametrize("token_types", [True, False], ids=["segments", "single-type"])
@pytest.mark.parametrize("attention", ls.ATTENTIONS)
def test_lean_equals_the_cross_encoder_without_padding(tok, attention, token_types):
    """Unpadded rows and no mask (what exact-length batches are): the float32 logits are the cross-encoder's, also
    with an all-ones mask, with explicit segment ids, and for a single pair."""
    model = cross_encoder(tok, token_types=token_types)
    lean = ls.LeanCrossEncoder(model, attention=attention)
    ids = unpadded_batch(tok)
    with torch.no_grad():
        reference = model(ids)
        torch.testing.assert_close(lean(ids), reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(lean(ids, torch.ones_like(ids)), reference, atol=1e-5, rtol=0)
        segments = ce.pair_token_type_ids(ids, torch.ones_like(ids), tok.sep_token_id)
        torch.testing.assert_close(lean(ids, None, segments), model(ids, None, segments), atol=1e-5, rtol=0)
        torch.testing.assert_close(lean(ids[:1]), model(ids[:1]), atol=1e-5, rtol=0)
    assert reference.std() > 0.05  # the rows differ: a constant output would not pin anything


@pytest.mark.parametrize("token_types", [True, False], ids=["segments", "single-type"])
@pytest.mark.parametrize("attention", ls.ATTENTIONS)
def test_lean_equals_the_cross_encoder_with_padding(tok, attention, token_types):
    """A padded batch with its attention mask (masked attention): the cross-encoder's logits, segment ids derived
    from the ids (with and without a pinned ``sep_id``) or given."""
    ids, mask = padded_batch(tok)
    assert not bool(mask.all())  # the batch has padding
    for sep_id in (None, tok.sep_token_id):
        model = cross_encoder(tok, token_types=token_types, sep_id=sep_id)
        lean = ls.LeanCrossEncoder(model, attention=attention)
        with torch.no_grad():
            torch.testing.assert_close(lean(ids, mask), model(ids, mask), atol=1e-5, rtol=0)
            segments = ce.pair_token_type_ids(ids, mask, tok.sep_token_id)
            torch.testing.assert_close(lean(ids, mask, segments), model(ids, mask, segments), atol=1e-5, rtol=0)


def test_lean_with_one_layer_and_more_heads(tok):
    """The first layer is also the last ([CLS] only), and a 4-head, 3-layer encoder: still the same logits."""
    ids, mask = padded_batch(tok)
    for config in (dict(num_hidden_layers=1), dict(num_hidden_layers=3, num_attention_heads=4)):
        model = ce.CrossEncoder(bert(len(tok), seed=3, **config)).eval()
        lean = ls.LeanCrossEncoder(model)
        assert len(lean.layers) == config["num_hidden_layers"]
        with torch.no_grad():
            torch.testing.assert_close(lean(ids, mask), model(ids, mask), atol=1e-5, rtol=0)


def test_lean_copies_the_weights_and_leaves_the_model_unchanged(tok):
    model = cross_encoder(tok).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lean = ls.LeanCrossEncoder(model)
    assert model.training and not lean.training  # the model keeps its mode; the lean copy is for inference
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(not p.requires_grad for p in lean.parameters()) and all(p.requires_grad for p in model.parameters())
    assert {p.dtype for p in lean.parameters()} == {torch.float32}
    ids = unpadded_batch(tok)
    out = lean(ids)  # no no_grad here: nothing in the lean copy asks for a gradient
    assert out.shape == (len(ids),) and out.dtype == torch.float32 and not out.requires_grad
    with torch.no_grad():  # copies, not views: changing the model afterwards does not change the lean scorer
        for p in model.parameters():
            p.add_(1.0)
        torch.testing.assert_close(lean(ids), out, atol=0, rtol=0)


def test_lean_bf16_weights(tok):
    """``dtype=torch.bfloat16``: bf16 parameters and logits, close to the float32 ones (bf16 rounding, not exact)."""
    model = cross_encoder(tok)
    lean = ls.LeanCrossEncoder(model, dtype=torch.bfloat16)
    assert {p.dtype for p in lean.parameters()} == {torch.bfloat16}
    ids, mask = padded_batch(tok)
    with torch.no_grad():
        out, reference = lean(ids, mask), model(ids, mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)


def test_gelu_epilogue_is_exact_gelu_off_cuda(tok):
    """On a CPU ``gelu_epilogue`` changes nothing (the fused epilogue is CUDA's, see the CUDA test below)."""
    model = cross_encoder(tok)
    ids, mask = padded_batch(tok)
    with torch.no_grad():
        torch.testing.assert_close(ls.LeanCrossEncoder(model, gelu_epilogue=True)(ids, mask), model(ids, mask),
                                   atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the cuBLASLt GELU epilogue runs on CUDA only")
def test_gelu_epilogue_on_cuda_is_the_tanh_approximation():
    """Documents a deliberate difference: BERT's ``hidden_act="gelu"`` is the exact (erf) GELU, cuBLASLt's epilogue
    is the tanh approximation (they differ by at most 4.8e-4 per activation). So with ``gelu_epilogue`` the float32
    logits are close to the cross-encoder's, not equal to them as without it. (No tokenizer: random pairs.)"""
    model = ce.CrossEncoder(bert(1000, initializer_range=0.2)).cuda().eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([20, 17, 12, 9, 5])
    ids = torch.randint(10, 1000, (len(lengths), 20), generator=g)
    mask = (torch.arange(20)[None, :] < lengths[:, None]).long()
    ids[:, 0], ids[torch.arange(len(lengths)), lengths - 1], ids[:, 2] = 1, 3, 3  # [CLS] q [SEP] ad [SEP]
    ids, mask = (ids * mask).cuda(), mask.cuda()
    fused, plain = (ls.LeanCrossEncoder(model, gelu_epilogue=e).cuda() for e in (True, False))
    w = fused.layers[0]
    a = torch.randn(64, w["w_1"].shape[1], device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32 products, whatever another test set
    try:
        with torch.no_grad():
            up = fused._up(a, w["w_1"], w["b_1"])
            linear = F.linear(a, w["w_1"], w["b_1"])
            torch.testing.assert_close(up, F.gelu(linear, approximate="tanh"), atol=1e-5, rtol=0)
            assert (up - F.gelu(linear)).abs().max() > 1e-5  # not the erf form
            reference = model(ids, mask)
            torch.testing.assert_close(plain(ids, mask), reference, atol=1e-5, rtol=0)
            torch.testing.assert_close(fused(ids, mask), reference, atol=2e-3, rtol=0)
            assert (fused(ids, mask) - reference).abs().max() > 1e-6  # and the difference reaches the logits
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


# ----------------------------------------------------------------------------------------- refusals
def test_lean_refuses_what_it_does_not_compute(tok):
    from transformers import RobertaConfig, RobertaModel

    with pytest.raises(ValueError, match="pooling='cls'"):
        ls.LeanCrossEncoder(ce.CrossEncoder(tiny_bert(len(tok)), pooling="mean"))
    with pytest.raises(ValueError, match="hidden_act='gelu' only.*'relu'"):
        ls.LeanCrossEncoder(ce.CrossEncoder(bert(len(tok), hidden_act="relu")))
    with pytest.raises(ValueError, match="hidden_act='gelu' only.*'gelu_new'"):
        ls.LeanCrossEncoder(ce.CrossEncoder(bert(len(tok), hidden_act="gelu_new")))
    with pytest.raises(ValueError, match="absolute position embeddings only.*'relative_key'"):
        ls.LeanCrossEncoder(ce.CrossEncoder(bert(len(tok), position_embedding_type="relative_key")))
    with pytest.raises(ValueError, match="attention must be one of"):
        ls.LeanCrossEncoder(ce.CrossEncoder(tiny_bert(len(tok))), attention="flash")
    # RoBERTa-style encoders number positions from padding_idx + 1: the lean embedding would silently differ
    roberta = RobertaModel(RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=37, type_vocab_size=1),
                           add_pooling_layer=False)
    with pytest.raises(ValueError, match="'roberta'"):
        ls.LeanCrossEncoder(ce.CrossEncoder(roberta))


@pytest.mark.parametrize("kwargs, message", [
    (dict(exact_lengths=True, sort_by_length=False), "exact_lengths needs sort_by_length"),
    (dict(lean=True, exact_lengths=True, sort_by_length=False), "exact_lengths needs sort_by_length"),
    (dict(gelu_epilogue=True), "lean=True only"),
    (dict(compile=True), "lean=True only"),
    (dict(gelu_epilogue=True, exact_lengths=True), "lean=True only"),
])
def test_score_pairs_refuses_combinations(tok, kwargs, message):
    pairs = pairs_for_scoring(tok, n=5)
    with pytest.raises(ValueError, match=message):
        ce.score_pairs(cross_encoder(tok), pairs, **kwargs)


def test_score_pairs_lean_refuses_a_mean_pooled_model(tok):
    with pytest.raises(ValueError, match="pooling='cls'"):
        ce.score_pairs(cross_encoder(tok, pooling="mean"), pairs_for_scoring(tok, n=5), lean=True)


# ------------------------------------------------------------------------------------ exact-length batches
def check_spans(lengths, batch_tokens):
    spans = ls.exact_length_spans(lengths, batch_tokens)
    position = 0
    for start, stop, length in spans:
        assert start == position and stop > start  # in order, no gap, no overlap, none empty
        assert set(lengths[start:stop].tolist()) == {length}  # one length a batch, the one it names
        assert stop - start <= max(1, batch_tokens // length)
        position = stop
    assert position == len(lengths)  # every row once
    values, counts = np.unique(lengths, return_counts=True)  # and no batch split further than it must be
    assert len(spans) == sum(-(-int(c) // max(1, batch_tokens // int(v))) for v, c in zip(values, counts))
    return spans


def test_exact_length_spans_cover_the_rows_in_batches_of_one_length():
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(1, 30, 500))
    for batch_tokens in (1, 7, 29, 30, 64, 1000, 10**9):
        spans = check_spans(lengths, batch_tokens)
        assert all(isinstance(v, int) for span in spans for v in span)
    assert len(check_spans(lengths, 10**9)) == len(np.unique(lengths))  # room for all: one batch per length
    assert len(check_spans(lengths, 1)) == len(lengths)  # fewer tokens than a pair: one pair a batch
    assert ls.exact_length_spans(np.array([3, 3, 3, 5, 5]), 6) == [(0, 2, 3), (2, 3, 3), (3, 4, 5), (4, 5, 5)]
    assert ls.exact_length_spans([4, 4], 8) == [(0, 2, 4)]  # a list works too
    assert ls.exact_length_spans(np.array([], dtype=np.int64), 64) == []


@pytest.mark.parametrize("lengths, batch_tokens, message", [
    (np.array([3, 5, 4]), 64, "must be sorted"),
    (np.array([3, 4]), 0, "batch_tokens must be positive"),
    (np.array([3, 4]), -8, "batch_tokens must be positive"),
    (np.array([[3, 4], [5, 6]]), 64, "one length per row"),
    (np.array([0, 3, 4]), 64, "at least one token"),
])
def test_exact_length_spans_errors(lengths, batch_tokens, message):
    with pytest.raises(ValueError, match=message):
        ls.exact_length_spans(lengths, batch_tokens)


# -------------------------------------------------------------------------------------------- score_pairs
def test_score_pairs_lean_exact_lengths_equals_the_default_and_the_padded_baseline(tok, monkeypatch):
    """Same scores, original order; no padding computed, one batch per span, and the lean model sees every batch
    without a mask and at one length."""
    pairs = pairs_for_scoring(tok)
    model = cross_encoder(tok).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    default, _ = ce.score_pairs(model, pairs, batch_size=8)
    padded, _ = ce.score_pairs_padded(model, pairs, max_length=24, batch_size=8)
    calls = []
    forward = ls.LeanCrossEncoder.forward

    def recording(self, input_ids, attention_mask=None, token_type_ids=None):
        calls.append((tuple(input_ids.shape), attention_mask is None))
        return forward(self, input_ids, attention_mask, token_type_ids)

    monkeypatch.setattr(ls.LeanCrossEncoder, "forward", recording)
    batch_tokens = 64
    lean, stats = ce.score_pairs(model, pairs, batch_size=8, lean=True, exact_lengths=True,
                                 batch_tokens=batch_tokens)
    assert lean.dtype == np.float32 and lean.shape == (len(pairs),)
    np.testing.assert_allclose(lean, default, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lean, padded, atol=1e-5, rtol=0)
    spans = ls.exact_length_spans(np.sort(pairs.n_tokens), batch_tokens)
    assert stats["padding"] == 0 and stats["batches"] == len(spans) == len(calls) and stats["pairs"] == len(pairs)
    assert calls == [((stop - start, length), True) for start, stop, length in spans]
    assert len(set(pairs.n_tokens.tolist())) > 3 and max(stop - start for start, stop, _ in spans) > 1
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    calls.clear()  # the default token budget, batch_size times the median length (12 here): the same scores
    again, stats = ce.score_pairs(model, pairs, batch_size=3, lean=True, exact_lengths=True)
    np.testing.assert_allclose(again, default, atol=1e-5, rtol=0)
    spans = ls.exact_length_spans(np.sort(pairs.n_tokens), 3 * int(np.median(pairs.n_tokens)))
    assert stats["padding"] == 0 and stats["batches"] == len(spans) == 18
    assert calls == [((stop - start, length), True) for start, stop, length in spans]


def test_score_pairs_lean_bucketed_equals_the_default(tok):
    """``lean=True`` without exact lengths: the default batches (padded to their longest pair, masked attention
    where padded) through the lean model, the default path's scores and batch count; a TokenizedText works too."""
    pairs = pairs_for_scoring(tok, n=29, seed=1)
    model = cross_encoder(tok)
    default, default_stats = ce.score_pairs(model, pairs, batch_size=8)
    lean, stats = ce.score_pairs(model, pairs, batch_size=8, lean=True, warmup=True)
    np.testing.assert_allclose(lean, default, atol=1e-5, rtol=0)
    assert stats["batches"] == default_stats["batches"] == 4 and stats["padding"] == default_stats["padding"] > 0
    text = ce.tokenize_pairs(tok, *scoring_texts(29, seed=1), max_length=24)
    from_text, _ = ce.score_pairs(model, text, batch_size=8, lean=True, exact_lengths=True)
    np.testing.assert_allclose(from_text, default, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- linear bound
def test_linear_bound_on_a_cpu(tok):
    lean = ls.LeanCrossEncoder(cross_encoder(tok))
    bound = ls.linear_bound(lean, 8, 4, device="cpu", repeats=2)
    assert set(bound) == {"length", "batch", "pairs_per_s", "tflops"}
    assert bound["length"] == 8 and bound["batch"] == 4 and bound["pairs_per_s"] > 0 and bound["tflops"] > 0
    weights = sum(w[k].numel() for w in lean.layers for k in ("w_qkv", "w_o", "w_1", "w_2"))
    # tflops / pairs_per_s is the work of one pair: two flops per multiply-add of every weight at every token
    assert bound["tflops"] * 1e12 / bound["pairs_per_s"] == pytest.approx(2 * 8 * weights, rel=1e-9)


def test_score_pairs_lean_with_no_pairs_returns_no_scores(tok):
    model = ce.CrossEncoder(tiny_bert(tok.vocab_size), pooling="cls").eval()
    empty = ce.pair_matrix(tok, QUERIES, ADS, 32).subset(np.arange(0))
    scores, stats = ce.score_pairs(model, empty, lean=True, exact_lengths=True, compile=True)
    assert scores.shape == (0,) and stats["pairs"] == 0 and stats["batches"] == 0
