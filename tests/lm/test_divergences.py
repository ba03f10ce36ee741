"""Lesson 08's per-token divergences against float64 references written out here with numpy (softmax, sums, means)."""
import numpy as np
import pytest
import torch

from kdtutorial.lm import divergences as dv

B, L, V = 3, 6, 11


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    t = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2
    return s, t


@pytest.fixture
def mask():
    """Row 0 all real; row 1 two left pads; row 2 a prompt of three positions: only the continuation counts."""
    real = torch.ones(B, L, dtype=torch.bool)
    real[1, :2] = False
    prompt = torch.zeros(B, L, dtype=torch.bool)
    prompt[2, :3] = True
    return real & ~prompt


def softmax(z, T=1.0):
    z = np.asarray(z, dtype=np.float64) / T
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(a, b):
    """KL(a || b) per position, summed over the last axis."""
    return (a * (np.log(a) - np.log(b))).sum(-1)


def mean_over(values, mask=None):
    return float(values.mean() if mask is None else values[np.asarray(mask)].mean())


def ref_forward(s, t, T=1.0, mask=None):
    return mean_over(kl(softmax(t, T), softmax(s, T)), mask) * T**2


def ref_reverse(s, t, T=1.0, mask=None):
    return mean_over(kl(softmax(s, T), softmax(t, T)), mask) * T**2


def ref_jsd(s, t, beta, T=1.0, mask=None):
    """GKD's JSD(beta) with p the teacher: beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q."""
    p, q = softmax(t, T), softmax(s, T)
    m = beta * p + (1 - beta) * q
    return mean_over(beta * kl(p, m) + (1 - beta) * kl(q, m), mask) * T**2


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_forward_and_reverse_kl_match_the_reference(logits, T):
    s, t = logits
    assert dv.token_forward_kl(s, t, T=T).item() == pytest.approx(ref_forward(s, t, T), rel=1e-12)
    assert dv.token_reverse_kl(s, t, T=T).item() == pytest.approx(ref_reverse(s, t, T), rel=1e-12)
    assert ref_forward(s, t, T) != pytest.approx(ref_reverse(s, t, T), rel=1e-3)  # the two directions differ


def test_kl_is_zero_between_equal_distributions(logits):
    s, _ = logits
    assert dv.token_forward_kl(s, s + 3.0).abs() < 1e-12
    assert dv.token_reverse_kl(s, s.clone()).abs() < 1e-12
    assert dv.generalized_jsd(s, s - 1.0, 0.5).abs() < 1e-12


