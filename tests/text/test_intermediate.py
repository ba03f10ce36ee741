"""Lesson 07's building blocks: layer maps and the intermediate-layer losses, each against a float64 formula."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtutorial.text import intermediate as im
from kdtutorial.text.layers import METHODS, layer_map

@pytest.fixture(autouse=True)
def float64():
    """Every check here in float64 (the reference formulas), restored afterwards for the other tests."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_hand_made_maps_follow_the_papers():
    assert layer_map("pkd-skip", 6, 12).describe() == "pkd-skip 12->6: s1 <- t2, s2 <- t4, s3 <- t6, s4 <- t8, s5 <- t10"
    assert layer_map("pkd-last", 6, 12).describe() == "pkd-last 12->6: s1 <- t7, s2 <- t8, s3 <- t9, s4 <- t10, s5 <- t11"
    assert layer_map("tinybert", 4, 12).describe() == "tinybert 12->4: s0 <- t0, s1 <- t3, s2 <- t6, s3 <- t9, s4 <- t12"
    assert layer_map("ckd-no", 4, 12).describe() == ("ckd-no 12->4: s1 <- t1+t2+t3, s2 <- t4+t5+t6, s3 <- t7+t8+t9, "
                                                     "s4 <- t10+t11+t12")
    assert layer_map("ckd-po", 2, 6).describe() == "ckd-po 6->2: s1 <- t1+t2+t3, s2 <- t3+t4+t5+t6"
    alp = layer_map("alp", 2, 6)
    assert alp.learned and alp.teachers_of(1) == (1, 2, 3, 4, 5, 6)
    for method in METHODS:  # weights of a student layer sum to 1
        for links in layer_map(method, 3, 6).links.values():
            assert sum(w for _, w in links) == pytest.approx(1.0)


def test_bad_maps_are_refused_by_name():
    with pytest.raises(ValueError, match="teacher has layers 0 to 6"):
        layer_map("pkd-skip", 3, 12).check(teacher_layers=6)
    with pytest.raises(ValueError, match="student has layers 0 to 2"):
        layer_map("tinybert", 3, 6).check(student_layers=2)
    with pytest.raises(ValueError, match="expected one of pkd-skip"):
        layer_map("skip", 3, 6)
    with pytest.raises(ValueError, match="student_layers = 8 is not allowed"):
        layer_map("alp", 8, 6)


def test_pkd_patient_loss_against_its_formula():
    torch.manual_seed(0)
    s = [torch.randn(4, 8, requires_grad=True) for _ in range(2)]
    t = [torch.randn(4, 8) for _ in range(2)]
    expected = sum(((a / a.norm(dim=1, keepdim=True) - b / b.norm(dim=1, keepdim=True)) ** 2).sum(1).mean()
                   for a, b in zip(s, t))
    loss = im.pkd_patient_loss(s, t)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    # scale-free: the norm is divided out
    assert torch.allclose(im.pkd_patient_loss([3 * x.detach() for x in s], t), expected.detach())
    assert im.pkd_loss(1.0, 2.0, 0.1, alpha=0.5, beta=100) == pytest.approx(0.5 + 1.0 + 10.0)


def _bert(hidden=16, heads=2, layers=2):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=32, max_position_embeddings=16, attn_implementation="eager")
    return BertModel(cfg).eval()


