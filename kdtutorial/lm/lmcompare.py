"""Lesson 08's experiment: each distillation method trains the same student on the same prompts and token budget,
for several seeds, and every student is scored on the same held-out text (:func:`kd.lmeval.score_lm`).

Also here: the price of the large softmax (:func:`vocab_costs`: the bytes per token of full teacher logits against
top-k ones, and the time of a training step with each).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import torch

from kdtutorial.common.checks import check_choice
from kdtutorial.common.environment import seed_everything, synchronize
from kdtutorial.lm.decoders import layer_copied_decoder, random_decoder
from kdtutorial.lm.lmdistil import (LM_METHODS, LMSetting, method_loss, teacher_continuations, teacher_top_k,
                                    train_lm_student)
from kdtutorial.lm.lmeval import score_lm
from kdtutorial.lm.generation import continue_prompts
from kdtutorial.lm.lmtext import Windows, imdb_sentences, prompt_windows, text_windows, wikitext_text
from kdtutorial.common.processes import run_jobs

__all__ = ["LM_INITS", "LMData", "LMRuns", "build_lm_data", "new_lm_student", "run_lm_student", "compare_lm_methods",
           "vocab_costs"]

LM_INITS = ("copied", "random")


@dataclass
class LMData:
    """The lesson's token windows: training prompts + continuations, held-out reviews, WikiText-2 test."""

    train: Windows
    heldout: Windows
    wiki: Windows

    def describe(self) -> str:
        return (f"training windows {len(self.train)} (prompt {self.train.prompt} + continuation "
                f"{self.train.continuation} tokens), held-out review windows {len(self.heldout)}, WikiText-2 "
                f"windows {len(self.wiki)} x {self.wiki.ids.shape[1]} tokens")


def build_lm_data(tokenizer, *, train_windows: int, heldout_windows: int, wiki_windows: int, prompt_tokens: int,
                  continuation_tokens: int, wiki_length: int = 64, root=None) -> LMData:
    """Read the sentences and cut the windows: sentences of at least ``0.6 * length`` words (SmolLM2's tokenizer
    gives about 1.3 tokens a word), twice as many as windows, since some still fall short."""
    min_words = max(1, int(0.6 * (prompt_tokens + continuation_tokens)))

    def windows(split, n):
        return prompt_windows(imdb_sentences(split, 2 * n, min_words=min_words, max_words=max(60, 2 * min_words),
                                             root=root), tokenizer, prompt_tokens, continuation_tokens, n)

    return LMData(windows("train", train_windows), windows("heldout", heldout_windows),
                  text_windows(wikitext_text(root), tokenizer, wiki_length, wiki_windows))


def new_lm_student(teacher, init: str, layers, seed: int, *, freeze_embeddings: bool = True):
    check_choice("STUDENT_INIT", init, LM_INITS)
    if init == "copied":
        return layer_copied_decoder(teacher, layers, freeze_embeddings=freeze_embeddings)
    return random_decoder(teacher.config, len(layers), seed)


def _decode(tokenizer, windows: Windows) -> list[str]:
    return [tokenizer.decode(row[windows.prompt:], skip_special_tokens=True) for row in windows.ids]


@dataclass
class LMRuns:
    """What every student of :func:`compare_lm_methods` shares: the ``teacher``, the ``data``, the ``setting``, the
    teacher's cached ``top_k`` logits and greedy ``teacher_text`` (None where no method needs them), how students
    start (``layers``, ``init``, ``freeze_embeddings``), the ``few`` held-out prompts whose greedy continuations a
    first-seed student writes, and a ``progress`` bar advanced per training step (only where the students train in
    this process)."""

    teacher: object
    data: LMData
    setting: LMSetting
    top_k: object
    teacher_text: Windows | None
    layers: list
    init: str
    freeze_embeddings: bool
    few: torch.Tensor
    progress: object = None


def run_lm_student(shared: LMRuns, job) -> dict:
    """One student, ``job = (method, seed, write_samples)``: built after ``seed_everything(seed)``, trained by
    :func:`~kdtutorial.lm.lmdistil.train_lm_student`, scored by :func:`~kdtutorial.lm.lmeval.score_lm`. Returns its
    record, its loss curve and, if ``write_samples``, the token ids of its greedy continuations of ``shared.few``."""
    method, seed, write_samples = job
    setting, data, teacher = shared.setting, shared.data, shared.teacher
    device = torch.device(setting.device)
    teacher.to(device).eval()
    seed_everything(seed)
    student = new_lm_student(teacher, shared.init, shared.layers, seed, freeze_embeddings=shared.freeze_embeddings)
    history = train_lm_student(method, student, teacher, data.train, setting, seed, top_k=shared.top_k,
                               teacher_text=shared.teacher_text, progress=shared.progress)
    scores = score_lm(student, teacher, data.heldout, data.wiki, seed=seed, batch_size=setting.eval_batch,
                      device=device, amp=setting.amp)
    record = {"method": method, "seed": seed, **scores, "train_seconds": history["seconds"],
              "on_policy_steps": history["on_policy_steps"]}
    samples = (continue_prompts(student, shared.few, data.heldout.continuation, sample=False, device=device).ids.cpu()
               if write_samples else None)
    del student
    gc.collect()
    return {"record": record, "losses": history["losses"], "samples": samples}


