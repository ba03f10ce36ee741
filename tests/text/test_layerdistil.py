"""Lesson 07's training step: every layer term through the text stack's one loop, on tiny BERT classifiers."""
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from kdtutorial.text import intermediate, layerdistil, students
from kdtutorial.text.finetuning import SentenceClassifier
from kdtutorial.text.layers import layer_map
from kdtutorial.text.tokens import TokenizedText

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

PAD, CLS, SEP, VOCAB = 0, 1, 2, 60


def classifier(layers=4, hidden=32, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=37, attn_implementation="eager")
    return SentenceClassifier(BertModel(cfg, add_pooling_layer=False))


def toy(n=24, seed=0):
    rng = np.random.default_rng(seed)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(2, 8)).tolist(), SEP] for _ in range(n)]
    return TokenizedText(ids=ids, pad_id=PAD, special_ids=frozenset({PAD, CLS, SEP})), rng.integers(0, 2, n)


def student_of(teacher, layers=(0, 2)):
    enc = students.copy_layers_encoder(teacher.encoder, list(layers))
    return SentenceClassifier(enc)


@pytest.mark.parametrize("term, method", [("none", None), ("kd", None), ("pkd", "pkd-skip"), ("pkd", "pkd-last"),
                                          ("tinybert", "tinybert"), ("ckd", "ckd-no"), ("ckd", "ckd-po"),
                                          ("alp", "alp")])
def test_every_term_trains_the_student_only(term, method):
    teacher = classifier()
    student = student_of(teacher)
    text, labels = toy()
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_s = {k: v.clone() for k, v in student.state_dict().items()}
    lmap = layer_map(method, 2, 4) if method else None
    losses, distiller = layerdistil.distil_with_layers(teacher, student, text, labels, term=term, lmap=lmap,
                                                       batch_size=8, max_steps=3, lr=1e-3, progress=False)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert all(torch.equal(before_t[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(before_s[k], v) for k, v in student.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())
    if term == "alp":
        assert distiller.alp_weights.shape[0] == 2 and distiller.alp_weights.shape[2] == 4
        assert torch.allclose(distiller.alp_weights.sum(-1), torch.ones(()))


def test_the_pkd_term_is_the_patient_loss_of_the_mapped_cls_states():
    teacher, text = classifier(), toy(8)[0]
    student = student_of(teacher)
    lmap = layer_map("pkd-skip", 2, 4)  # s1 <- t2
    d = layerdistil.LayerDistiller(teacher, student, "pkd", lmap).eval()
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in text.ids], batch_first=True)
    mask = (ids != PAD).long()
    with torch.no_grad():
        d(ids, mask)
        _, hs = student.logits_and_states(ids, mask, hidden_states=True)
        _, ht = teacher.logits_and_states(ids, mask, hidden_states=True)
    assert torch.allclose(d.layer_loss, intermediate.pkd_patient_loss([hs[1][:, 0]], [ht[2][:, 0]]))
    assert torch.allclose(d.teacher_logits, teacher(ids, mask))


def test_a_narrower_student_needs_a_projecting_term():
    teacher = classifier(hidden=32)
    narrow = classifier(layers=2, hidden=16, seed=1)
    text, labels = toy()
    with pytest.raises(ValueError, match="compares states of one width"):
        layerdistil.LayerDistiller(teacher, narrow, "pkd", layer_map("pkd-skip", 2, 4))
    losses, d = layerdistil.distil_with_layers(teacher, narrow, text, labels, term="tinybert",
                                               lmap=layer_map("tinybert", 2, 4), batch_size=8, max_steps=2,
                                               progress=False)
    assert set(d.projections) == {"0", "1", "2"} and all(np.isfinite(losses))


def test_bad_terms_and_maps_are_refused_by_name():
    teacher = classifier()
    with pytest.raises(ValueError, match="term = 'fitnets' is not allowed"):
        layerdistil.LayerDistiller(teacher, student_of(teacher), "fitnets")
    with pytest.raises(ValueError, match="needs a layer map of kind ckd-no or ckd-po"):
        layerdistil.LayerDistiller(teacher, student_of(teacher), "ckd", layer_map("alp", 2, 4))
    with pytest.raises(ValueError, match="the teacher has layers 0 to 4"):
        layerdistil.LayerDistiller(teacher, student_of(teacher), "pkd", layer_map("pkd-skip", 2, 12))


def test_graphs_refuse_a_cache_and_tinybert():
    teacher = classifier()
    text, labels = toy()
    with pytest.raises(ValueError, match="cache is not allowed with graphs=True"):
        layerdistil.distil_with_layers(teacher, student_of(teacher), text, labels, term="kd", graphs=True,
                                       cache=layerdistil.TeacherBatchCache(), progress=False)
    with pytest.raises(ValueError, match="graphs=True is not allowed with term='tinybert'"):
        layerdistil.distil_with_layers(teacher, student_of(teacher), text, labels, term="tinybert",
                                       lmap=layer_map("tinybert", 2, 4), graphs=True, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("term, method", [("kd", None), ("pkd", "pkd-skip"), ("ckd", "ckd-no"), ("alp", "alp")])
def test_a_graphed_layer_distillation_trains_as_the_eager_one(term, method):
    """distil_with_layers(graphs=True), the teacher's forward pass inside the graph: the eager run's losses and
    student weights to float32 rounding (batches padded to one width instead of their longest row, which these
    [CLS]-state and logit terms do not see; no dropout, float32). Runs on a GPU only."""
    runs = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        teacher = SentenceClassifier(BertModel(cfg, add_pooling_layer=False), dropout=0.0)
        student = student_of(teacher)
        student.dropout.p = 0.0
        text, labels = toy(n=36)
        losses, _ = layerdistil.distil_with_layers(teacher, student, text, labels, term=term,
                                                   lmap=layer_map(method, 2, 4) if method else None, epochs=2,
                                                   batch_size=8, lr=1e-3, device="cuda", progress=False, graphs=graphs)
        runs[graphs] = losses, {k: v.cpu() for k, v in student.state_dict().items()}
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-3, atol=1e-5)
    for k, v in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][k], v, rtol=1e-3, atol=1e-4, msg=k)
