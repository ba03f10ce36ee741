"""Lesson 08's generation, training and scoring on a tiny random Llama: seeded continuations, teacher-forced
likelihoods by hand, every method's training loop, held-out perplexity, and the mode-covering toy."""
import math

import numpy as np
import pytest
import torch

from _lm_support import tiny_llama
from kdtutorial.lm import decoders, divergences, generation, lmdistil, lmeval, modes
from kdtutorial.lm.lmtext import Windows

PROMPT, CONT = 4, 6


def random_windows(n=8, seed=0, prompt=PROMPT, continuation=CONT):
    g = torch.Generator().manual_seed(seed)
    return Windows(torch.randint(3, 64, (n, prompt + continuation), generator=g), prompt)


@pytest.fixture(scope="module")
def prompts():
    return random_windows(5, seed=1).prompts()


# --- continuations ----------------------------------------------------------------------------------------------

def test_sampled_continuations_follow_the_seed(teacher, prompts):
    a = generation.continue_prompts(teacher, prompts, CONT, sample=True, seed=3)
    b = generation.continue_prompts(teacher, prompts, CONT, sample=True, seed=3)
    c = generation.continue_prompts(teacher, prompts, CONT, sample=True, seed=4)
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    assert torch.equal(a.prompts(), prompts) and a.prompt == PROMPT and a.continuation == CONT


def test_continuations_leave_the_global_generator_and_the_mode_alone(prompts):
    model = tiny_llama(0).train()
    torch.manual_seed(9)
    expected = torch.rand(2)
    torch.manual_seed(9)
    generation.continue_prompts(model, prompts, 3, sample=True, seed=0)
    assert torch.equal(torch.rand(2), expected)
    assert model.training  # put back in training mode


def greedy_by_hand(model, prompts, new_tokens, banned):
    ids = prompts.clone()
    with torch.no_grad():
        for _ in range(new_tokens):
            last = decoders.lm_logits(model, ids)[:, -1].clone()
            last[:, banned] = -float("inf")
            ids = torch.cat([ids, last.argmax(-1, keepdim=True)], 1)
    return ids


def test_greedy_is_deterministic_and_suppresses_the_end_of_sequence(prompts):
    """EOS is made the model's first greedy choice for row 0: the continuation must take the next best instead."""
    model = tiny_llama(0)
    with torch.no_grad():
        first = decoders.lm_logits(model, prompts)[:, -1]
    eos = int(first[0].argmax())
    model.config.eos_token_id = model.generation_config.eos_token_id = eos
    greedy = generation.continue_prompts(model, prompts, 8, sample=False)
    assert greedy.ids.shape == (5, PROMPT + 8)  # exactly prompt + new tokens
    assert not (greedy.ids[:, PROMPT:] == eos).any()
    assert int(greedy.ids[0, PROMPT]) == int(first[0].topk(2).indices[1])  # the second best
    assert torch.equal(greedy.ids, generation.continue_prompts(model, prompts, 8, sample=False, seed=99).ids)
    assert torch.equal(greedy.ids, greedy_by_hand(model, prompts, 8, eos))  # cached generation = recomputation
    assert torch.equal(greedy.ids, generation.continue_prompts(model, prompts, 8, sample=False, batch_size=2).ids)
    # a near-zero sampling temperature is greedy
    cold = generation.continue_prompts(model, prompts, 8, sample=True, temperature=1e-4, seed=1)
    assert torch.equal(cold.ids, greedy.ids)


@pytest.mark.parametrize("new_tokens, temperature, name", [(0, 1.0, "new_tokens"), (2.0, 1.0, "new_tokens"),
                                                          (3, 0.0, "temperature")])