def test_attention_scores_softmax_to_the_models_probabilities():
    model = _bert()
    ids = torch.tensor([[2, 5, 7, 9, 3, 0], [2, 11, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        for layer in range(2):
            scores = im.attention_scores(model.encoder.layer[layer].attention, out.hidden_states[layer], mask)
            assert torch.allclose(scores.softmax(-1), out.attentions[layer], atol=1e-10)
    # by hand for one head: q k^T / sqrt(d)
    sa = model.encoder.layer[0].attention.self
    h = out.hidden_states[0][0]
    d = 16 // 2
    q, k = sa.query(h)[:, :d], sa.key(h)[:, :d]
    assert torch.allclose(scores_0 := im.attention_scores(model.encoder.layer[0].attention, out.hidden_states[0], mask)[0, 0, :, :5],
                          (q @ k.T / math.sqrt(d))[:, :5]), scores_0


def test_attention_scores_of_mpnet_include_its_position_bias():
    """MPNet (the full profile's teacher) names its projections q / k and adds a relative-position bias shared by
    its layers: the rebuilt scores must still softmax to the probabilities the model returns."""
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    cfg = MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=20, attn_implementation="eager")
    model = MPNetModel(cfg).eval()
    ids = torch.tensor([[0, 5, 7, 9, 2, 1], [0, 11, 2, 1, 1, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        bias = im.position_bias(model, out.hidden_states[0])
        assert bias is not None and bias.shape == (2, 2, 6, 6)
        for layer in range(2):
            scores = im.attention_scores(model.encoder.layer[layer].attention, out.hidden_states[layer], mask, bias)
            assert torch.allclose(scores.softmax(-1), out.attentions[layer], atol=1e-10)
            no_bias = im.attention_scores(model.encoder.layer[layer].attention, out.hidden_states[layer], mask)
            assert not torch.allclose(no_bias.softmax(-1), out.attentions[layer], atol=1e-4)
    assert im.position_bias(_bert(), out.hidden_states[0]) is None  # BERT's positions are in its embeddings


def test_tinybert_attention_loss_zeroes_padding():
    torch.manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 0]])
    s, t = torch.randn(1, 2, 4, 4, requires_grad=True), torch.randn(1, 2, 4, 4)
    t_padded = t.clone()
    t_padded[..., 3] = torch.finfo(t.dtype).min  # what attention_scores puts at a padded key
    keep = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    keep[..., :3, :3] = True
    expected = (((s - t) * keep) ** 2).sum() / s.numel()
    loss = im.tinybert_attention_loss(s, t_padded, mask)
    assert torch.allclose(loss, expected) and math.isfinite(loss.item())
    loss.backward()
    assert s.grad[..., 3].abs().sum() == 0 and s.grad[..., :3, :3].abs().sum() > 0


def test_tinybert_hidden_loss_projects_a_narrower_student():
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 4, requires_grad=True), torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="pass projection"):
        im.tinybert_hidden_loss(s, t)
    w = torch.nn.Linear(4, 8)
    expected = ((s @ w.weight.T + w.bias - t) ** 2).mean()
    loss = im.tinybert_hidden_loss(s, t, w)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert w.weight.grad is not None and s.grad is not None


def test_ckd_concatenates_a_group_then_projects():
    torch.manual_seed(3)
    group = [torch.randn(2, 5, 6) for _ in range(3)]
    proj = torch.nn.Linear(18, 4)
    c = im.ckd_combine(group, proj)
    expected = torch.cat(group, -1) @ proj.weight.T + proj.bias
    assert torch.allclose(c, expected) and c.shape == (2, 5, 4)
    s = torch.randn(2, 5, 4)
    assert torch.allclose(im.ckd_loss([s, s], [c, c]), 2 * F.mse_loss(s, c))


def test_alp_attention_weights_sum_to_one_and_reach_the_student():
    torch.manual_seed(4)
    s = torch.randn(3, 8, requires_grad=True)
    teachers = [torch.randn(3, 8) for _ in range(5)]
    context, alpha = im.alp_attention(s, teachers)
    assert torch.allclose(alpha.sum(-1), torch.ones(3))
    t = torch.stack(teachers, 1)
    ref_alpha = torch.softmax(torch.einsum("bd,bkd->bk", s, t), -1)
    assert torch.allclose(alpha, ref_alpha) and torch.allclose(context, torch.einsum("bk,bkd->bd", ref_alpha, t))
    loss, weights = im.alp_loss([s, s], teachers)
    assert weights.shape == (2, 3, 5)
    loss.backward()
    assert s.grad.abs().sum() > 0


def test_scaled_alp_attention_divides_the_dot_products_by_the_root_of_the_width():
    torch.manual_seed(5)
    s = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    teachers = [torch.randn(3, 16, dtype=torch.float64) for _ in range(4)]
    t = torch.stack(teachers, 1)
    ref_alpha = torch.softmax(torch.einsum("bd,bkd->bk", s, t) / 4.0, -1)  # sqrt(16) = 4
    context, alpha = im.alp_attention(s, teachers, scale=True)
    assert torch.allclose(alpha, ref_alpha, atol=1e-12)
    assert torch.allclose(context, torch.einsum("bk,bkd->bd", ref_alpha, t), atol=1e-12)
    unscaled = im.alp_attention(s, teachers)[1]  # eq. 3 as written: sharper (closer to one-hot) than the scaled one
    assert (unscaled.max(-1).values >= alpha.max(-1).values - 1e-12).all()
    loss, weights = im.alp_loss([s], teachers, scale=True)
    assert torch.allclose(weights[0], ref_alpha, atol=1e-12)
    assert torch.allclose(loss, F.mse_loss(s, torch.einsum("bk,bkd->bd", ref_alpha, t)), atol=1e-12)
    loss.backward()
    assert s.grad.abs().sum() > 0


def test_draw_map_draws_every_link(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdtutorial.text.layers import draw_map

    fig, axes = plt.subplots(1, 2)
    draw_map(axes[0], layer_map("ckd-po", 3, 6))
    alp = layer_map("alp", 2, 6)
    draw_map(axes[1], alp, weights=torch.softmax(torch.randn(2, 6), -1))
    assert len(axes[0].lines) == sum(len(v) for v in layer_map("ckd-po", 3, 6).links.values())
    assert len(axes[1].lines) == 12
    plt.close(fig)