def test_next_token_cross_entropy_is_the_mean_nll_of_the_targets(logits, mask):
    s, _ = logits
    targets = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(1))
    nll = -np.log(np.take_along_axis(softmax(s), targets.numpy()[..., None], -1))[..., 0]
    assert dv.next_token_cross_entropy(s, targets, mask).item() == pytest.approx(mean_over(nll, mask), rel=1e-12)
    assert dv.next_token_cross_entropy(s, targets).item() == pytest.approx(mean_over(nll), rel=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_jsd_ends_are_the_forward_and_the_reverse_kl_exactly(logits, mask, T):
    s, t = logits
    assert torch.equal(dv.generalized_jsd(s, t, 0.0, mask, T), dv.token_forward_kl(s, t, mask, T))
    assert torch.equal(dv.generalized_jsd(s, t, 1.0, mask, T), dv.token_reverse_kl(s, t, mask, T))
    assert torch.equal(dv.generalized_jsd(s, t, 0, mask, T), dv.token_forward_kl(s, t, mask, T))  # ints too
    assert dv.generalized_jsd(s, t, 0.0, mask, T).item() == pytest.approx(ref_forward(s, t, T, mask), rel=1e-12)
    assert dv.generalized_jsd(s, t, 1.0, mask, T).item() == pytest.approx(ref_reverse(s, t, T, mask), rel=1e-12)


@pytest.mark.parametrize("beta", [0.5, 0.1, 0.9])
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_jsd_matches_the_mixture_formula(logits, mask, beta, T):
    s, t = logits
    ours = dv.generalized_jsd(s, t, beta, mask, T).item()
    assert ours == pytest.approx(ref_jsd(s, t, beta, T, mask), rel=1e-12)
    assert 0 < ours < T**2 * np.log(2)  # JSD(1/2) <= log 2; JSD(beta) <= H(beta) <= log 2


def test_jsd_at_half_is_symmetric_in_teacher_and_student(logits):
    s, t = logits
    assert dv.generalized_jsd(s, t, 0.5).item() == pytest.approx(dv.generalized_jsd(t, s, 0.5).item(), rel=1e-12)


def test_jsd_tends_to_the_two_kls_at_its_ends(logits):
    """JSD(beta) / beta -> KL(p || q) as beta -> 0 and JSD(beta) / (1 - beta) -> KL(q || p) as beta -> 1.

    The gap is first order in beta, about beta * chi^2(p || q) / 2 on a KL value: logits of scale 1 keep chi^2 small
    enough for rel 1e-3 at beta = 1e-4 (the fixture's scale-2 logits have chi^2 ~ 170: 3e-3 there, 3e-4 at 1e-5)."""
    s, t = (z / 2 for z in logits)
    forward, reverse = dv.token_forward_kl(s, t).item(), dv.token_reverse_kl(s, t).item()
    gaps = []
    for eps in (1e-4, 1e-5):
        low, high = eps, 1 - eps
        assert dv.generalized_jsd(s, t, low).item() / low == pytest.approx(forward, rel=1e-3)
        assert dv.generalized_jsd(s, t, high).item() / (1 - high) == pytest.approx(reverse, rel=1e-3)
        gaps.append(abs(dv.generalized_jsd(s, t, low).item() / low / forward - 1))
    assert gaps[1] < gaps[0] / 5  # the gap shrinks with beta (linearly: about ten times per decade)
    # and not by accident: far from the ends the ratio is far from the KL
    assert dv.generalized_jsd(s, t, 0.5).item() / 0.5 != pytest.approx(forward, rel=0.1)


@pytest.mark.parametrize("loss", ["forward", "reverse", "jsd"])
def test_a_temperature_multiplies_the_loss_by_T_squared(logits, mask, loss):
    """Scaling both logits by T and dividing by T inside gives the T = 1 divergence; only the T**2 factor remains."""
    s, t = logits
    fn = {"forward": dv.token_forward_kl, "reverse": dv.token_reverse_kl,
          "jsd": lambda a, b, m, T: dv.generalized_jsd(a, b, 0.3, m, T)}[loss]
    for T in (2.0, 4.0):
        assert fn(s * T, t * T, mask, T).item() == pytest.approx(T**2 * fn(s, t, mask, 1.0).item(), rel=1e-10)
    ref = {"forward": ref_forward, "reverse": ref_reverse, "jsd": lambda a, b, T, m: ref_jsd(a, b, 0.3, T, m)}[loss]
    assert fn(s, t, mask, 4.0).item() == pytest.approx(ref(s, t, 4.0, mask), rel=1e-12)


@pytest.mark.parametrize("loss", ["forward", "reverse", "jsd", "top-k"])
def test_masked_positions_change_nothing_and_the_mean_is_over_kept_ones(logits, mask, loss):
    s, t = logits
    if loss == "top-k":
        fn = lambda a, b, m: dv.top_k_forward_kl(a, dv.top_k_targets(b, 4), m)  # noqa: E731
    else:
        fn = {"forward": dv.token_forward_kl, "reverse": dv.token_reverse_kl,
              "jsd": lambda a, b, m: dv.generalized_jsd(a, b, 0.5, m)}[loss]
    g = torch.Generator().manual_seed(2)
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = torch.randn(int((~mask).sum()), V, generator=g, dtype=torch.float64) * 10
    t2[~mask] = torch.randn(int((~mask).sum()), V, generator=g, dtype=torch.float64) * 10
    assert torch.equal(fn(s, t, mask), fn(s2, t2, mask))  # pads and prompt positions: exactly no effect
    # the mean over the kept positions only (they made one row of 11 positions)
    kept = fn(s[mask][None], t[mask][None], None)
    assert fn(s, t, mask).item() == pytest.approx(kept.item(), rel=1e-12)
    assert int(mask.sum()) == 6 + 4 + 3
    assert fn(s, t, mask).item() != pytest.approx(fn(s, t, None).item(), rel=1e-6)  # the mask does count


def test_the_mask_matches_the_reference_over_kept_positions(logits, mask):
    s, t = logits
    assert dv.token_forward_kl(s, t, mask).item() == pytest.approx(ref_forward(s, t, 1.0, mask), rel=1e-12)
    assert dv.token_reverse_kl(s, t, mask).item() == pytest.approx(ref_reverse(s, t, 1.0, mask), rel=1e-12)
    float_mask = mask.double()  # a 0/1 float mask is the same as the boolean one
    assert dv.token_forward_kl(s, t, float_mask).item() == pytest.approx(ref_forward(s, t, 1.0, mask), rel=1e-12)


def test_an_all_false_mask_is_refused(logits):
    s, t = logits
    none = torch.zeros(B, L, dtype=torch.bool)
    for call in (lambda: dv.token_forward_kl(s, t, none), lambda: dv.token_reverse_kl(s, t, none),
                 lambda: dv.generalized_jsd(s, t, 0.5, none), lambda: dv.next_token_cross_entropy(s, t.argmax(-1), none),
                 lambda: dv.top_k_forward_kl(s, dv.top_k_targets(t, 3), none)):
        with pytest.raises(ValueError, match="mask selects no token"):
            call()


def test_a_mask_of_the_wrong_shape_is_refused(logits):
    s, t = logits
    with pytest.raises(ValueError, match="mask has shape"):
        dv.token_forward_kl(s, t, torch.ones(B, L - 1, dtype=torch.bool))


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_top_k_with_the_whole_vocabulary_is_the_forward_kl(logits, mask, T):
    s, t = logits
    t = t.half().double()  # the targets keep fp16 logits: start from values fp16 holds exactly
    targets = dv.top_k_targets(t, V)
    ours = dv.top_k_forward_kl(s, targets, mask, T).item()
    assert ours == pytest.approx(dv.token_forward_kl(s, t, mask, T).item(), rel=1e-6)  # float32 teacher side
    assert ours == pytest.approx(ref_forward(s, t, T, mask), rel=1e-6)


@pytest.mark.parametrize("k, T", [(1, 1.0), (3, 1.0), (5, 2.0)])
def test_top_k_renormalises_the_teacher_over_its_k_largest_logits(logits, mask, k, T):
    s, t = logits
    t = t.half().double()
    tn, sn = t.numpy(), s.numpy()
    ids = np.argsort(-tn, axis=-1, kind="stable")[..., :k]  # the teacher's k largest (random logits: no ties)
    p = softmax(np.take_along_axis(tn, ids, -1), T)  # renormalised over those k
    log_q = np.log(softmax(sn, T))  # the student's full-vocabulary softmax ...
    log_q_k = np.take_along_axis(log_q, ids, -1)  # ... read at the kept ids
    ref = mean_over((p * (np.log(p) - log_q_k)).sum(-1), mask) * T**2
    assert dv.top_k_forward_kl(s, dv.top_k_targets(t, k), mask, T).item() == pytest.approx(ref, rel=1e-6)
    if k == 1:  # one kept token: the loss is the student's NLL of the teacher's argmax (times T**2)
        assert ref == pytest.approx(mean_over(-log_q_k[..., 0], mask) * T**2, rel=1e-12)


def test_top_k_targets_keep_the_largest_logits_in_small_types(logits):
    _, t = logits
    targets = dv.top_k_targets(t, 4)
    assert targets.values.dtype == torch.float16 and targets.indices.dtype == torch.int32
    assert targets.values.shape == (B, L, 4) and targets.k == 4 and targets.vocab_size == V
    assert torch.equal(targets.indices.long(), t.topk(4, dim=-1).indices)
    assert torch.equal(targets.values, t.topk(4, dim=-1).values.half())
    assert (targets.values[..., :-1] >= targets.values[..., 1:]).all()  # largest first
    row = targets[1]
    assert row.values.shape == (L, 4) and row.vocab_size == V and torch.equal(row.indices, targets.indices[1])
    assert targets.to("cpu").values is not None


def test_top_k_bytes_against_the_full_logits(logits):
    _, t = logits
    targets = dv.top_k_targets(t, 4)
    tokens = B * L
    assert targets.nbytes() == tokens * 4 * (2 + 4)  # fp16 values + int32 ids
    assert targets.full_nbytes() == tokens * V * 2  # fp16 logits of the whole vocabulary
    assert targets.full_nbytes(bytes_per_logit=4) == tokens * V * 4
    assert dv.top_k_targets(t, V).nbytes() == 3 * dv.top_k_targets(t, V).full_nbytes()  # k = V: 6 bytes vs 2


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan"), "0.5", None])
def test_jsd_refuses_a_beta_outside_zero_one(logits, beta):
    s, t = logits
    with pytest.raises(ValueError, match="beta"):
        dv.generalized_jsd(s, t, beta)


@pytest.mark.parametrize("k", [0, V + 1, -1, 2.0])
def test_top_k_refuses_a_k_outside_the_vocabulary(logits, k):
    _, t = logits
    with pytest.raises(ValueError, match=r"^k must be an integer in \[1, 11\]"):
        dv.top_k_targets(t, k)


def test_a_temperature_must_be_positive(logits):
    s, t = logits
    for call in (dv.token_forward_kl, dv.token_reverse_kl):
        with pytest.raises(ValueError, match="temperature T"):
            call(s, t, T=0.0)
    with pytest.raises(ValueError, match="temperature T"):
        dv.generalized_jsd(s, t, 0.5, T=-1.0)
    with pytest.raises(ValueError, match="temperature T"):
        dv.top_k_forward_kl(s, dv.top_k_targets(t, 2), T=0.0)


def test_two_vocabularies_are_refused_as_two_tokenizers(logits):
    s, t = logits
    for call in (dv.token_forward_kl, dv.token_reverse_kl, lambda a, b: dv.generalized_jsd(a, b, 0.5)):
        with pytest.raises(ValueError, match="tokenizer"):
            call(s[..., :-1], t)
    with pytest.raises(ValueError, match="tokenizer"):
        dv.top_k_forward_kl(s[..., :-1], dv.top_k_targets(t, 3))
    with pytest.raises(ValueError, match="positions"):
        dv.top_k_forward_kl(s[:, :-1], dv.top_k_targets(t, 3))


@pytest.mark.parametrize("loss", ["forward", "reverse", "jsd", "top-k"])
def test_gradients_reach_the_student_only(logits, mask, loss):
    s, t = logits
    s, t = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    if loss == "top-k":
        value = dv.top_k_forward_kl(s, dv.top_k_targets(t, 4), mask, 2.0)
    else:
        fn = {"forward": dv.token_forward_kl, "reverse": dv.token_reverse_kl,
              "jsd": lambda a, b, m, T: dv.generalized_jsd(a, b, 0.5, m, T)}[loss]
        value = fn(s, t, mask, 2.0)
    value.backward()
    assert t.grad is None
    assert s.grad is not None and s.grad[mask].abs().sum() > 0
    assert torch.equal(s.grad[~mask], torch.zeros_like(s.grad[~mask]))  # masked positions get no gradient


def test_the_forward_kl_gradient_is_T_times_q_minus_p_per_kept_token(logits, mask):
    """d/dz_s of T**2 KL(p || q) at temperature T is T (q - p), divided by the number of kept tokens."""
    s, t = logits
    T = 3.0
    s = s.clone().requires_grad_(True)
    dv.token_forward_kl(s, t, mask, T).backward()
    expected = T * (softmax(s.detach(), T) - softmax(t, T)) / int(mask.sum())
    expected[~mask.numpy()] = 0.0
    assert np.allclose(s.grad.numpy(), expected, atol=1e-12)