def test_continuations_refuse_bad_arguments(teacher, prompts, new_tokens, temperature, name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        generation.continue_prompts(teacher, prompts, new_tokens, sample=True, temperature=temperature)


def test_sequence_log_likelihood_is_the_teacher_forced_mean_log_prob(teacher):
    windows = random_windows(6, seed=2)
    with torch.no_grad():
        logp = torch.log_softmax(teacher(windows.ids).logits.double(), -1)
    by_hand = torch.tensor([
        np.mean([logp[i, t - 1, windows.ids[i, t]].item() for t in range(PROMPT, PROMPT + CONT)])
        for i in range(len(windows))], dtype=torch.float64)
    ours = generation.sequence_log_likelihood(teacher, windows)
    assert ours.shape == (6,) and torch.allclose(ours.double(), by_hand, atol=1e-5)
    assert torch.allclose(generation.sequence_log_likelihood(teacher, windows, batch_size=4), ours)


def test_generation_speed_counts_generated_tokens(teacher, prompts):
    assert generation.generation_speed(teacher, prompts, 3) > 0


# --- settings -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, name", [("beta", -0.1, "BETA"), ("beta", 1.5, "BETA"), ("lam", 1.01, "LAM"),
                                                ("lam", -1, "LAM"), ("beta", "0.5", "BETA"), ("top_k", 0, "TOP_K"),
                                                ("steps", 0, "STEPS"), ("batch_size", 2.0, "BATCH_SIZE")])
def test_lm_setting_refuses_values_out_of_range(field, value, name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        lmdistil.LMSetting(**{field: value})


def test_lm_setting_accepts_the_ends():
    for beta in (0, 1.0):
        assert lmdistil.LMSetting(beta=beta, lam=beta).beta == beta


# --- training -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train():
    return random_windows(8, seed=5)


@pytest.fixture(scope="module")
def cached(teacher, train):
    """The teacher's top-8 logits and greedy continuations of ``train``, made once as the lesson does."""
    return lmdistil.teacher_top_k(teacher, train, 8, batch_size=3), lmdistil.teacher_continuations(teacher, train)


SETTING = dict(steps=3, batch_size=4, lr=1e-3, top_k=8, lam=0.5, beta=0.5)


def test_the_cached_teacher_targets(teacher, train, cached):
    top_k, teacher_text = cached
    assert top_k.values.shape == (8, PROMPT + CONT - 1, 8) and top_k.vocab_size == 64
    with torch.no_grad():
        logits = decoders.lm_logits(teacher, train.ids)[:, :-1]
    assert torch.equal(top_k.indices.long(), logits.topk(8, dim=-1).indices)
    assert torch.equal(teacher_text.prompts(), train.prompts()) and teacher_text.ids.shape == train.ids.shape
    assert torch.equal(teacher_text.ids, generation.continue_prompts(teacher, train.prompts(), CONT, sample=False).ids)


@pytest.mark.parametrize("method", lmdistil.LM_METHODS)
def test_every_method_trains_the_student_only(teacher, train, cached, method):
    top_k, teacher_text = cached
    student = decoders.layer_copied_decoder(teacher, [0, 3])
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    history = lmdistil.train_lm_student(method, student, teacher, train, lmdistil.LMSetting(**SETTING), seed=0,
                                        top_k=top_k, teacher_text=teacher_text)
    assert len(history["losses"]) == 3 and all(math.isfinite(x) and x >= 0 for x in history["losses"])
    assert history["seconds"] > 0
    if method != "on-policy JSD":  # (on-policy steps are drawn: see the seeded test below)
        assert history["on_policy_steps"] == 0
    assert all(torch.equal(t_before[k], v) for k, v in teacher.state_dict().items())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(s_before[k], v)]
    assert changed and "model.embed_tokens.weight" not in changed  # frozen embeddings stay
    assert not student.training and not teacher.training


def on_policy_run(teacher, train, seed, steps=4):
    student = decoders.layer_copied_decoder(teacher, [0, 3])
    return lmdistil.train_lm_student("on-policy JSD", student, teacher, train,
                                     lmdistil.LMSetting(**{**SETTING, "steps": steps}), seed=seed)


def test_on_policy_jsd_repeats_with_its_seed(teacher, train):
    first = on_policy_run(teacher, train, seed=1)
    again = on_policy_run(teacher, train, seed=1)
    assert 0 < first["on_policy_steps"] < 4  # this seed mixes sampled and real continuations
    assert first["losses"] == again["losses"] and first["on_policy_steps"] == again["on_policy_steps"]
    other = on_policy_run(teacher, train, seed=2)
    assert other["losses"] != first["losses"]


