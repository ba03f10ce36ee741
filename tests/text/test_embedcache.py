"""Lesson 09's embedding cache (``embedcache``): fingerprints, the sentence-transformers mean pooling, and a cache
that never serves vectors computed for another pool, model or max_length.

The encoder is a tiny random BERT (width 32, 2 layers) over the vocabulary of a tiny word-piece tokenizer built
in the test; the cache lives in ``tmp_path``. Nothing uses the network or the packaged MiniLM.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast

from _support import tiny_bert
from kdtutorial.text import embedcache
from kdtutorial.text.embedcache import StaleEmbeddingsError

WORDS = ("the a film movie was is good bad great awful plot actor acting story funny boring long short i "
         "loved hated it this that and but not very").split()
POOL = ["the film was good", "a very boring movie", "i loved it", "the plot is not funny but the acting is great",
        "this story was long", "awful", "that actor was very very bad and the movie was long"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def tiny_tokenizer():
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    assert len(tokenizer) == len(vocab) and tokenizer.unk_token_id not in tokenizer("The film")["input_ids"]
    return tokenizer


@pytest.fixture
def encoder(tiny_tokenizer):
    return tiny_bert(len(tiny_tokenizer), seed=0).eval()


def test_text_fingerprint_is_sha256_of_lines():
    expected = hashlib.sha256("".join(s + "\n" for s in POOL).encode("utf-8")).hexdigest()
    assert embedcache.text_fingerprint(POOL) == expected
    assert embedcache.text_fingerprint(iter(POOL)) == expected
    assert embedcache.text_fingerprint(["é"]) == hashlib.sha256("é\n".encode("utf-8")).hexdigest()
    changed = [*POOL[:-1], POOL[-1] + "!"]
    assert embedcache.text_fingerprint(changed) != expected
    assert embedcache.text_fingerprint(POOL[::-1]) != expected
    assert embedcache.text_fingerprint(["ab", "c"]) != embedcache.text_fingerprint(["a", "bc"])
    with pytest.raises(TypeError, match="not one string"):
        embedcache.text_fingerprint("the film")
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        embedcache.text_fingerprint(["ok", 3])


def test_model_fingerprint_sees_weights_dtype_and_keys(encoder):
    before = embedcache.model_fingerprint(encoder)
    assert embedcache.model_fingerprint(tiny_bert(encoder.config.vocab_size, seed=0)) == before  # same weights
    assert embedcache.model_fingerprint(tiny_bert(encoder.config.vocab_size, seed=1)) != before
    with torch.no_grad():
        encoder.encoder.layer[1].output.dense.weight[3, 5] += 1e-3
    changed = embedcache.model_fingerprint(encoder)
    assert changed != before
    assert embedcache.model_fingerprint(encoder.to(torch.bfloat16)) not in (before, changed)
    extra = tiny_bert(encoder.config.vocab_size, seed=0)
    extra.register_buffer("extra", torch.zeros(1))
    assert embedcache.model_fingerprint(extra) != before
    with pytest.raises(TypeError, match="state_dict"):
        embedcache.model_fingerprint({"weight": torch.zeros(2)})


def test_mean_pooling_is_the_sentence_transformers_recipe(encoder, tiny_tokenizer):
    sentences = ["the plot is not funny but the acting is great", "awful", "i loved it"]
    got = embedcache.mean_pooled_embeddings(encoder, tiny_tokenizer, sentences, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (3, 32)
    with torch.no_grad():  # by hand: one padded batch, masked mean, L2 normalisation
        batch = tiny_tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
        states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (states * mask).sum(1) / mask.sum(1)
        expected = (mean / mean.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    alone = embedcache.mean_pooled_embeddings(encoder, tiny_tokenizer, sentences[1:2])
    np.testing.assert_allclose(alone[0], got[1], atol=1e-5)  # the order is restored after sorting by length


def test_mean_pooling_truncates_and_restores_mode(encoder, tiny_tokenizer):
    long = " ".join(["very"] * 40)
    cut = embedcache.mean_pooled_embeddings(encoder, tiny_tokenizer, [long, "very " * 3], max_length=5)
    short = embedcache.mean_pooled_embeddings(encoder, tiny_tokenizer, ["very very very"], max_length=5)
    np.testing.assert_allclose(cut[0], short[0], atol=1e-5)  # [CLS] very very very [SEP] either way
    encoder.train()
    embedcache.mean_pooled_embeddings(encoder, tiny_tokenizer, POOL, progress=True)
    assert encoder.training
    assert embedcache.mean_pooled_embeddings(encoder, tiny_tokenizer, []).shape == (0, 32)
    with pytest.raises(ValueError, match="batch_size"):
        embedcache.mean_pooled_embeddings(encoder, tiny_tokenizer, POOL, batch_size=0)


def test_cache_misses_then_hits_with_equal_vectors(encoder, tiny_tokenizer, tmp_path):
    first = embedcache.cached_embeddings(POOL, encoder, tiny_tokenizer, cache=tmp_path, batch_size=3)
    assert not first.hit and first.path.is_file() and first.seconds >= 0
    assert first.path.parent == tmp_path / "embeddings"
    text_fp, model_fp = embedcache.text_fingerprint(POOL), embedcache.model_fingerprint(encoder)
    assert first.path.name == f"emb-{text_fp[:16]}-{model_fp[:16]}-L64.npy"
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["text_fingerprint"] == text_fp and meta["model_fingerprint"] == model_fp
    assert (meta["n"], meta["dim"], meta["max_length"], meta["amp"]) == (len(POOL), 32, 64, False)
    assert "version" in meta
    assert not list(first.path.parent.glob("*.tmp"))
    second = embedcache.cached_embeddings(POOL, encoder, tiny_tokenizer, cache=tmp_path)
    assert second.hit and second.path == first.path
    np.testing.assert_array_equal(second.vectors, first.vectors)
    direct = embedcache.mean_pooled_embeddings(encoder, tiny_tokenizer, POOL)
    np.testing.assert_allclose(first.vectors, direct, atol=1e-6)


def test_cache_refuses_another_pool_model_or_length(encoder, tiny_tokenizer, tmp_path):
    old = embedcache.cached_embeddings(POOL, encoder, tiny_tokenizer, cache=tmp_path)
    text_fp, model_fp = embedcache.text_fingerprint(POOL), embedcache.model_fingerprint(encoder)
    changed_pool = [*POOL[:2], POOL[2] + " very", *POOL[3:]]
    other_text = embedcache.text_fingerprint(changed_pool)
    with pytest.raises(StaleEmbeddingsError, match=rf"another pool \(fingerprint {text_fp[:12]}\.\.\. not "
                                                   rf"{other_text[:12]}\.\.\.\)") as caught:
        embedcache.load_embeddings(old.path, text_fingerprint=other_text, model_fingerprint=model_fp, max_length=64)
    assert str(old.path) in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with torch.no_grad():
        encoder.embeddings.word_embeddings.weight[7, 0] += 1e-4
    other_model = embedcache.model_fingerprint(encoder)
    with pytest.raises(StaleEmbeddingsError, match="another model"):
        embedcache.load_embeddings(old.path, text_fingerprint=text_fp, model_fingerprint=other_model, max_length=64)
    with pytest.raises(StaleEmbeddingsError, match=r"another max_length \(64 not 32\)"):
        embedcache.load_embeddings(old.path, text_fingerprint=text_fp, model_fingerprint=model_fp, max_length=32)
    # the cache itself misses for a changed pool or model: a new file, fresh vectors, the old file untouched
    new_pool = embedcache.cached_embeddings(changed_pool, encoder, tiny_tokenizer, cache=tmp_path)
    assert not new_pool.hit and new_pool.path != old.path and old.path.is_file()
    assert not np.allclose(new_pool.vectors[2], old.vectors[2], atol=1e-4)
    new_model = embedcache.cached_embeddings(POOL, encoder, tiny_tokenizer, cache=tmp_path)
    assert not new_model.hit and new_model.path not in (old.path, new_pool.path)


def test_sidecar_missing_or_disagreeing_is_stale(encoder, tiny_tokenizer, tmp_path):
    cached = embedcache.cached_embeddings(POOL, encoder, tiny_tokenizer, cache=tmp_path)
    keys = dict(text_fingerprint=embedcache.text_fingerprint(POOL),
                model_fingerprint=embedcache.model_fingerprint(encoder), max_length=64)
    sidecar = cached.path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "n": meta["n"] + 1}))
    with pytest.raises(StaleEmbeddingsError, match="shape"):
        embedcache.load_embeddings(cached.path, **keys)
    sidecar.unlink()
    with pytest.raises(StaleEmbeddingsError, match="no sidecar"):
        embedcache.load_embeddings(cached.path, **keys)
    again = embedcache.cached_embeddings(POOL, encoder, tiny_tokenizer, cache=tmp_path)  # recomputed, not served
    assert not again.hit and sidecar.is_file()
    np.testing.assert_allclose(again.vectors, cached.vectors, atol=1e-6)
    assert embedcache.cached_embeddings(POOL, encoder, tiny_tokenizer, cache=tmp_path).hit
    with pytest.raises(FileNotFoundError):
        embedcache.load_embeddings(tmp_path / "nothing.npy", **keys)