class _StepsPerJob:
    """A tqdm bar counting training steps, advanced by ``steps`` when a student trained elsewhere finishes."""

    def __init__(self, bar, steps: int):
        self.bar, self.steps = bar, steps

    def update(self, n: int = 1) -> None:
        self.bar.update(n * self.steps)


def compare_lm_methods(teacher, tokenizer, data: LMData, setting: LMSetting, seeds, methods=LM_METHODS, *,
                       layers, init: str = "copied", freeze_embeddings: bool = True, n_samples: int = 4,
                       workers: int = 1, threads: int | None = None, progress=None):
    """Train a student per (method, seed), score it; return ``(records, samples, curves)``.

    ``records``: one dict per trained student (method, seed, every :func:`score_lm` number, train seconds), plus the
    teacher's own scores (method "teacher"). ``samples``: greedy continuations of the first ``n_samples`` held-out
    prompts, by the teacher and by each method's first-seed student. ``curves``: the loss curves.

    Each student is one job (:func:`run_lm_student`); ``workers > 1`` trains that many at a time, each in a process
    of its own on the same device (:func:`~kdtutorial.common.processes.run_jobs`: the same results, up to a GPU's
    run-to-run variation; ``threads``: CPU threads per process). ``progress``: a tqdm bar counting training steps."""
    for m in methods:
        check_choice("METHODS", m, LM_METHODS)
    device = torch.device(setting.device)
    teacher.to(device).eval()
    top_k = (teacher_top_k(teacher, data.train, setting.top_k, batch_size=setting.eval_batch, device=device,
                           amp=setting.amp) if "top-k KD" in methods else None)
    teacher_text = (teacher_continuations(teacher, data.train, batch_size=setting.eval_batch, device=device)
                    if "sequence-level KD" in methods else None)
    few = data.heldout.prompts()[:n_samples]
    samples = {"prompt": [tokenizer.decode(p, skip_special_tokens=True) for p in few]}
    samples["teacher"] = _decode(tokenizer, continue_prompts(teacher, few, data.heldout.continuation,
                                                             sample=False, device=device))
    scores = score_lm(teacher, teacher, data.heldout, data.wiki, seed=seeds[0], batch_size=setting.eval_batch,
                      device=device, amp=setting.amp)
    records = [{"method": "teacher", "seed": seeds[0], **scores, "train_seconds": 0.0}]
    jobs = [(method, seed, seed == seeds[0]) for seed in seeds for method in methods]
    here = workers <= 1 or len(jobs) <= 1
    shared = LMRuns(teacher, data, setting, top_k, teacher_text, list(layers), init, freeze_embeddings, few,
                    progress if here else None)
    outs = run_jobs(run_lm_student, shared, jobs, workers=workers, threads=threads,
                    progress=None if here or progress is None else _StepsPerJob(progress, setting.steps))
    curves = {}
    for (method, seed, write_samples), out in zip(jobs, outs):
        records.append(out["record"])
        curves[(method, seed)] = out["losses"]
        if write_samples:
            samples[method] = _decode(tokenizer, Windows(out["samples"], few.shape[1]))
    return records, samples, curves


def vocab_costs(teacher, student, windows: Windows, ks, setting: LMSetting, *, repeats: int = 3) -> list[dict]:
    """Per way of giving the teacher to the student: cached bytes per token, for the training set, and the time of
    one training step on ``windows`` (the step includes the teacher's forward pass only for full-logit KD)."""
    device = torch.device(setting.device)
    vocab = teacher.config.vocab_size
    tokens = windows.target_mask().sum().item()
    mask = windows.target_mask().to(device)
    ids = windows.ids.to(device)
    student.to(device).train()
    params = [p for p in student.parameters() if p.requires_grad]
    rows = []
    for k in [None, *ks]:
        cached = None if k is None else teacher_top_k(teacher, windows, k, batch_size=len(windows), device=device,
                                                      amp=setting.amp)
        best = float("inf")
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            loss = method_loss("word-level KD" if k is None else "top-k KD", student, teacher, ids, mask, setting,
                               cached)
            loss.backward()
            synchronize(device)
            best = min(best, time.perf_counter() - start)
            for p in params:
                p.grad = None
        per_token = 2 * vocab if k is None else 6 * k  # fp16 logits, or fp16 values + int32 ids
        rows.append({"teacher targets": "full logits (fp16)" if k is None else f"top-{k}",
                     "bytes per token": per_token, "MB per 1M tokens": per_token * 1e6 / 2**20,
                     "teacher forward in the step": k is None, "step ms": 1000 * best,
                     "tokens in the step": int(tokens)})
    student.eval()
    return rows
