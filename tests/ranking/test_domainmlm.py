"""The AdsBERT recipe's pieces (issue 20): domain-adaptive masked-LM pre-training on the ads side with the test texts
left out, the share of the teacher's gain a distilled student keeps, the multi-teacher mean, BERT-Tiny-shaped towers."""
import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from kdtutorial.ranking import domainmlm, metrics, relevance
from kdtutorial.text import students
from kdtutorial.text.distilbert import IGNORE_INDEX
from kdtutorial.text.tokens import TokenizedText

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

PAD, CLS, SEP, MASK, VOCAB = 0, 1, 2, 3, 40

TRAIN = {"query": ["kaffee", " tee ", "kaffee", ""], "title": ["Kaffeemaschine", "Teekanne", "Tasse", "Tasse"],
         "description": ["guter Kaffee", "schwarzer Tee", "guter Kaffee", "aus Porzellan"]}
TEST = {"query": ["tee"], "title": ["Teekanne"], "description": ["aus Glas"]}


def test_the_ads_side_holds_every_distinct_text_once_and_no_test_text():
    assert domainmlm.texts_of(TEST) == {"tee", "Teekanne", "aus Glas"}
    texts = domainmlm.ads_side_texts(TRAIN, exclude=domainmlm.texts_of(TEST))
    assert texts == ["kaffee", "Kaffeemaschine", "Tasse", "guter Kaffee", "schwarzer Tee", "aus Porzellan"]
    assert not set(texts) & domainmlm.texts_of(TEST)  # "tee" and "Teekanne" are test texts: left out
    assert domainmlm.ads_side_texts(TRAIN)[:3] == ["kaffee", "tee", "Kaffeemaschine"]  # nothing excluded: all of them


def corpus(n=48, seed=0):
    """Texts of a tiny language: each is a run of consecutive token ids, so the masked token is predictable."""
    rng = np.random.default_rng(seed)
    ids = []
    for _ in range(n):
        start, length = int(rng.integers(5, VOCAB - 12)), int(rng.integers(4, 10))
        ids.append([CLS, *range(start, start + length), SEP])
    return TokenizedText(ids=ids, pad_id=PAD, special_ids=frozenset({PAD, CLS, SEP}))


def masked_lm(seed=0):
    torch.manual_seed(seed)
    return BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def test_mlm_pretraining_starts_near_chance_learns_and_is_seeded():
    text = corpus()
    model = masked_lm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = domainmlm.mlm_pretrain(model, text, mask_token_id=MASK, epochs=80, lr=3e-3, batch_size=16, seed=3,
                                    progress=False)
    assert len(losses) == 80 * 3
    assert abs(np.mean(losses[:3]) - math.log(VOCAB)) < 0.5  # a random model: about uniform over the vocabulary
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 1.0  # the runs of consecutive ids are learned
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(".encoder.layer." in k for k in changed) and any("embeddings" in k for k in changed)  # every weight trains
    short = dict(mask_token_id=MASK, epochs=2, lr=3e-3, batch_size=16, progress=False)
    a, b = (domainmlm.mlm_pretrain(masked_lm(), text, seed=3, **short) for _ in range(2))
    assert a == b  # the same seed: the same masks, the same steps
    assert domainmlm.mlm_pretrain(masked_lm(), text, seed=4, **short) != a  # another seed: other masks


def test_the_loss_is_the_cross_entropy_at_the_chosen_positions_only():
    model = masked_lm().eval()
    step = domainmlm._MaskedLMStep(model)
    ids = torch.tensor([[CLS, 7, 8, 9, SEP, PAD], [CLS, 20, 21, 22, 23, SEP]])
    mask = (ids != PAD).long()
    masked = ids.clone()
    masked[0, 2], masked[1, 4] = MASK, MASK
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 2], labels[1, 4] = 8, 23
    with torch.no_grad():
        logits = step(masked, mask, labels)
        full = model(input_ids=masked, attention_mask=mask).logits
    assert logits.shape == (2, VOCAB) and torch.equal(step.targets, torch.tensor([8, 23]))
    assert torch.allclose(logits, full[[0, 1], [2, 4]], atol=1e-5)
    expected = -(torch.log_softmax(full[0, 2], -1)[8] + torch.log_softmax(full[1, 4], -1)[23]) / 2
    assert torch.allclose(torch.nn.functional.cross_entropy(logits, step.targets), expected, atol=1e-5)


def test_mlm_pretraining_refuses_no_text():
    with pytest.raises(ValueError, match="text is empty"):
        domainmlm.mlm_pretrain(masked_lm(), TokenizedText(ids=[], pad_id=PAD, special_ids=frozenset({PAD})),
                               mask_token_id=MASK, progress=False)


def test_gain_kept_is_the_share_of_the_teachers_gain():
    assert metrics.gain_kept(0.80, 0.76, 0.83) == pytest.approx(4 / 7)
    assert metrics.gain_kept(0.83, 0.76, 0.83) == pytest.approx(1.0) and metrics.gain_kept(0.76, 0.76, 0.83) == 0.0
    assert metrics.gain_kept(0.75, 0.76, 0.78) == pytest.approx(-0.5)  # distillation lowered the student
    with pytest.raises(ValueError, match="teacher = 0.76 is not above labels_only = 0.76: there is no gain to keep"):
        metrics.gain_kept(0.8, 0.76, 0.76)


def test_the_multi_teacher_target_is_the_weighted_mean_of_the_logits():
    a, b, c = np.array([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0, 0.5]), [2.0, 2.0, 2.0]
    mean = relevance.mean_teacher_logits(a, b, c)
    assert mean.dtype == np.float32 and np.allclose(mean, [2.0, 0.0, 1.0])
    assert np.allclose(relevance.mean_teacher_logits(a, b, weights=[3, 1]), [1.5, -1.5, 0.5])
    assert np.array_equal(relevance.mean_teacher_logits(a), a.astype(np.float32))  # one teacher: itself
    with pytest.raises(ValueError, match="must have one shape"):
        relevance.mean_teacher_logits(a, np.zeros(4))
    with pytest.raises(ValueError, match="weights must be 2 non-negative numbers with a positive sum"):
        relevance.mean_teacher_logits(a, b, weights=[1, -1])
    with pytest.raises(ValueError, match="at least one teacher"):
        relevance.mean_teacher_logits()


def test_a_small_tower_is_narrow_random_and_speaks_the_teachers_vocabulary():
    torch.manual_seed(0)
    teacher = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                   intermediate_size=96), add_pooling_layer=False)
    tower = students.small_encoder(teacher, layers=2, hidden=16, heads=2, intermediate=24)
    c = tower.config
    assert type(tower) is BertModel and (c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                                         c.intermediate_size) == (2, 16, 2, 24)
    assert c.vocab_size == VOCAB and c.max_position_embeddings == teacher.config.max_position_embeddings
    assert teacher.config.hidden_size == 64  # the teacher's config is not touched
    out = tower(input_ids=torch.tensor([[CLS, 7, 8, SEP]])).last_hidden_state
    assert out.shape == (1, 4, 16)
    with pytest.raises(ValueError, match="hidden = 30 is not allowed with heads = 4"):
        students.small_encoder(teacher, hidden=30, heads=4)
    with pytest.raises(ValueError, match="layers = 0 is not allowed"):
        students.small_encoder(teacher, layers=0)
