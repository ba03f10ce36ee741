"""Seeded continuations of fixed-length prompts, and how likely a model finds a given text.

Sequence-level KD (Kim & Rush, EMNLP 2016) trains on the teacher's continuations; on-policy distillation (GKD,
Agarwal et al. 2024; MiniLLM, Gu et al. 2024) on the student's own. Both come from :func:`continue_prompts`,
which is repeatable: the same seed gives the same tokens. Continuations have exactly ``new_tokens`` tokens
(end-of-sequence is suppressed until then), so every method trains on the same number of tokens.
"""
from __future__ import annotations

import time

import torch

from kdtutorial.lm.decoders import lm_logits
from kdtutorial.lm.lmtext import Windows

__all__ = ["continue_prompts", "sequence_log_likelihood", "generation_speed"]


@torch.no_grad()
def continue_prompts(model, prompts: torch.Tensor, new_tokens: int, *, sample: bool, seed: int = 0,
                     temperature: float = 1.0, batch_size: int = 64, device="cpu") -> Windows:
    """Windows of ``prompts`` followed by ``new_tokens`` tokens from ``model``: greedy when ``sample`` is False,
    else drawn from ``softmax(logits / temperature)`` over the whole vocabulary (no top-k, no top-p)."""
    if not (isinstance(new_tokens, int) and new_tokens >= 1):
        raise ValueError(f"new_tokens must be a positive integer, got {new_tokens!r}")
    if sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    pad = model.config.eos_token_id if model.config.pad_token_id is None else model.config.pad_token_id
    if isinstance(pad, (list, tuple)):
        pad = pad[0]
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=sample, pad_token_id=pad,
                   use_cache=True)
    options.update(temperature=temperature, top_k=0, top_p=1.0) if sample else options.update(
        temperature=None, top_k=None, top_p=None)
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, prompts.shape[0], batch_size):
            chunk = prompts[start:start + batch_size].to(device)
            ids = model.generate(input_ids=chunk, attention_mask=torch.ones_like(chunk), **options)
            out.append(ids[:, :chunk.shape[1] + new_tokens].cpu())
    model.train(was_training)
    return Windows(torch.cat(out), prompts.shape[1])


@torch.no_grad()
def sequence_log_likelihood(model, windows: Windows, *, batch_size: int = 64, device="cpu") -> torch.Tensor:
    """Per window: the mean log-probability ``model`` gives each continuation token (teacher forcing)."""
    device = torch.device(device)
    mask = windows.target_mask()
    out = []
    for start in range(0, len(windows), batch_size):
        ids = windows.ids[start:start + batch_size].to(device)
        logp = torch.log_softmax(lm_logits(model, ids)[:, :-1].float(), -1)
        token = logp.gather(-1, ids[:, 1:, None]).squeeze(-1).cpu()
        m = mask[start:start + batch_size].float()
        out.append((token * m).sum(1) / m.sum(1))
    return torch.cat(out)


def generation_speed(model, prompts: torch.Tensor, new_tokens: int, *, device="cpu", repeats: int = 1) -> float:
    """Generated tokens per second (greedy, batch = all ``prompts``, key-value cache on), best of ``repeats``."""
    best = 0.0
    device = torch.device(device)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        continue_prompts(model, prompts, new_tokens, sample=False, batch_size=prompts.shape[0], device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, prompts.shape[0] * new_tokens / (time.perf_counter() - start))
    return best