def test_word_level_kd_of_a_full_copy_starts_at_zero(teacher, train):
    copy = decoders.layer_copied_decoder(teacher, [0, 1, 2, 3])
    history = lmdistil.train_lm_student("word-level KD", copy, teacher, train, lmdistil.LMSetting(**SETTING), seed=0)
    assert abs(history["losses"][0]) < 1e-6
    smaller = decoders.layer_copied_decoder(teacher, [0, 3])
    history = lmdistil.train_lm_student("word-level KD", smaller, teacher, train, lmdistil.LMSetting(**SETTING),
                                        seed=0)
    assert history["losses"][0] > 1e-3


def test_a_method_needs_its_cached_targets(teacher, train):
    student = decoders.layer_copied_decoder(teacher, [0, 3])
    setting = lmdistil.LMSetting(**SETTING)
    with pytest.raises(ValueError, match="teacher's continuations"):
        lmdistil.train_lm_student("sequence-level KD", student, teacher, train, setting, seed=0)
    with pytest.raises(ValueError, match="cached top-k logits"):
        lmdistil.train_lm_student("top-k KD", student, teacher, train, setting, seed=0)
    with pytest.raises(ValueError, match="method"):
        lmdistil.train_lm_student("dark knowledge", student, teacher, train, setting, seed=0)


def batches_seen(monkeypatch, teacher, n, batch_size, steps, seed=0):
    """The window rows of every step (row i of the windows holds token i), with the loss replaced by a no-op."""
    seen = []

    def fake_loss(method, student, teacher, ids, mask, setting, top_k=None):
        seen.append(ids[:, 0].tolist())
        return next(p for p in student.parameters() if p.requires_grad).sum() * 0.0

    monkeypatch.setattr(lmdistil, "method_loss", fake_loss)
    windows = Windows(torch.arange(n)[:, None].repeat(1, PROMPT + CONT), PROMPT)
    student = decoders.layer_copied_decoder(teacher, [0])
    setting = lmdistil.LMSetting(**{**SETTING, "steps": steps, "batch_size": batch_size})
    lmdistil.train_lm_student("supervised CE", student, teacher, windows, setting, seed=seed)
    return seen


def test_each_epoch_is_a_new_order_of_distinct_windows(monkeypatch, teacher):
    # 10 windows in batches of 4: two batches an epoch (the last two windows wait for the next order)
    seen = batches_seen(monkeypatch, teacher, 10, 4, 6)
    epochs = [seen[i] + seen[i + 1] for i in range(0, 6, 2)]
    assert all(len(set(e)) == 8 for e in epochs)  # no window twice within an epoch
    assert len({tuple(e) for e in epochs}) == 3  # a new order every epoch
    # 8 windows in batches of 4: whole epochs, still reshuffled
    seen = batches_seen(monkeypatch, teacher, 8, 4, 4)
    assert sorted(seen[0] + seen[1]) == sorted(seen[2] + seen[3]) == list(range(8))
    assert seen[:2] != seen[2:]
    # the order follows the seed
    assert batches_seen(monkeypatch, teacher, 8, 4, 4) == seen
    assert batches_seen(monkeypatch, teacher, 8, 4, 4, seed=1) != seen


# --- scores -----------------------------------------------------------------------------------------------------

def test_perplexity_is_exp_of_the_mean_nll_of_the_continuations(teacher):
    windows = random_windows(7, seed=6)
    with torch.no_grad():
        logp = torch.log_softmax(teacher(windows.ids).logits.double(), -1)
    nll = [-logp[i, t - 1, windows.ids[i, t]].item() for i in range(7) for t in range(PROMPT, PROMPT + CONT)]
    expected = math.exp(np.mean(nll))
    assert lmeval.perplexity(teacher, windows) == pytest.approx(expected, rel=1e-5)
    assert lmeval.perplexity(teacher, windows, batch_size=3) == pytest.approx(expected, rel=1e-5)  # token-weighted
    assert 1 < expected < 64 * 3  # a random model: near the vocabulary size


