r"""How good and how teacher-like a causal-LM student is, on held-out text.

* **Perplexity** :math:`\exp\big(-\frac{1}{N}\sum_t \log q(y_{t+1} \mid y_{\le t})\big)` over the scored tokens
  (the continuation of held-out review windows; every token but the first of WikiText-2 windows).
* **Token KL** to the teacher on the same held-out text, both directions, per token (teacher forcing).
* **Teacher log-likelihood of the student's samples**: the student continues held-out prompts (sampled, seeded),
  the teacher scores each sampled token; the mean :math:`\frac{1}{N}\sum_t \log p_T(\hat y_{t+1} \mid \hat y_{\le t})`
  is how teacher-like the student's own generations are (higher is closer; the teacher's own samples set the
  ceiling). MiniLLM's claim, more precise generations from reverse KL, shows as a higher value here.
"""
from __future__ import annotations

import math

import torch

from kdtutorial.common.environment import autocast
from kdtutorial.lm.decoders import lm_logits
from kdtutorial.lm.divergences import next_token_cross_entropy, token_forward_kl, token_reverse_kl
from kdtutorial.lm.generation import continue_prompts, sequence_log_likelihood
from kdtutorial.lm.lmtext import Windows

__all__ = ["perplexity", "token_kl_to_teacher", "teacher_likelihood_of_samples", "score_lm"]


@torch.no_grad()
def perplexity(model, windows: Windows, *, batch_size: int = 64, device="cpu", amp: bool = False) -> float:
    """Perplexity of ``model`` on the target positions of ``windows`` (token-weighted over all windows)."""
    device = torch.device(device)
    mask = windows.target_mask()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        ids = windows.ids[start:start + batch_size].to(device)
        m = mask[start:start + batch_size].to(device)
        with autocast(device, amp):
            logits = lm_logits(model, ids)[:, :-1].float()
        n = int(m.sum())
        total += next_token_cross_entropy(logits, ids[:, 1:], m).item() * n
        count += n
    return math.exp(total / count)


@torch.no_grad()
def token_kl_to_teacher(student, teacher, windows: Windows, *, batch_size: int = 64, device="cpu",
                        amp: bool = False) -> tuple[float, float]:
    """(forward KL(p_T || q_S), reverse KL(q_S || p_T)) per token on the target positions, T = 1."""
    device = torch.device(device)
    mask = windows.target_mask()
    fwd = rev = 0.0
    count = 0
    for start in range(0, len(windows), batch_size):
        ids = windows.ids[start:start + batch_size].to(device)
        m = mask[start:start + batch_size].to(device)
        with autocast(device, amp):
            s = lm_logits(student, ids)[:, :-1].float()
            t = lm_logits(teacher, ids)[:, :-1].float()
        n = int(m.sum())
        fwd += token_forward_kl(s, t, m).item() * n
        rev += token_reverse_kl(s, t, m).item() * n
        count += n
    return fwd / count, rev / count


def teacher_likelihood_of_samples(student, teacher, prompts: torch.Tensor, new_tokens: int, *, seed: int,
                                  batch_size: int = 64, device="cpu") -> float:
    """Mean per-token teacher log-probability of ``student``'s sampled continuations of ``prompts``."""
    samples = continue_prompts(student, prompts, new_tokens, sample=True, seed=seed, batch_size=batch_size,
                               device=device)
    return sequence_log_likelihood(teacher, samples, batch_size=batch_size, device=device).mean().item()


def score_lm(model, teacher, heldout: Windows, wiki: Windows, *, seed: int, batch_size: int = 64, device="cpu",
             amp: bool = False) -> dict:
    """Every held-out number of the lesson's results table for one model (the teacher may score itself):
    perplexities, their logarithms (the mean negative log-likelihood per token, in nats), token KL both ways, the
    teacher's log-likelihood of the model's samples."""
    fwd, rev = token_kl_to_teacher(model, teacher, heldout, batch_size=batch_size, device=device, amp=amp)
    ppl_reviews = perplexity(model, heldout, batch_size=batch_size, device=device, amp=amp)
    ppl_wikitext = perplexity(model, wiki, batch_size=batch_size, device=device, amp=amp)
    return {
        "ppl_reviews": ppl_reviews, "ppl_wikitext": ppl_wikitext,
        "nll_reviews": math.log(ppl_reviews), "nll_wikitext": math.log(ppl_wikitext),  # nats per token
        "kl_forward": fwd, "kl_reverse": rev,
        "teacher_logp_of_samples": teacher_likelihood_of_samples(
            model, teacher, heldout.prompts(), heldout.continuation, seed=seed, batch_size=batch_size,
            device=device),
    }
