"""Two-tower students: shapes, weight sharing, cached-vector serving, pooling, trigram hashing (float64)."""
import zlib

import pytest
import torch
from transformers import BertConfig, BertModel

from kdtutorial.ranking import twotower
from kdtutorial.ranking.twotower import CDSSM, CosineCrossing, ResidualCrossing, TwinBERT, letter_trigram_batch


pytestmark = pytest.mark.usefixtures("double_precision")  # fixture in conftest.py


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return BertModel(config, add_pooling_layer=False)


def batch(n, length, seed, min_len=2):
    """Random token ids (pad id 0) with random lengths; position 0 plays [CLS]."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (n, length), generator=g)
    lengths = torch.randint(min_len, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


@pytest.fixture
def pairs():
    q_ids, q_mask = batch(4, 6, seed=1)
    ad_ids, ad_mask = batch(4, 12, seed=2)
    return q_ids, q_mask, ad_ids, ad_mask


TWIN_VARIANTS = [("mean", "cos"), ("cls", "cos"), ("mean", "res"), ("cls", "res")]


# ------------------------------------------------------------------------------------------- TwinBERT
@pytest.mark.parametrize("pooling,crossing", TWIN_VARIANTS)
def test_twinbert_shapes_and_serving_equality(pairs, pooling, crossing):
    model = TwinBERT(tiny_bert(), pooling=pooling, crossing=crossing).eval()
    q_ids, q_mask, ad_ids, ad_mask = pairs
    with torch.no_grad():
        logits = model(q_ids, q_mask, ad_ids, ad_mask)
        q_vec, ad_vec = model.encode(q_ids, q_mask), model.encode(ad_ids, ad_mask, side="ad")
        assert logits.shape == (4,) and q_vec.shape == ad_vec.shape == (4, 32)
        assert torch.equal(model.score_vectors(q_vec, ad_vec), logits)


@pytest.mark.parametrize("crossing", ["cos", "res"])
def test_cached_ad_vectors_score_like_the_full_forward(crossing):
    """Encode 5 ads once, score 3 queries against all of them by broadcasting; compare with forward per pair."""
    model = TwinBERT(tiny_bert(), crossing=crossing).eval()
    q_ids, q_mask = batch(3, 5, seed=3)
    ad_ids, ad_mask = batch(5, 9, seed=4)
    with torch.no_grad():
        cache = model.encode(ad_ids, ad_mask, side="ad")            # offline
        grid = model.score_vectors(model.encode(q_ids, q_mask)[:, None], cache[None, :])
        assert grid.shape == (3, 5)
        for i in range(3):
            full = model(q_ids[i].expand(5, -1), q_mask[i].expand(5, -1), ad_ids, ad_mask)
            assert torch.allclose(grid[i], full, atol=1e-10, rtol=0)


def test_twinbert_shares_one_encoder_and_both_sides_send_gradients(pairs):
    bert = tiny_bert()
    model = TwinBERT(bert, crossing="cos")
    model.eval()  # no dropout: the three passes below must see the same network
    calls = []
    bert.register_forward_hook(lambda module, args, output: calls.append(module))
    n_own = sum(p.numel() for p in model.crossing.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in bert.parameters()) + n_own
    q_ids, q_mask, ad_ids, ad_mask = pairs

    def encoder_grads(detach_q=False, detach_ad=False):
        model.zero_grad()
        q, ad = model.encode(q_ids, q_mask), model.encode(ad_ids, ad_mask)
        q, ad = (q.detach() if detach_q else q), (ad.detach() if detach_ad else ad)
        model.score_vectors(q, ad).sum().backward()
        return torch.cat([p.grad.flatten() for p in bert.parameters()])

    model.zero_grad()
    model(q_ids, q_mask, ad_ids, ad_mask).sum().backward()
    assert len(calls) == 2 and calls[0] is calls[1]
    full = torch.cat([p.grad.flatten() for p in bert.parameters()])
    from_query = encoder_grads(detach_ad=True)
    from_ad = encoder_grads(detach_q=True)
    assert from_query.abs().sum() > 0 and from_ad.abs().sum() > 0
    assert torch.allclose(full, from_query + from_ad, atol=1e-12)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_more_padding_does_not_change_the_vector(pooling):
    model = TwinBERT(tiny_bert(), pooling=pooling).eval()
    ids, mask = batch(3, 7, seed=5)
    pad = torch.zeros(3, 9, dtype=torch.long)
    with torch.no_grad():
        v = model.encode(ids, mask)
        v_padded = model.encode(torch.cat([ids, pad], 1), torch.cat([mask, pad], 1))
    assert torch.allclose(v, v_padded, atol=1e-10, rtol=0)


def test_mean_pool_by_hand():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    expected = torch.tensor([[2.0, 3.0], [7.0, 8.0]])
    assert torch.allclose(twotower.mean_pool(h, mask), expected)
    assert torch.equal(twotower.mean_pool(h, torch.zeros(2, 3)), torch.zeros(2, 2))


def test_twinbert_validates_its_arguments():
    bert = tiny_bert()
    with pytest.raises(ValueError, match="pooling"):
        TwinBERT(bert, pooling="max")
    with pytest.raises(ValueError, match="crossing"):
        TwinBERT(bert, crossing="dot")
    with pytest.raises(ValueError, match="res"):
        TwinBERT(bert, crossing="cos", hidden=16)
    with pytest.raises(ValueError, match="dim="):
        TwinBERT(torch.nn.Identity())
    assert TwinBERT(bert, crossing="res", hidden=8).crossing.down.out_features == 8


# ------------------------------------------------------------------------------------------- crossings
def test_cosine_crossing_is_affine_in_cos_and_bounded():
    cross = CosineCrossing()
    assert cross.scale.item() == 10.0 and cross.bias.item() == 0.0
    with torch.no_grad():
        cross.scale.fill_(-3.5)
        cross.bias.fill_(1.25)
    g = torch.Generator().manual_seed(6)
    q, ad = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    cos = (q * ad).sum(-1) / (q.norm(dim=-1) * ad.norm(dim=-1))
    out = cross(q, ad)
    assert torch.allclose(out, -3.5 * cos + 1.25, atol=1e-12)
    assert out.abs().max() <= 3.5 + 1.25
    extremes = torch.stack([cross(q, 2.0 * q), cross(q, -q)])  # cos = +1 and -1 reach -a + b and a + b
    assert torch.allclose(extremes[0], torch.full((200,), -2.25)) and torch.allclose(extremes[1], torch.full((200,), 4.75))
    assert extremes.abs().max() <= 3.5 + 1.25


def test_residual_crossing_formula():
    torch.manual_seed(7)
    cross = ResidualCrossing(dim=4, hidden=3)
    q, ad = torch.randn(5, 4), torch.randn(5, 4)
    x = torch.cat([q, ad, q * ad, (q - ad).abs()], -1)
    hidden = torch.clamp(x @ cross.down.weight.T + cross.down.bias, min=0)
    y = x + hidden @ cross.up.weight.T + cross.up.bias
    expected = y @ cross.out.weight[0] + cross.out.bias[0]
    assert torch.allclose(cross(q, ad), expected, atol=1e-12)
    assert sum(p.numel() for p in cross.parameters()) == (16 * 3 + 3) + (3 * 16 + 16) + (16 + 1)


# ---------------------------------------------------------------------------------- letter trigrams
def test_trigrams_and_hashing_by_hand():
    assert twotower.words("Adidas tennis-shoes, WOMEN!") == ["adidas", "tennis", "shoes", "women"]
    assert twotower.word_trigrams("cat") == ["#ca", "cat", "at#"]
    assert twotower.word_trigrams("a") == ["#a#"]
    assert twotower.word_trigrams("aaaa") == ["#aa", "aaa", "aaa", "aa#"]
    # crc32 is a fixed standard (not salted like Python's hash): these numbers hold in every process
    assert [twotower.trigram_bucket(t, 2**15) for t in ("#ca", "cat", "at#")] == [18433, 17320, 13701]
    assert twotower.trigram_bucket("#ca", 1000) == zlib.crc32(b"#ca") % 1000 == 857


def test_letter_trigram_batch_layout():
    ids, mask = letter_trigram_batch(["Cat a", "aaaa", ""], n_buckets=1000, max_words=8)
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert ids.shape == (3, 2, 4) and mask.shape == (3, 2)   # 2 words at most, 4 trigrams at most ("aaaa")
    assert ids[0].tolist() == [[858, 833, 446, 0], [264, 0, 0, 0]]  # bucket + 1; 0 = padding
    assert ids[1, 0].tolist() == [580, 78, 78, 26]
    assert mask.tolist() == [[True, True], [True, False], [False, False]]
    assert ids[2].abs().sum() == 0
    truncated, tmask = letter_trigram_batch(["one two three four"], n_buckets=1000, max_words=2)
    assert truncated.shape[1] == 2 and tmask.all()
    again = letter_trigram_batch(["Cat a", "aaaa", ""], n_buckets=1000, max_words=8)
    assert torch.equal(again[0], ids) and torch.equal(again[1], mask)
    with pytest.raises(TypeError, match="sequence of strings"):
        letter_trigram_batch("cat", n_buckets=1000)


# ------------------------------------------------------------------------------------------------ CDSSM
QUERIES = ["adidas tennis shoes women", "cheap flights", "running shoes", "pizza"]
ADS = ["Tennis Shoe Adidas Womens - free shipping and returns", "Book cheap flights to Paris today",
       "Women's Adidas Shoes at JCP", ""]


def small_cdssm(shared=True, seed=0):
    torch.manual_seed(seed)
    return CDSSM(n_buckets=512, embed=16, conv=24, out=8, shared=shared)


def test_cdssm_shapes_serving_and_bounds():
    model = small_cdssm().eval()
    q, ad = model.tokenize(QUERIES), model.tokenize(ADS)
    with torch.no_grad():
        logits = model(*q, *ad)
        q_vec, ad_vec = model.encode(*q), model.encode(*ad, side="ad")
        assert logits.shape == (4,) and q_vec.shape == ad_vec.shape == (4, 8)
        assert torch.isfinite(logits).all()  # the empty ad text too
        assert torch.equal(model.score_vectors(q_vec, ad_vec), logits)
        grid = model.score_vectors(q_vec[:, None], ad_vec[None, :])
        assert torch.allclose(grid.diagonal(), logits, atol=1e-12)
    a, b = model.crossing.scale.abs(), model.crossing.bias.abs()
    assert logits.abs().max() <= a + b


def test_cdssm_vector_does_not_depend_on_batch_padding():
    model = small_cdssm().eval()
    with torch.no_grad():
        alone = model.encode(*model.tokenize(["cheap flights"]))
        padded = model.encode(*model.tokenize(["cheap flights", "a much longer text with many more words in it"]))
    assert torch.allclose(alone[0], padded[0], atol=1e-12, rtol=0)


def test_cdssm_shared_and_separate_towers():
    shared, separate = small_cdssm(shared=True), small_cdssm(shared=False)
    assert shared.query_tower is shared.ad_tower
    assert separate.query_tower is not separate.ad_tower
    n_tower = sum(p.numel() for p in shared.query_tower.parameters())
    assert sum(p.numel() for p in shared.parameters()) == n_tower + 2
    assert sum(p.numel() for p in separate.parameters()) == 2 * n_tower + 2
    assert not torch.equal(separate.query_tower.semantic.weight, separate.ad_tower.semantic.weight)


def test_cdssm_shared_tower_gets_gradients_from_both_sides():
    model = small_cdssm(shared=True)
    q, ad = model.tokenize(QUERIES), model.tokenize(ADS)
    tower = list(model.query_tower.parameters())

    def grads(detach_q=False, detach_ad=False):
        model.zero_grad()
        qv, av = model.encode(*q), model.encode(*ad, side="ad")
        qv, av = (qv.detach() if detach_q else qv), (av.detach() if detach_ad else av)
        model.score_vectors(qv, av).sum().backward()
        return torch.cat([p.grad.flatten() for p in tower])

    model.zero_grad()
    model(*q, *ad).sum().backward()
    full = torch.cat([p.grad.flatten() for p in tower])
    from_q, from_ad = grads(detach_ad=True), grads(detach_q=True)
    assert from_q.abs().sum() > 0 and from_ad.abs().sum() > 0
    assert torch.allclose(full, from_q + from_ad, atol=1e-12)


def test_cdssm_refuses_ids_from_a_bigger_hash_space():
    model = small_cdssm()
    ids, mask = letter_trigram_batch(QUERIES, n_buckets=2**15)
    with pytest.raises(ValueError, match="n_buckets"):
        model.encode(ids, mask)
    with pytest.raises(ValueError, match="window"):
        CDSSM(n_buckets=64, window=2)
    with pytest.raises(ValueError, match="side"):
        model.encode(*model.tokenize(QUERIES), side="doc")


@pytest.mark.parametrize("crossing", ["cos", "res"])
def test_score_grid_equals_every_pair(crossing):
    torch.manual_seed(0)
    crossing_layer = CosineCrossing() if crossing == "cos" else ResidualCrossing(8, hidden=5)
    with torch.no_grad():
        for p in crossing_layer.parameters():
            p.normal_()
    q, a = torch.randn(7, 8), torch.randn(11, 8)
    grid = crossing_layer.grid(q, a) if crossing == "cos" else crossing_layer.grid(q, a, query_chunk=3)
    assert grid.shape == (7, 11)
    torch.testing.assert_close(grid, crossing_layer(q[:, None], a[None]), rtol=1e-10, atol=1e-10)
    if crossing == "res":  # the default chunk (all 7 queries at once here), and a bad one
        torch.testing.assert_close(crossing_layer.grid(q, a), grid, rtol=1e-10, atol=1e-10)
        with pytest.raises(ValueError, match="query_chunk"):
            crossing_layer.grid(q, a, query_chunk=0)