def test_token_kl_to_the_teacher(teacher):
    windows = random_windows(5, seed=7)
    assert lmeval.token_kl_to_teacher(teacher, teacher, windows) == (0.0, 0.0)
    student = decoders.layer_copied_decoder(teacher, [0, 3]).eval()
    fwd, rev = lmeval.token_kl_to_teacher(student, teacher, windows, batch_size=2)
    with torch.no_grad():
        s = decoders.lm_logits(student, windows.ids)[:, :-1]
        t = decoders.lm_logits(teacher, windows.ids)[:, :-1]
    mask = windows.target_mask()
    assert fwd == pytest.approx(divergences.token_forward_kl(s, t, mask).item(), rel=1e-5)
    assert rev == pytest.approx(divergences.token_reverse_kl(s, t, mask).item(), rel=1e-5)
    assert fwd > 0 and rev > 0  # (near-uniform random models: the two directions agree to second order)


def test_score_lm_gives_every_number_of_the_table(teacher):
    heldout, wiki = random_windows(4, seed=8), Windows(random_windows(3, seed=9).ids, 1)
    scores = lmeval.score_lm(teacher, teacher, heldout, wiki, seed=0)
    assert set(scores) == {"ppl_reviews", "ppl_wikitext", "nll_reviews", "nll_wikitext", "kl_forward", "kl_reverse",
                           "teacher_logp_of_samples"}
    assert scores["kl_forward"] == scores["kl_reverse"] == 0.0
    assert scores["ppl_reviews"] == pytest.approx(lmeval.perplexity(teacher, heldout))
    assert scores["nll_reviews"] == pytest.approx(math.log(scores["ppl_reviews"]))  # nats per token
    assert scores["nll_wikitext"] == pytest.approx(math.log(scores["ppl_wikitext"]))
    samples = generation.continue_prompts(teacher, heldout.prompts(), CONT, sample=True, seed=0)
    assert scores["teacher_logp_of_samples"] == pytest.approx(
        generation.sequence_log_likelihood(teacher, samples).mean().item())


# --- the mode-covering toy --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fits():
    return {beta: modes.fit_one_mode(beta) for beta in (0.0, 1.0)}


def test_forward_kl_covers_both_modes_and_reverse_kl_seeks_one(fits):
    cover, seek = fits[0.0], fits[1.0]
    assert cover["sigma"] > seek["sigma"]
    assert min(abs(seek["mu"] - (-2.0)), abs(seek["mu"] - 2.5)) < 0.5
    assert abs(cover["mu"] - 0.025) < 0.3  # the mixture's mean, between the modes: 0.55 * -2 + 0.45 * 2.5
    grid = seek["grid"]
    side = grid < 0.25 if seek["mu"] < 0 else grid > 0.25
    assert seek["fit"][side].sum() > 0.95 and cover["fit"][grid < 0.25].sum() < 0.7  # one mode vs both


def test_the_forward_kl_fit_matches_the_targets_moments(fits):
    """Gaussians on the grid are an exponential family in (x, x^2): the forward-KL optimum matches those moments."""
    f = fits[0.0]
    grid, p, q = f["grid"], f["target"], f["fit"]
    assert np.isclose(p.sum(), 1) and np.isclose(q.sum(), 1)
    assert abs((grid * q).sum() - (grid * p).sum()) < 0.02
    assert abs((grid**2 * q).sum() - (grid**2 * p).sum()) < 0.05


def test_reverse_kl_has_a_broad_local_minimum_from_a_wide_middle_start():
    broad = modes.fit_one_mode(1.0, start_mu=0.3, start_sigma=1.0)
    assert broad["sigma"] > 2.0 and 0.5 < broad["mu"] < 1.5
    assert broad["loss"] > modes.fit_one_mode(1.0)["loss"]  # worse than the mode the default start finds


def test_the_mode_fits_plot(fits):
    from matplotlib.figure import Figure  # no pyplot: the session's backend is left alone

    ax = Figure().subplots()
    modes.plot_mode_fits(ax, [fits[0.0], fits[1.0]])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "target p (two modes)" and labels[1].startswith("forward KL (beta 0)")
    assert labels[2].startswith("reverse KL (beta 1)") and len(ax.lines) == 2
