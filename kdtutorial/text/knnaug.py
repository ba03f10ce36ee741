"""Knowledge distillation on a transfer set augmented with retrieved neighbours: vanilla kNN, Minimax-kNN
(Kamalloo, Rezagholizadeh, Passban, Ghodsi, ACL 2021) and the random-sentence control.

Every student descends, at every step, on a batch ``B`` of labelled training sentences and a set ``A`` of pool
sentences chosen for that batch (lesson 05's MATE-KD objective, with retrieved sentences in place of rewritten ones)::

    L = (1 - alpha) CE(y, S(x)) + alpha tau^2 KL(p_T^tau(x) || p_S^tau(x))        averaged over x in B
                                + alpha tau^2 KL(p_T^tau(x') || p_S^tau(x'))      averaged over x' in A

``A`` is empty for plain KD. The :class:`Augmentation` decides ``A``:

* ``"random"``: ``per_example`` pool sentences drawn at random per training sentence (the control: as much extra
  text, none of it chosen);
* ``"knn"``: all ``K`` retrieved neighbours of each sentence (vanilla kNN augmentation);
* ``"minimax"``: of the ``K`` neighbours that pass the teacher-space distance filter, the ``k1`` of largest
  teacher-student KL, re-chosen at every step with the student as it is then (:mod:`kdtutorial.text.minimax`).

The teacher is frozen, so its logits on the training sentences and on every candidate are computed once
(:func:`build_knn_data`). The same seed gives every method the same student start and the same batches of training
sentences, and every method takes the same number of steps; :class:`KnnRun` counts the augmented sentences trained
on, the candidates scored (Minimax-kNN's extra forward passes) and the wall time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kdtutorial.common.environment import autocast, synchronize
from kdtutorial.common.losses import kd_kl_loss
from kdtutorial.common.statistics import accuracy
from kdtutorial.text.finetuning import predict
from kdtutorial.text.minimax import candidate_divergence, check_k1, distance_filter, top_divergence
from kdtutorial.text.optim import adamw_with_warmup
from kdtutorial.text.tokens import TokenizedText, pad_rows, padded_batches, tokenize

__all__ = ["AUGMENTATION_KINDS", "Augmentation", "knn_methods", "KnnData", "build_knn_data", "knn_data_from_tokens", "KnnSetting", "KnnRun",
           "augmented_rows", "train_knn_student", "compare_knn_methods"]

AUGMENTATION_KINDS = ("none", "random", "knn", "minimax")


@dataclass(frozen=True)
class Augmentation:
    """Which pool sentences a student is distilled on beside its training batch: ``kind`` (one of
    :data:`AUGMENTATION_KINDS`), ``per_example`` (``K`` for random and kNN, ``k1`` for Minimax-kNN) and, for
    Minimax-kNN, ``max_distance`` (the teacher-space filter; ``1.0`` keeps every neighbour)."""

    kind: str
    per_example: int = 0
    max_distance: float = 1.0

    def __post_init__(self):
        if self.kind not in AUGMENTATION_KINDS:
            raise ValueError(f"kind = {self.kind!r} is not allowed: choose one of {AUGMENTATION_KINDS}")
        if self.kind != "none" and not (isinstance(self.per_example, int) and self.per_example >= 1):
            raise ValueError(f"per_example must be a positive integer for {self.kind!r}, got {self.per_example!r}")


def knn_methods(K: int, k1s, max_distance: float, random_per_example: int | None = None) -> dict:
    """The lesson's methods, name -> :class:`Augmentation`: KD, KD + random pool sentences (``random_per_example``,
    default ``K``, per training sentence), KD + vanilla-``K``NN, and KD + Minimax-``K``NN for each ``k1`` of
    ``k1s`` (each ``1 <= k1 <= K``; the paper's names, e.g. "Minimax-8NN (k1 = 4)")."""
    methods = {"KD": Augmentation("none"),
               "KD + random pool": Augmentation("random", random_per_example or K),
               f"KD + vanilla-{K}NN": Augmentation("knn", K)}
    for k1 in k1s:
        methods[f"KD + Minimax-{K}NN (k1 = {check_k1(k1, K)})"] = Augmentation("minimax", k1, max_distance)
    return methods


@dataclass
class KnnData:
    """A transfer set with its candidates. ``train_text`` / ``labels`` / ``teacher_logits``: the labelled training
    sentences. ``cand_text`` / ``cand_sentences`` / ``cand_teacher_logits``: every pool sentence any method may
    train on (the retrieved neighbours and a random reservoir), tokenised once. ``neighbours`` ``[n, K]``: row ``i``'s
    neighbours as rows of ``cand_text``, nearest first, with their retrieval ``scores``; ``random_rows``: the
    reservoir the random control draws from; ``pool_rows``: each candidate's row in the original pool."""

    train_text: TokenizedText
    labels: torch.Tensor
    teacher_logits: torch.Tensor
    cand_text: TokenizedText
    cand_sentences: list
    cand_teacher_logits: torch.Tensor
    neighbours: torch.Tensor
    scores: torch.Tensor
    random_rows: torch.Tensor
    pool_rows: np.ndarray = field(repr=False)

    @property
    def K(self) -> int:
        return int(self.neighbours.shape[1])

    def __len__(self) -> int:
        return len(self.train_text)

    def neighbour_logits(self, rows=None) -> torch.Tensor:
        """The teacher's logits on the neighbours of ``rows`` (all rows by default): ``[n, K, C]``."""
        nb = self.neighbours if rows is None else self.neighbours[torch.as_tensor(rows)]
        return self.cand_teacher_logits[nb]

    def allowed(self, max_distance: float) -> torch.Tensor:
        """``[n, K]``: True where a neighbour passes the teacher-space distance filter
        (:func:`~kdtutorial.text.minimax.distance_filter`)."""
        return distance_filter(self.teacher_logits, self.neighbour_logits(), max_distance)


def build_knn_data(teacher, tokenizer, train_sentences, labels, pool_sentences, neighbour_indices,
                   neighbour_scores=None, *, random_count: int, seed: int = 0, max_length: int = 64,
                   batch_size: int = 256, device="cpu", amp: bool = False) -> KnnData:
    """Tokenise the training sentences and every candidate, and score them all once with the frozen ``teacher``.

    ``neighbour_indices`` ``[n, K]``: pool rows retrieved for each training sentence (e.g. ``Neighbours.indices``).
    ``random_count`` pool rows are drawn (seeded, without replacement) as the random control's reservoir."""
    train_sentences, pool_sentences = list(train_sentences), list(pool_sentences)
    nb = np.asarray(neighbour_indices, dtype=np.int64)
    if nb.ndim != 2 or nb.shape[0] != len(train_sentences):
        raise ValueError(f"neighbour_indices must be [n, K] with n = {len(train_sentences)} training sentences, "
                         f"got shape {nb.shape}")
    if nb.size and (nb.min() < 0 or nb.max() >= len(pool_sentences)):
        raise ValueError(f"neighbour_indices must be rows of the pool (0 .. {len(pool_sentences) - 1})")
    if not 1 <= int(random_count) <= len(pool_sentences):
        raise ValueError(f"random_count = {random_count!r} is not allowed: 1 .. {len(pool_sentences)} pool sentences")
    reservoir = np.random.default_rng(seed).choice(len(pool_sentences), size=int(random_count), replace=False)
    pool_rows, position = np.unique(np.concatenate([nb.reshape(-1), reservoir]), return_inverse=True)
    cand_sentences = [pool_sentences[i] for i in pool_rows]
    scores = np.zeros(nb.shape, np.float32) if neighbour_scores is None else np.asarray(neighbour_scores, np.float32)
    return knn_data_from_tokens(teacher, tokenize(tokenizer, train_sentences, max_length), labels,
                                tokenize(tokenizer, cand_sentences, max_length), cand_sentences,
                                position[: nb.size].reshape(nb.shape), scores, position[nb.size:], pool_rows,
                                batch_size=batch_size, device=device, amp=amp)


def knn_data_from_tokens(teacher, train_text: TokenizedText, labels, cand_text: TokenizedText, cand_sentences,
                         neighbours, scores, random_rows, pool_rows, *, batch_size: int = 256, device="cpu",
                         amp: bool = False) -> KnnData:
    """A :class:`KnnData` from texts already tokenised (e.g. sentence pairs whose first sentence was replaced by a
    neighbour): ``neighbours`` ``[n, K]`` and ``random_rows`` are rows of ``cand_text``; the frozen ``teacher``
    scores ``train_text`` and ``cand_text`` once."""
    nb = np.asarray(neighbours, dtype=np.int64)
    if nb.ndim != 2 or nb.shape[0] != len(train_text):
        raise ValueError(f"neighbours must be [n, K] with n = {len(train_text)} training rows, got shape {nb.shape}")
    if nb.size and (nb.min() < 0 or nb.max() >= len(cand_text)):
        raise ValueError(f"neighbours must be rows of cand_text (0 .. {len(cand_text) - 1})")
    if len(cand_sentences) != len(cand_text):
        raise ValueError(f"{len(cand_sentences)} candidate sentences for {len(cand_text)} tokenised candidates")
    run = dict(batch_size=batch_size, device=device, amp=amp)
    return KnnData(train_text=train_text, labels=torch.as_tensor(np.asarray(labels), dtype=torch.long),
                   teacher_logits=predict(teacher, train_text, **run), cand_text=cand_text,
                   cand_sentences=list(cand_sentences), cand_teacher_logits=predict(teacher, cand_text, **run),
                   neighbours=torch.as_tensor(nb), scores=torch.as_tensor(np.asarray(scores, np.float32)),
                   random_rows=torch.as_tensor(np.asarray(random_rows, np.int64)), pool_rows=np.asarray(pool_rows))


@dataclass(frozen=True)
class KnnSetting:
    """What every student of a comparison shares: ``steps`` of ``batch_size`` training sentences, AdamW at ``lr``
    (warm-up then linear decay), KD temperature ``tau`` and weight ``alpha``, gradient clipping, frozen embeddings."""

    steps: int
    batch_size: int = 32
    lr: float = 1e-4
    tau: float = 1.0
    alpha: float = 0.5
    warmup: float = 0.1
    weight_decay: float = 0.01
    clip: float | None = 5.0
    freeze_embeddings: bool = False
    device: str = "cpu"
    amp: bool = False
    eval_batch: int = 256


@dataclass
class KnnRun:
    """One trained student: the loss terms per step (``history``), the augmented sentences it was distilled on
    (``augmented``, counted with repeats), the candidates it scored to choose them (``scored``, Minimax-kNN only)
    and the training time in seconds."""

    history: list
    augmented: int
    scored: int
    seconds: float


def augmented_rows(aug: Augmentation, data: KnnData, rows, student=None, *, allowed=None, tau: float = 1.0,
                   generator: torch.Generator | None = None, device="cpu", amp: bool = False):
    """``(cand rows, scored)``: the candidates the batch ``rows`` is augmented with under ``aug``, and how many
    candidates were scored by the student to choose them. Minimax-kNN needs the ``student`` (scored in eval mode,
    without gradients, then put back in its mode) and ``allowed`` (``data.allowed(aug.max_distance)``)."""
    rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    if aug.kind == "none":
        return torch.empty(0, dtype=torch.long), 0
    if aug.kind == "random":
        pick = torch.randint(len(data.random_rows), (len(rows) * aug.per_example,), generator=generator)
        return data.random_rows[pick], 0
    nb = data.neighbours[rows]
    if aug.kind == "knn":
        if aug.per_example > data.K:
            raise ValueError(f"per_example = {aug.per_example} is more than the K = {data.K} neighbours retrieved")
        return nb[:, : aug.per_example].reshape(-1), 0
    check_k1(aug.per_example, data.K)
    ok = (data.allowed(aug.max_distance) if allowed is None else allowed)[rows]
    scored_rows = nb[ok]
    if len(scored_rows) == 0:
        return scored_rows, 0
    device = torch.device(device)
    was_training = student.training
    student.eval()
    with torch.no_grad(), autocast(device, amp):
        batch = pad_rows(data.cand_text, scored_rows.numpy())
        logits = student(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
    student.train(was_training)
    divergence = torch.full(nb.shape, float("-inf"))
    divergence[ok] = candidate_divergence(data.cand_teacher_logits[scored_rows], logits, tau)
    chosen = top_divergence(divergence, ok, aug.per_example)
    return nb[chosen], int(ok.sum())


def train_knn_student(student, data: KnnData, aug: Augmentation, setting: KnnSetting, *, seed: int = 0,
                      progress: bool = False, after_step=None) -> KnnRun:
    """Distil ``student`` (a :class:`~kdtutorial.text.finetuning.SentenceClassifier`) for ``setting.steps`` steps on
    ``data`` with augmentation ``aug`` (the loss in the module docstring). Batches of training sentences are drawn
    by epoch from a generator seeded with ``seed``, so every method sees the same ones; the random control's draws
    use their own seeded generator. The student is left in eval mode on ``setting.device``. ``after_step(updates)``:
    called after every update with the updates so far (its time is not counted in ``seconds``; it may put the
    student in eval mode, training resumes in train mode)."""
    device = torch.device(setting.device)
    student.to(device).train()
    frozen = [w for w in student.encoder.embeddings.parameters() if w.requires_grad] \
        if setting.freeze_embeddings else []
    for w in frozen:
        w.requires_grad_(False)
    opt, sched = adamw_with_warmup([w for w in student.parameters() if w.requires_grad], lr=setting.lr,
                                   weight_decay=setting.weight_decay, warmup=setting.warmup, steps=setting.steps,
                                   device=device)
    allowed = data.allowed(aug.max_distance) if aug.kind == "minimax" else None
    draws = torch.Generator().manual_seed(int(seed) + 7919)
    history, augmented, scored, epoch = [], 0, 0, 0
    synchronize(device)
    start = time.perf_counter()
    try:
        with tqdm(total=setting.steps, desc=aug.kind, leave=False, disable=not progress) as bar:
            while len(history) < setting.steps:
                for rows, batch in padded_batches(data.train_text, setting.batch_size, shuffle=True,
                                                  seed=seed * 1000 + epoch):
                    if len(history) >= setting.steps:
                        break
                    extra, n_scored = augmented_rows(aug, data, rows, student, allowed=allowed, tau=setting.tau,
                                                     generator=draws, device=device, amp=setting.amp)
                    if len(extra):  # one forward pass for the batch and its augmented sentences
                        both = TokenizedText([data.train_text.ids[i] for i in rows] +
                                             [data.cand_text.ids[j] for j in extra.tolist()],
                                             data.train_text.pad_id, data.train_text.special_ids)
                        batch = pad_rows(both, np.arange(len(both)))
                    with autocast(device, setting.amp):
                        out = student(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float()
                        logits, a_logits = out[: len(rows)], out[len(rows):]
                        y = data.labels[rows].to(device)
                        ce = F.cross_entropy(logits, y)
                        kd = kd_kl_loss(logits, data.teacher_logits[rows].to(device), setting.tau)
                        loss = (1 - setting.alpha) * ce + setting.alpha * kd
                        aug_kd = torch.zeros((), device=device)
                        if len(extra):
                            aug_kd = kd_kl_loss(a_logits, data.cand_teacher_logits[extra].to(device), setting.tau)
                            loss = loss + setting.alpha * aug_kd
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if setting.clip is not None:
                        torch.nn.utils.clip_grad_norm_(student.parameters(), setting.clip)
                    opt.step()
                    sched.step()
                    augmented += len(extra)
                    scored += n_scored
                    history.append({"step": len(history) + 1, "loss": loss.detach(), "ce": ce.detach(),
                                    "kd": kd.detach(), "aug_kd": aug_kd.detach(), "n_aug": len(extra)})
                    bar.update(1)
                    if after_step is not None:
                        synchronize(device)
                        paused = time.perf_counter()
                        after_step(len(history))
                        student.train()
                        start += time.perf_counter() - paused
                epoch += 1
        synchronize(device)
    finally:
        for w in frozen:
            w.requires_grad_(True)
    seconds = time.perf_counter() - start
    history = [{k: (float(v) if torch.is_tensor(v) else v) for k, v in h.items()} for h in history]
    student.eval()
    return KnnRun(history, augmented, scored, seconds)


def compare_knn_methods(new_student, data: KnnData, methods: dict, seeds, setting: KnnSetting, test_text,
                        test_labels, *, progress=None):
    """Train one student per (seed, method) and test it: ``(records, runs)``.

    ``new_student(seed)`` returns a fresh student (the same weights for the same seed: every method of a seed starts
    alike). ``records``: one dict per student with ``method``, ``seed``, ``test_acc`` (%), ``augmented``, ``scored``
    and ``seconds``; ``runs[(method, seed)]``: its :class:`KnnRun`. ``progress``: a tqdm bar advanced once per
    student step."""
    records, runs = [], {}
    for seed in seeds:
        for method, aug in methods.items():
            student = new_student(seed)
            run = train_knn_student(student, data, aug, setting, seed=seed)
            acc = accuracy(predict(student, test_text, batch_size=setting.eval_batch, device=setting.device,
                                   amp=setting.amp), test_labels)
            records.append({"method": method, "seed": seed, "test_acc": acc, "augmented": run.augmented,
                            "scored": run.scored, "seconds": run.seconds})
            runs[method, seed] = run
            del student
            if progress is not None:
                progress.update(setting.steps)
    return records, runs
