"""MATE-KD (``kdtutorial.text.matekd``): masking, Gumbel-softmax, embedding mixing, both steps, the training loop.

Teacher and student are tiny random BERT sentence classifiers (vocabulary 60, width 32) and the generator a
one-layer masked LM of the same vocabulary, all built in the test on fabricated ids; only the last test uses the
real MiniLM tokenizer (with 30522-word tiny models). Loss values are checked in float64 against formulas written
out below. Nothing uses the network.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from _support import tiny_bert
from kdtutorial.text import matekd, tokens
from kdtutorial.text.finetuning import SentenceClassifier

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4  # toy vocabulary: words are 5..59
VOCAB = 60
SPECIAL = frozenset({PAD, UNK, CLS, SEP, MASK})

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def classifier(seed: int, vocab: int = VOCAB, n_classes: int = 3, scale: float = 20.0) -> SentenceClassifier:
    """A random classifier in eval mode; the head is scaled up so teacher and student clearly disagree."""
    model = SentenceClassifier(tiny_bert(vocab, seed), n_classes=n_classes, dropout=0.0)
    with torch.no_grad():
        model.head.weight.mul_(scale)
    return model.eval()


def generator(seed: int = 7, vocab: int = VOCAB) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37)
    return BertForMaskedLM(config).eval()


def toy_text(n: int = 24, seed: int = 0) -> tokens.TokenizedText:
    rng = np.random.default_rng(seed)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(3, 9)).tolist(), SEP] for _ in range(n)]
    return tokens.TokenizedText(ids=ids, pad_id=PAD, special_ids=SPECIAL)


def toy_batch(n: int = 6) -> dict:
    return tokens.pad_rows(toy_text(n), range(n))


def masking(**kwargs) -> matekd.Masking:
    return matekd.Masking(MASK, SPECIAL, SPECIAL, **kwargs)


def seeded(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def adversarial_kl(gen, teacher, student, batch, mask_cfg, seed: int = 5, tau: float = 1.0) -> float:
    with torch.no_grad():
        t, s = matekd.perturbed_logits(gen, teacher, student, batch["input_ids"], batch["attention_mask"],
                                       mask_cfg, noise_generator=seeded(seed))
    return matekd.divergence(t, s, tau).item()


def reference_kd(t, s, tau: float) -> float:
    """``tau**2 * sum_k p_t (log p_t - log p_s) / B`` written out with math.log, in float64."""
    total = 0.0
    for t_row, s_row in zip(t.tolist(), s.tolist()):
        zt = [math.exp(v / tau) for v in t_row]
        zs = [math.exp(v / tau) for v in s_row]
        pt = [v / sum(zt) for v in zt]
        ps = [v / sum(zs) for v in zs]
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    return tau**2 * total / len(t)


# --- weights and arguments -------------------------------------------------------------------------------------

def test_loss_weights_of_both_forms():
    assert matekd.student_loss_weights("paper", lam=0.3) == pytest.approx({"ce": 0.7, "kd_clean": 0.3,
                                                                            "kd_perturbed": 0.3})
    assert matekd.student_loss_weights("release", lam=0.9) == pytest.approx({"ce": 1 / 3, "kd_clean": 1 / 3,
                                                                              "kd_perturbed": 1 / 3})


def test_bad_arguments_raise_clear_errors():
    batch = toy_batch()
    with pytest.raises(ValueError, match="unknown form 'hinton'"):
        matekd.student_loss_weights("hinton")
    with pytest.raises(ValueError, match=r"lam .* must be in \[0, 1\]"):
        matekd.student_loss_weights("paper", lam=1.5)
    for p in (0.0, -0.1, 1.2):
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            matekd.choose_positions(batch["input_ids"], batch["attention_mask"], SPECIAL, p)
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            masking(p=p)
    with pytest.raises(ValueError, match="n_student must be >= 1"):
        matekd.schedule_phases(10, n_gen=10, n_student=0)
    with pytest.raises(ValueError, match="n_gen must be >= 0"):
        matekd.schedule_phases(10, n_gen=-1)
    with pytest.raises(ValueError, match="Gumbel temperature"):
        matekd.gumbel_softmax(torch.zeros(2, 5), tau=0.0)
    text, labels = toy_text(8), np.zeros(8, dtype=int)
    kwargs = dict(mask_token_id=MASK, max_steps=2, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="n_student must be >= 1"):
        matekd.train_mate_kd(classifier(1), classifier(2), generator(), text, labels, n_student=0, **kwargs)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        matekd.train_mate_kd(classifier(1), classifier(2), generator(), text, labels, p=0.0, **kwargs)
    with pytest.raises(ValueError, match="unknown form"):
        matekd.train_mate_kd(classifier(1), classifier(2), generator(), text, labels, form="both", **kwargs)


def test_schedule_alternates_generator_and_student_steps():
    phases = matekd.schedule_phases(230)
    assert phases[:10] == ["generator"] * 10 and phases[10:110] == ["student"] * 100
    assert phases[110:120] == ["generator"] * 10 and phases.count("generator") == 30
    assert matekd.schedule_phases(5, n_gen=0, n_student=2) == ["student"] * 5


def test_steps_with_generator_gives_the_student_exactly_its_steps():
    for n_gen, n_student in [(10, 100), (1, 10), (3, 4), (0, 7), (30, 100)]:
        for student_steps in [0, 1, 9, 10, 11, 99, 100, 101, 250]:
            total = matekd.steps_with_generator(student_steps, n_gen, n_student)
            phases = matekd.schedule_phases(total, n_gen, n_student)
            assert phases.count("student") == student_steps, (n_gen, n_student, student_steps)
            assert not phases or phases[-1] == "student"  # no generator step after the student's last one
    assert matekd.steps_with_generator(16, 1, 10) == 18  # g s*10 g s*6
    with pytest.raises(ValueError, match="student_steps must be >= 0"):
        matekd.steps_with_generator(-1)
    with pytest.raises(ValueError, match="n_student must be >= 1"):
        matekd.steps_with_generator(5, 1, 0)


# --- masking, Gumbel-softmax, mixing ---------------------------------------------------------------------------

def test_choose_positions_skips_special_tokens_and_padding():
    rng = np.random.default_rng(1)
    ids = [[CLS, *rng.integers(5, VOCAB, rng.integers(1, 20)).tolist(), UNK, SEP] for _ in range(300)]
    ids += [[CLS, SEP], [CLS, UNK, SEP]]  # rows with nothing to rewrite
    batch = tokens.pad_rows(tokens.TokenizedText(ids, PAD, SPECIAL), range(len(ids)))
    input_ids, attention = batch["input_ids"], batch["attention_mask"]
    eligible = attention.bool() & ~torch.isin(input_ids, torch.tensor(sorted(SPECIAL)))
    chosen = matekd.choose_positions(input_ids, attention, SPECIAL, 0.3, seeded(0))
    assert chosen.dtype == torch.bool and not (chosen & ~eligible).any()
    assert chosen[:300].any(dim=1).all() and not chosen[300:].any()
    assert 0.27 < chosen.sum().item() / eligible.sum().item() < 0.36  # p plus the one-per-row guarantee
    rare = matekd.choose_positions(input_ids, attention, SPECIAL, 1e-9, seeded(0))
    assert rare.sum(dim=1).tolist() == [1] * 300 + [0, 0]  # exactly the guaranteed one per sentence
    assert torch.equal(matekd.choose_positions(input_ids, attention, SPECIAL, 1.0, seeded(0)), eligible)
    assert torch.equal(chosen, matekd.choose_positions(input_ids, attention, SPECIAL, 0.3, seeded(0)))


def test_gumbel_softmax_samples_the_softmax_and_never_a_banned_token():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0, 3.0]]).expand(20000, 5)
    banned = {4}
    hard = matekd.gumbel_softmax(logits, hard=True, generator=seeded(0), banned_ids=banned)
    assert set(hard.unique().tolist()) == {0.0, 1.0} and torch.equal(hard.sum(-1), torch.ones(20000))
    assert hard[:, 4].sum() == 0
    expected = torch.softmax(logits[0].index_fill(0, torch.tensor([4]), float("-inf")), 0)
    assert torch.allclose(hard.mean(0), expected, atol=0.015)  # the Gumbel-max trick samples softmax(logits)
    soft = matekd.gumbel_softmax(logits, tau=0.5, hard=False, generator=seeded(0), banned_ids=banned)
    assert torch.allclose(soft.sum(-1), torch.ones(20000)) and soft[:, 4].abs().sum() == 0
    assert torch.equal(hard.argmax(-1), soft.argmax(-1))  # same noise, same winner at any temperature


def test_straight_through_forward_is_one_hot_and_backward_is_soft():
    torch.manual_seed(0)
    logits, weights = torch.randn(7, 11), torch.randn(7, 11)
    grads = {}
    for hard in (True, False):
        x = logits.clone().requires_grad_(True)
        out = matekd.gumbel_softmax(x, tau=0.7, hard=hard, generator=seeded(3))
        (weights * out).sum().backward()
        grads[hard] = x.grad
        if hard:
            assert torch.equal(out.detach(), torch.nn.functional.one_hot(out.argmax(-1), 11).to(out.dtype))
    assert torch.allclose(grads[True], grads[False]) and grads[True].abs().sum() > 0


def test_mixed_embeddings_keep_unchosen_tokens_and_embed_chosen_ones():
    batch, emb = toy_batch(), torch.nn.Embedding(VOCAB, 8)
    ids = batch["input_ids"]
    positions = matekd.choose_positions(ids, batch["attention_mask"], SPECIAL, 0.4, seeded(1))
    n = int(positions.sum())
    hard = matekd.gumbel_softmax(torch.randn(n, VOCAB), generator=seeded(2))
    mixed = matekd.mix_embeddings(emb, ids, positions, hard)
    assert torch.equal(mixed[~positions], emb(ids)[~positions])
    assert torch.equal(mixed[positions], emb.weight[hard.argmax(-1)])
    soft = torch.softmax(torch.randn(n, VOCAB), -1)
    assert torch.allclose(matekd.mix_embeddings(emb.weight, ids, positions, soft)[positions], soft @ emb.weight)


def test_classifier_accepts_inputs_embeds():
    model, batch = classifier(1), toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    embeds = model.encoder.get_input_embeddings()(ids)
    assert torch.allclose(model(inputs_embeds=embeds, attention_mask=mask), model(ids, mask), atol=1e-6)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(ids, mask, inputs_embeds=embeds)
    with pytest.raises(ValueError, match="exactly one"):
        model(attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask is required"):
        model(ids)


def test_constant_rewrite_feeds_token_ids_that_give_the_mixed_embeddings_logits():
    gen, teacher, student, batch = generator(), classifier(1), classifier(2), toy_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    mixed = matekd.perturbed_logits(gen, teacher, student, ids, mask, masking(), noise_generator=seeded())
    assert all(x.requires_grad for x in mixed)  # the inputs_embeds path, differentiable in G
    with torch.no_grad():
        by_ids = matekd.perturbed_logits(gen, teacher, student, ids, mask, masking(), noise_generator=seeded())
    as_constant = matekd.perturbed_logits(gen, teacher, student, ids, mask, masking(), noise_generator=seeded(),
                                          grad_to_generator=False)
    assert not as_constant[0].requires_grad and as_constant[1].requires_grad  # the student's graph only
    for a, b, c in zip(mixed, by_ids, as_constant):
        assert torch.allclose(a.detach(), b, atol=1e-6) and torch.allclose(b, c.detach(), atol=1e-6)


# --- the two steps ---------------------------------------------------------------------------------------------

def test_gradients_reach_every_generator_parameter_through_the_divergence():
    gen, teacher, student, batch = generator(), classifier(1), classifier(2), toy_batch()
    t, s = matekd.perturbed_logits(gen, teacher, student, batch["input_ids"], batch["attention_mask"], masking(),
                                   noise_generator=seeded())
    matekd.divergence(t, s, tau=2.0).backward()
    for name, param in gen.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_kd_terms_match_a_float64_reference(double_precision):
    gen, teacher, student, batch = generator(), classifier(1), classifier(2), toy_batch()
    ids, mask, labels, tau = batch["input_ids"], batch["attention_mask"], torch.tensor([0, 1, 2, 0, 1, 2]), 2.0
    with torch.no_grad():
        t_clean, s_clean = teacher(ids, mask), student(ids, mask)
        t_adv, s_adv = matekd.perturbed_logits(gen, teacher, student, ids, mask, masking(), noise_generator=seeded())
    assert t_clean.dtype == torch.float64
    assert matekd.divergence(t_clean, s_clean, tau).item() == pytest.approx(reference_kd(t_clean, s_clean, tau) / 4,
                                                                            rel=1e-10)
    weights = matekd.student_loss_weights("paper", lam=0.6)
    parts = matekd.student_step(student, teacher, batch, labels, torch.optim.SGD(student.parameters(), lr=0.0),
                                weights, generator_model=gen, masking=masking(), tau=tau, noise_generator=seeded())
    assert parts["kd_clean"] == pytest.approx(reference_kd(t_clean, s_clean, tau), rel=1e-10)
    assert parts["kd_perturbed"] == pytest.approx(reference_kd(t_adv, s_adv, tau), rel=1e-10)
    ce = -sum(math.log(math.exp(r[y]) / sum(math.exp(v) for v in r)) for r, y in zip(s_clean.tolist(), labels)) / 6
    assert parts["ce"] == pytest.approx(ce, rel=1e-10)
    assert parts["loss"] == pytest.approx(0.4 * ce + 0.6 * parts["kd_clean"] + 0.6 * parts["kd_perturbed"], rel=1e-10)


@pytest.mark.parametrize("hard, lr, steps", [(False, 1e-2, 1), (True, 3e-2, 5)])
def test_maximisation_step_increases_the_divergence(hard, lr, steps):
    gen, teacher, student, batch = generator(), classifier(1), classifier(2), toy_batch()
    cfg = masking(hard=hard)
    before, teacher0, student0, gen0 = adversarial_kl(gen, teacher, student, batch, cfg), state(teacher), \
        state(student), state(gen)
    optimiser = torch.optim.Adam(gen.parameters(), lr=lr)
    for _ in range(steps):
        reported = matekd.generator_step(gen, teacher, student, batch, optimiser, cfg, noise_generator=seeded())
    after = adversarial_kl(gen, teacher, student, batch, cfg)
    assert after > before * 1.05, (before, after)
    if steps == 1:
        assert reported == pytest.approx(before, rel=1e-5)  # the divergence before the update
    assert same(teacher0, state(teacher)) and same(student0, state(student)) and not same(gen0, state(gen))
    assert all(p.grad is None for p in [*teacher.parameters(), *student.parameters()])


def test_minimisation_step_reduces_the_divergence():
    gen, teacher, student, batch = generator(), classifier(1), classifier(2), toy_batch()
    cfg, labels = masking(), torch.tensor([0, 1, 2, 0, 1, 2])
    ids, mask = batch["input_ids"], batch["attention_mask"]

    def clean_kl():
        with torch.no_grad():
            return matekd.divergence(teacher(ids, mask), student(ids, mask)).item()

    before = (adversarial_kl(gen, teacher, student, batch, cfg), clean_kl())
    teacher0, gen0 = state(teacher), state(gen)
    optimiser = torch.optim.Adam(student.parameters(), lr=1e-2)
    weights = matekd.student_loss_weights("release")
    for _ in range(5):
        matekd.student_step(student, teacher, batch, labels, optimiser, weights, generator_model=gen, masking=cfg,
                            noise_generator=seeded())
    after = (adversarial_kl(gen, teacher, student, batch, cfg), clean_kl())
    assert after[0] < 0.8 * before[0] and after[1] < 0.8 * before[1], (before, after)
    assert same(teacher0, state(teacher)) and same(gen0, state(gen))
    assert all(p.grad is None for p in [*teacher.parameters(), *gen.parameters()])


def test_student_step_without_kd_weights_never_runs_the_teacher():
    gen, teacher, student, batch = generator(), classifier(1), classifier(2), toy_batch()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    optimiser = torch.optim.SGD(student.parameters(), lr=0.0)
    parts = matekd.student_step(student, teacher, batch, labels, optimiser, matekd.student_loss_weights("paper", 0.0),
                                generator_model=gen, masking=masking(), noise_generator=seeded())
    assert calls == [] and set(parts) == {"ce", "loss"} and parts["loss"] == pytest.approx(parts["ce"])
    matekd.student_step(student, teacher, batch, labels, optimiser, matekd.student_loss_weights("paper", 0.5),
                        generator_model=gen, masking=masking(), noise_generator=seeded())
    assert len(calls) == 2  # clean and rewritten batch


# --- end to end ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("adversarial, augment", [(True, True), (False, True), (True, False)])
def test_train_mate_kd_runs_the_schedule(adversarial, augment):
    teacher, student, gen, text = classifier(1), classifier(2), generator(), toy_text(24)
    labels = np.arange(24) % 3
    teacher0, student0, gen0 = state(teacher), state(student), state(gen)
    history = matekd.train_mate_kd(teacher, student, gen if augment else None, text, labels, mask_token_id=MASK,
                                   epochs=2, max_steps=9, n_gen=2, n_student=3, batch_size=4, gen_lr=1e-3,
                                   adversarial=adversarial, augment=augment, seed=3, progress=False)
    phases = [h["phase"] for h in history]
    expected = ["generator"] * 2 + ["student"] * 3 + ["generator"] * 2 + ["student"] * 2
    assert phases == (expected if adversarial and augment else ["student"] * 9)
    assert [h["step"] for h in history] == list(range(1, 10))
    for h in history:
        keys = {"divergence"} if h["phase"] == "generator" else {"ce", "kd_clean", "loss"} | (
            {"kd_perturbed"} if augment else set())
        assert keys <= set(h) and all(math.isfinite(h[k]) for k in keys)
        assert ("kd_perturbed" in h) == (augment and h["phase"] == "student")
    assert same(teacher0, state(teacher)) and not same(student0, state(student))
    assert same(gen0, state(gen)) == (not (adversarial and augment))
    assert not student.training and not teacher.training


def test_student_steps_are_equal_with_and_without_a_generator_and_embeddings_can_stay_frozen():
    text, labels = toy_text(10), np.arange(10) % 3
    counts = {}
    for adversarial, augment in [(True, True), (False, True), (True, False)]:
        teacher, student, gen = classifier(1), classifier(2), generator()
        emb0, gen_emb0, gen0 = state(student.encoder.embeddings), state(gen.get_input_embeddings()), state(gen)
        history = matekd.train_mate_kd(teacher, student, gen if augment else None, text, labels, mask_token_id=MASK,
                                       student_steps=7, n_gen=2, n_student=3, batch_size=4, gen_lr=1e-3,
                                       adversarial=adversarial, augment=augment, freeze_embeddings=True, seed=1,
                                       progress=False)
        phases = [h["phase"] for h in history]
        counts[adversarial, augment] = (phases.count("student"), phases.count("generator"))
        assert phases[-1] == "student"
        assert same(emb0, state(student.encoder.embeddings))  # frozen while training ...
        assert all(w.requires_grad for w in student.parameters())  # ... and trainable again afterwards
        assert same(gen_emb0, state(gen.get_input_embeddings()))  # the generator's word embeddings too, ...
        assert same(gen0, state(gen)) == (not (adversarial and augment))  # ... while its other weights learn
        assert all(w.requires_grad for w in gen.parameters())
    # MATE-KD: 13 batches of 4 drawn from 10 sentences, i.e. five passes over the data
    assert counts == {(True, True): (7, 6), (False, True): (7, 0), (True, False): (7, 0)}


def test_rewrite_examples_with_a_real_tokenizer(tok):
    vocab = tok.vocab_size
    sentences = ["a gripping and funny film", "the plot is thin and the acting flat", "it works"]
    text = tokens.tokenize(tok, sentences, max_length=16)
    gen, teacher, student = generator(vocab=vocab), classifier(1, vocab), classifier(2, vocab)
    rows = matekd.rewrite_examples(gen, teacher, student, tok, text, [0, 1, 2], mask_token_id=tok.mask_token_id,
                                   p=0.5, seed=0)
    assert [r["original"] for r in rows] == sentences
    for r in rows:
        assert 1 <= len(r["replaced"]) and all(new not in tok.all_special_tokens for _, new in r["replaced"])
        assert r["divergence"] >= 0 and r["divergence_original"] >= 0
        assert (r["rewritten"] != r["original"]) == any(old != new for old, new in r["replaced"])
        assert {old for old, _ in r["replaced"]} <= set(tok.tokenize(r["original"]))
    again = matekd.rewrite_examples(gen, teacher, student, tok, text, [0, 1, 2], mask_token_id=tok.mask_token_id,
                                    p=0.5, seed=0)
    assert again == rows  # seeded


def test_placeholder_tokens_are_never_written(tok):
    unused = matekd.unused_token_ids(tok)
    assert len(unused) == 994 and all(tok.convert_ids_to_tokens(i).startswith("[unused") for i in unused)
    assert not unused & set(tok.all_special_ids) and tok.convert_tokens_to_ids("film") not in unused
    text = tokens.tokenize(tok, ["a film"], max_length=8)
    cfg = matekd.Masking.for_text(text, tok.mask_token_id, never_write=unused, p=0.3)
    assert cfg.banned_ids == unused | set(tok.all_special_ids) and cfg.special_ids == set(tok.all_special_ids)
    logits = torch.zeros(4000, tok.vocab_size)
    logits[:, sorted(unused)] = 10.0  # the generator's favourites, all forbidden
    written = matekd.gumbel_softmax(logits, generator=seeded(0), banned_ids=cfg.banned_ids).argmax(-1)
    assert not set(written.tolist()) & cfg.banned_ids
