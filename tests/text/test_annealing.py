"""Annealing KD on text and Annealing + MATE (``kdtutorial.text.annealing``): the stage split and its errors, the phi
schedule per update (length, 1 / tau_max first, 1 last, non-decreasing, equal blocks; also with fewer updates than
temperatures), the combined stage-I loss against its formula written out in float64 and its gradient (none to the
teacher logits), and both trainers giving the student exactly the updates asked for (``after_step`` sees 1 ..
updates in order, across the two stages), recording the stage-I losses (recomputed here update by update for
Annealing KD) and leaving the teacher untouched. Tiny random BERT models; no network."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from _support import tiny_bert
from kdtutorial.text import annealing
from kdtutorial.text.finetuning import SentenceClassifier, predict
from kdtutorial.text.tokens import TokenizedText, padded_batches

PAD, CLS, SEP, MASK, VOCAB = 0, 2, 3, 4, 60  # toy vocabulary: words are 5..59

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def test_stage_updates_split_and_errors():
    assert annealing.stage_updates(10, 0.5) == (5, 5)
    assert annealing.stage_updates(3, 0.1) == (1, 2)
    assert annealing.stage_updates(4, 1.0) == (4, 0)
    for bad in ((0, 0.5), (10, 0.0), (10, 1.5), (2.5, 0.5)):
        with pytest.raises(ValueError):
            annealing.stage_updates(*bad)


def test_stage_updates_rounds_the_share_and_counts_every_update():
    for updates, share, first in [(150, 0.5, 75), (12, 0.5, 6), (7, 0.3, 2), (1, 0.01, 1), (9, 0.999, 9)]:
        assert annealing.stage_updates(updates, share) == (first, updates - first)
    with pytest.raises(ValueError, match="updates must be a positive integer, got 0"):
        annealing.stage_updates(0, 0.5)
    with pytest.raises(ValueError, match="updates must be a positive integer, got 4.0"):
        annealing.stage_updates(4.0, 0.5)
    for share in (0, -0.2, 1.01):
        with pytest.raises(ValueError, match=r"stage1_share must be in \(0, 1\]"):
            annealing.stage_updates(10, share)


@pytest.mark.parametrize("stage1, tau_max", [(10, 10), (75, 10), (7, 3), (1, 4)])
def test_stage1_phis_step_from_soft_to_sharp_in_equal_blocks(stage1, tau_max):
    phis = annealing.stage1_phis(stage1, tau_max)
    assert len(phis) == stage1 and phis[0] == pytest.approx(1 / tau_max)
    assert all(a <= b for a, b in zip(phis, phis[1:]))
    if stage1 >= tau_max:
        assert phis[-1] == pytest.approx(1.0)
        sizes = np.unique(phis, return_counts=True)[1]
        assert len(sizes) == tau_max and sizes.max() - sizes.min() <= 1


def test_stage1_phis_blocks_are_exactly_equal_when_the_updates_divide():
    phis = annealing.stage1_phis(20, 10)
    assert phis == pytest.approx([1 - (T - 1) / 10 for T in range(10, 0, -1) for _ in range(2)])
    assert annealing.stage1_phis(6, 3) == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    assert annealing.stage1_phis(5, 1) == [1.0] * 5  # tau_max 1: plain logit regression


@pytest.mark.parametrize("stage1", [2, 3, 6, 9])
def test_stage1_phis_with_fewer_updates_than_temperatures_still_end_at_one(stage1):
    """The quick profile's 12 updates give stage I 6 updates for tau_max = 10: the schedule must still start at
    z_t / 10 and end at z_t (it used to stop at T = 2, phi = 0.9)."""
    phis = annealing.stage1_phis(stage1, 10)
    assert len(phis) == stage1 and phis[0] == pytest.approx(0.1) and phis[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(phis, phis[1:]))  # no temperature twice: there are too few updates
    assert all(abs(10 * (1 - v) - round(10 * (1 - v))) < 1e-9 for v in phis)  # phi of an integer T each


def test_stage1_phis_refuses_bad_counts():
    for bad in (0, -3, 2.0):
        with pytest.raises(ValueError, match="stage1 must be a positive integer"):
            annealing.stage1_phis(bad, 10)
    with pytest.raises(ValueError, match="need integers 1 <= T <= tau_max"):
        annealing.stage1_phis(4, 0)


def test_combined_stage1_loss_is_its_formula(double_precision):
    g = torch.Generator().manual_seed(0)
    zs, zt, zs2, zt2 = (torch.randn(5, 3, generator=g) for _ in range(4))
    zt.requires_grad_(True)
    phi = 0.3
    expected = 0.5 * (sum(((zs[i] - phi * zt[i]) ** 2).sum() for i in range(5)) / 5
                      + sum(((zs2[i] - phi * zt2[i]) ** 2).sum() for i in range(5)) / 5)
    got = annealing.combined_stage1_loss(zs, zt, zs2, zt2, phi)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    zs.requires_grad_(True)
    annealing.combined_stage1_loss(zs, zt, zs2, zt2, phi).backward()
    assert zt.grad is None and zs.grad is not None  # the teacher side is detached


def test_combined_stage1_loss_by_hand_and_its_gradients(double_precision):
    """``0.5 * (sum_c (zs - phi zt)^2 mean over batch + the same on the rewrites)``, written out with Python floats;
    the student logits get ``(z_s - phi z_t) / B`` from each term, the teacher logits nothing."""
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(4, 3, generator=g, requires_grad=True), torch.randn(4, 3, generator=g, requires_grad=True)
    zs2, zt2 = torch.randn(4, 3, generator=g, requires_grad=True), torch.randn(4, 3, generator=g, requires_grad=True)
    assert zs.dtype == torch.float64
    for phi in (0.1, 0.55, 1.0):
        def term(s, t):
            return sum(sum((a - phi * b) ** 2 for a, b in zip(s_row, t_row))
                       for s_row, t_row in zip(s.tolist(), t.tolist())) / len(s)

        loss = annealing.combined_stage1_loss(zs, zt, zs2, zt2, phi)
        assert loss.dtype == torch.float64
        assert loss.item() == pytest.approx(0.5 * (term(zs, zt) + term(zs2, zt2)), rel=1e-13)
        for w in (zs, zt, zs2, zt2):
            w.grad = None
        loss.backward()
        assert zt.grad is None and zt2.grad is None
        assert torch.allclose(zs.grad, (zs - phi * zt).detach() / 4, atol=1e-14, rtol=0)
        assert torch.allclose(zs2.grad, (zs2 - phi * zt2).detach() / 4, atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match=r"phi must be in \(0, 1\]"):
        annealing.combined_stage1_loss(zs, zt, zs2, zt2, 0.0)


def toy_text(n):
    rng = np.random.default_rng(0)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(3, 9)).tolist(), SEP] for _ in range(n)]
    return TokenizedText(ids=ids, pad_id=PAD, special_ids=frozenset({PAD, 1, CLS, SEP, MASK}))


def generator():
    from transformers import BertForMaskedLM

    torch.manual_seed(7)
    return BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=37)).eval()


def classifier(seed):
    return SentenceClassifier(tiny_bert(VOCAB, seed), n_classes=2, dropout=0.0).eval()


def still_classifier(seed):
    """No dropout anywhere: a training step's forward equals a recomputation in eval mode."""
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return SentenceClassifier(BertModel(cfg, add_pooling_layer=False), n_classes=2, dropout=0.0).eval()


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("which", ["annealing", "combined"])
def test_trainers_give_exactly_the_updates_asked_for(which):
    teacher, student = classifier(0), classifier(1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    text, labels = toy_text(24), np.arange(24) % 2
    seen = []
    kwargs = dict(updates=7, stage1_share=0.5, tau_max=3, batch_size=8, lr=1e-3, seed=2, after_step=seen.append)
    if which == "annealing":
        out = annealing.train_annealing_text(teacher, student, text, labels, **kwargs)
        first = out["stage1"]
    else:
        out = annealing.train_annealing_mate(teacher, student, generator(), text, labels, mask_token_id=MASK,
                                             n_gen=1, n_student=2, gen_lr=1e-3, **kwargs)
        first = [h for h in out["stage1"] if h["phase"] == "student"]
        assert [h["phi"] for h in first] == pytest.approx(annealing.stage1_phis(4, 3))
        assert sum(h["phase"] == "generator" for h in out["stage1"]) == 2  # 1 generator step per 2 student steps
    assert seen == list(range(1, 8))
    assert len(first) == 4 and len(out["stage2"]) == 3
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_annealing_text_losses_are_the_schedule_then_cross_entropy_update_by_update():
    """Each recorded loss recomputed from the student as it was before that update: stage I the annealing
    regression at that update's phi, stage II cross-entropy on the labels (a fresh epoch order)."""
    teacher, student = still_classifier(0), still_classifier(1)
    teacher.requires_grad_(True)  # not frozen by the caller: the trainer must still leave it alone
    t_before = state(teacher)
    text, labels = toy_text(24), np.arange(24) % 2
    snapshots = [copy.deepcopy(student)]
    seen = []

    def after(u):
        seen.append(u)
        snapshots.append(copy.deepcopy(student))

    seed = 2
    out = annealing.train_annealing_text(teacher, student, text, labels, updates=7, stage1_share=0.5, tau_max=3,
                                         batch_size=8, lr=1e-3, seed=seed, after_step=after)
    assert seen == list(range(1, 8)) and len(out["stage1"]) == 4 and len(out["stage2"]) == 3
    assert all(isinstance(v, float) and np.isfinite(v) and v > 0 for v in out["stage1"] + out["stage2"])
    z_t = predict(teacher, text)
    phis = annealing.stage1_phis(4, 3)
    assert phis == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1.0])
    # 3 batches per epoch: stage I takes epochs 0 and 1 (4 batches), stage II starts at epoch 2
    batches = [b for e in (0, 1) for b in padded_batches(text, 8, shuffle=True, seed=seed * 1000 + e)][:4]
    batches += list(padded_batches(text, 8, shuffle=True, seed=seed * 1000 + 2))
    y = torch.as_tensor(labels)
    with torch.no_grad():
        for u, (rows, batch) in enumerate(batches):
            logits = snapshots[u].eval()(batch["input_ids"], batch["attention_mask"])
            rows = torch.as_tensor(rows)
            if u < 4:
                expected = ((logits - phis[u] * z_t[rows]) ** 2).sum(-1).mean().item()
                assert out["stage1"][u] == pytest.approx(expected, rel=1e-5), u
            else:
                assert out["stage2"][u - 4] == pytest.approx(F.cross_entropy(logits, y[rows]).item(), rel=1e-5), u
    assert all(torch.equal(v, t_before[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(state(snapshots[0]).values(), state(student).values()))


def test_annealing_text_with_the_whole_budget_in_stage_one_and_frozen_embeddings():
    teacher, student = classifier(0), classifier(1)
    text, labels = toy_text(20), np.arange(20) % 2
    emb = state(student.encoder.embeddings)
    seen = []
    out = annealing.train_annealing_text(teacher, student, text, labels, updates=5, stage1_share=1.0, tau_max=10,
                                         batch_size=8, lr=1e-3, seed=0, freeze_embeddings=True,
                                         after_step=seen.append)
    assert seen == [1, 2, 3, 4, 5] and len(out["stage1"]) == 5 and out["stage2"] == []
    assert all(torch.equal(v, emb[k]) for k, v in student.encoder.embeddings.state_dict().items())
    assert all(p.requires_grad for p in student.parameters())  # given back after training


def test_annealing_mate_records_stage_one_and_trains_student_and_generator_not_teacher():
    teacher, student, gen = classifier(0), classifier(1), generator()
    teacher.requires_grad_(True)
    t_before, s_before, g_before = state(teacher), state(student), state(gen)
    text, labels = toy_text(24), np.arange(24) % 2
    seen = []
    out = annealing.train_annealing_mate(teacher, student, gen, text, labels, mask_token_id=MASK, updates=9,
                                         stage1_share=0.6, tau_max=4, n_gen=2, n_student=3, gen_lr=1e-3,
                                         batch_size=8, lr=1e-3, seed=1, never_write=range(55, 60),
                                         after_step=seen.append)
    first, second = annealing.stage_updates(9, 0.6)
    assert (first, second) == (5, 4) and seen == list(range(1, 10))
    phases = [h["phase"] for h in out["stage1"]]
    assert phases == ["generator"] * 2 + ["student"] * 3 + ["generator"] * 2 + ["student"] * 2
    students = [h for h in out["stage1"] if h["phase"] == "student"]
    assert [h["phi"] for h in students] == pytest.approx(annealing.stage1_phis(5, 4))
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in students)
    assert all(np.isfinite(h["divergence"]) for h in out["stage1"] if h["phase"] == "generator")
    assert len(out["stage2"]) == second
    assert all(torch.equal(v, t_before[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert not all(torch.equal(v, s_before[k]) for k, v in student.state_dict().items())
    assert not all(torch.equal(v, g_before[k]) for k, v in gen.state_dict().items())
    assert not student.training and not gen.training
