"""Lesson 10's harness: every distillation method of the course in one setting, on several GLUE tasks.

One teacher per task (the pretrained encoder fine-tuned on the task), one student architecture (the teacher's
embeddings and bottom ``layers`` layers, PKD's initialisation), one tokenisation, and for every method the same
seeds, the same training rows and the same number of student updates (:class:`AllSetting.updates`). Each method
is trained by the package's own function for it, nothing is re-implemented here:

==================  =====================================================================================
no KD, KD           :func:`kdtutorial.text.layerdistil.distil_with_layers`, term ``none`` / ``kd``
PKD, ALP-KD         the same, term ``pkd`` (PKD-Skip map) / ``alp`` (Sun et al. 2019; Passban et al. 2021)
Annealing KD        :func:`kdtutorial.text.annealing.train_annealing_text` (Jafari et al. 2021)
MATE-KD             :func:`kdtutorial.text.matekd.train_mate_kd` (Rashid et al. 2021)
Minimax-kNN         :func:`kdtutorial.text.knnaug.train_knn_student` (Kamalloo et al. 2021)
Annealing + MATE    :func:`kdtutorial.text.annealing.train_annealing_mate` (the talk's combined KD)
==================  =====================================================================================

Model selection: each student is scored at :func:`checkpoint_updates` on the held-out part of train
(``select``) and on the labelled dev set; the checkpoint with the best held-out score is the one reported. The
record also keeps the best *dev* score over the same checkpoints, which is what choosing on the reported set (as
the released code does) would report: the difference is the selection's inflation.

For sentence-pair tasks, Minimax-kNN's neighbours replace the first sentence of a pair (the second is kept), drawn
from the task's own training sentences (a sentence of the same pair never counts as a neighbour): the paper
augments single sentences only, so this extension is ours.
"""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from kdtutorial.common.environment import (peak_memory_mib, release_memory, reset_peak_memory, seed_everything,
                                            synchronize)
from kdtutorial.common.statistics import mean_std, paired
from kdtutorial.text import glue
from kdtutorial.text.annealing import train_annealing_text, train_annealing_mate
from kdtutorial.text.knnaug import Augmentation, KnnData, KnnSetting, knn_data_from_tokens, train_knn_student
from kdtutorial.text.layercompare import Task, build_task, fine_tune_teacher, new_student
from kdtutorial.text.layerdistil import distil_with_layers
from kdtutorial.text.layers import layer_map
from kdtutorial.text.matekd import train_mate_kd, unused_token_ids
from kdtutorial.text.pretraining import fit_mlm_head
from kdtutorial.common.processes import run_jobs
from kdtutorial.text.retrieval import ExactEmbeddingIndex
from kdtutorial.text.students import copy_layers_student, encoder_layers
from kdtutorial.text.tokens import tokenize, tokenize_sentence_pairs

__all__ = ["METHODS", "TALK_ORDER", "TABLE4", "TABLE4_AVERAGE", "AllSetting", "Prepared", "checkpoint_updates",
           "data_fingerprint", "pair_knn_data", "sentence_knn_data", "prepare", "train_one", "run_students", "check_same_budget", "compare_all", "average_records",
           "inflation", "talk_ordering", "results_table", "cost_table", "claim_status"]

#: the methods, in the order of the talk's ranking, then the two the talk adds
METHODS = ("no KD", "KD", "PKD", "ALP-KD", "Annealing KD", "MATE-KD", "Minimax-kNN", "Annealing + MATE")
#: the talk's all-in-one ranking, "No KD < KD < PKD < ALP < Annealing < MATE"
TALK_ORDER = ("no KD", "KD", "PKD", "ALP-KD", "Annealing KD", "MATE-KD")

#: the talk's Table 4, GLUE dev (BERT-base teacher, 6-layer students), the tasks this course has; "no KD" is its
#: DistilBERT column (a pre-distilled student fine-tuned on labels), "teacher" its BERT-base column. MRPC is F1,
#: CoLA Matthews correlation, SST-2 and RTE accuracy.
TABLE4 = {
    "teacher": {"sst2": 93.1, "rte": 68.2, "mrpc": 90.6, "cola": 59.5},
    "no KD": {"sst2": 91.3, "rte": 59.9, "mrpc": 90.1, "cola": 51.3},
    "KD": {"sst2": 90.4, "rte": 66.0, "mrpc": 89.5, "cola": 47.3},
    "PKD": {"sst2": 91.5, "rte": 68.2, "mrpc": 89.3, "cola": 45.7},
    "ALP-KD": {"sst2": 91.9, "rte": 68.6, "mrpc": 89.2, "cola": 47.0},
    "Annealing KD": {"sst2": 92.1, "rte": 67.9, "mrpc": 90.2, "cola": 55.2},
    "MATE-KD": {"sst2": 92.2, "rte": 70.0, "mrpc": 90.5, "cola": 60.4},
}
#: Table 4's average over all eight GLUE tasks
TABLE4_AVERAGE = {"teacher": 83.4, "no KD": 79.9, "KD": 80.2, "PKD": 80.7, "ALP-KD": 81.0, "Annealing KD": 82.2,
                  "MATE-KD": 83.6}


@dataclass(frozen=True)
class AllSetting:
    """What every student of the comparison shares, and each method's own knobs (their papers' values where they
    fit). ``updates``: student optimiser updates for every method; ``checkpoints``: scorings per run."""

    updates: int
    batch_size: int = 32
    lr: float = 1e-4
    sentences: int = 10**9
    layers: int = 3
    T: float = 5.0                    # KD temperature of KD, PKD, ALP-KD and Minimax-kNN
    alpha: float = 0.5                # KD weight; CE gets 1 - alpha
    pkd_beta: float = 100.0
    alp_beta: float = 1.0
    tau_max: int = 10                 # Annealing KD (and the combination)
    stage1_share: float = 0.5         # share of the updates in Annealing's stage I
    n_gen: int = 10                   # MATE-KD: generator steps per n_student student steps
    n_student: int = 100
    p_mask: float = 0.3
    gen_lr: float = 5e-7
    mate_tau: float = 1.0
    mate_lam: float = 0.5
    k1: int = 4                       # Minimax-kNN keeps k1 of the K neighbours
    max_distance: float = 0.22
    checkpoints: int = 4
    freeze_embeddings: bool = False
    device: str = "cpu"
    amp: bool = False
    eval_batch: int = 256


@dataclass
class Prepared:
    """One task ready for the comparison: the tokenised :class:`~kdtutorial.text.layercompare.Task`, its fine-tuned
    ``teacher`` (frozen) and ``teacher_scores`` (``{"select": ..., "dev": ...}``), the ``pretrained`` encoder the
    students are cut from, the MATE-KD ``generator`` (a masked LM), ``mask_token_id`` and ``never_write`` ids, and
    the Minimax-kNN transfer set ``knn`` (built on the first ``sentences`` training rows)."""

    task: Task
    teacher: torch.nn.Module
    teacher_scores: dict
    pretrained: torch.nn.Module
    generator: torch.nn.Module
    mask_token_id: int
    never_write: frozenset
    knn: KnnData


def checkpoint_updates(updates: int, checkpoints: int) -> list[int]:
    """The update counts at which a run is scored: ``checkpoints`` evenly spaced, the last at ``updates``."""
    if not isinstance(checkpoints, int) or not 1 <= checkpoints <= updates:
        raise ValueError(f"checkpoints = {checkpoints!r} is not allowed: 1 .. updates ({updates})")
    return sorted({int(round(updates * (i + 1) / checkpoints)) for i in range(checkpoints)})


def data_fingerprint(text, labels) -> str:
    """A short hash of the token ids and labels a student trains on: equal fingerprints, equal training data."""
    h = hashlib.sha256()
    for ids in text.ids:
        h.update(np.asarray(ids, np.int64).tobytes())
        h.update(b"|")
    h.update(np.asarray(labels, np.int64).tobytes())
    return h.hexdigest()[:16]


def pair_knn_data(teacher, tokenizer, train_text, train_raw, labels, vectors_of, *, K: int, max_length: int,
                  pool_raw=None, batch_size=256, device="cpu", amp: bool = False) -> KnnData:
    """Minimax-kNN's transfer set for a sentence-pair task: for each training pair ``(a, b)`` the ``K`` sentences
    of the task's training set nearest to ``a`` (cosine of ``vectors_of(sentences)``, unit vectors; ``a``, ``b`` and
    repeats of them excluded), each paired with ``b``; the teacher scores every new pair once. ``train_text``: the
    pairs as the other methods see them (the task's own tokens); ``pool_raw``: the pairs whose sentences form the
    pool (default ``train_raw``)."""
    first, second = list(train_raw.sentence1), list(train_raw.sentence2)
    if len(first) != len(train_text):
        raise ValueError(f"{len(first)} training pairs for {len(train_text)} tokenised rows")
    pool_raw = train_raw if pool_raw is None else pool_raw
    pool = sorted(set(first) | set(second) | set(pool_raw.sentence1) | set(pool_raw.sentence2))
    vec = np.asarray(vectors_of(pool), np.float32)
    index = {s: i for i, s in enumerate(pool)}
    queries = vec[[index[a] for a in first]]
    sims = queries @ vec.T
    for i, (a, b) in enumerate(zip(first, second)):
        sims[i, index[a]] = sims[i, index[b]] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :K]
    cand_first = [pool[j] for row in order for j in row]
    cand_second = [b for b in second for _ in range(K)]
    cand_text = tokenize_sentence_pairs(tokenizer, cand_first, cand_second, max_length)
    neighbours = np.arange(len(first) * K).reshape(len(first), K)
    return knn_data_from_tokens(teacher, train_text, labels, cand_text,
                                [f"{a} ||| {b}" for a, b in zip(cand_first, cand_second)], neighbours,
                                np.take_along_axis(sims, order, axis=1), neighbours[: min(len(first), 64), 0],
                                order.reshape(-1), batch_size=batch_size, device=device, amp=amp)


def sentence_knn_data(teacher, tokenizer, train_text, labels, train_sentences, pool_sentences, pool_vectors,
                      query_vectors, *, K: int, max_length: int, batch_size=256, device="cpu",
                      amp: bool = False) -> KnnData:
    """Minimax-kNN's transfer set for a single-sentence task: the ``K`` pool sentences nearest to each training
    sentence (exact inner-product search of unit vectors, :class:`~kdtutorial.text.retrieval.ExactEmbeddingIndex`),
    on the training rows exactly as the other methods see them (``train_text``, the task's own tokens)."""
    if len(train_sentences) != len(train_text):
        raise ValueError(f"{len(train_sentences)} training sentences for {len(train_text)} tokenised rows")
    found = ExactEmbeddingIndex(pool_vectors).search(query_vectors, K)
    rows, position = np.unique(found.indices.reshape(-1), return_inverse=True)
    cand_sentences = [pool_sentences[i] for i in rows]
    neighbours = position.reshape(found.indices.shape)
    return knn_data_from_tokens(teacher, train_text, labels, tokenize(tokenizer, cand_sentences, max_length),
                                cand_sentences, neighbours, found.scores, neighbours[: min(len(neighbours), 64), 0],
                                rows, batch_size=batch_size, device=device, amp=amp)


def prepare(name: str, tokenizer, mlm, *, max_length: int, sentences: int, teacher_sentences: int,
            teacher_epochs: int, teacher_lr: float, teacher_batch: int, generator_layers, head_sentences: int,
            head_epochs: int, embed, pool_sentences=None, pool_vectors=None, pair_pool_rows: int | None = None,
            K: int = 8, select_share: float = 0.1,
            select_sentences: int | None = None, dev_rows: int | None = None, seed: int = 0, device="cpu",
            amp: bool = False, freeze_embeddings: bool = False, eval_batch: int = 256,
            graphs: bool = False) -> Prepared:
    """Load GLUE task ``name`` and build what every method needs (:class:`Prepared`): the task split three ways
    (:func:`~kdtutorial.text.layercompare.build_task`), the teacher (``mlm``'s encoder fine-tuned on the first
    ``teacher_sentences`` rows), MATE-KD's generator (``mlm``'s embeddings and ``generator_layers`` under a
    masked-LM head fitted on ``head_sentences`` training rows, lesson 05's recipe) and Minimax-kNN's neighbours of
    the first ``sentences`` rows. ``embed(sentences)`` gives unit sentence vectors; single-sentence tasks search
    ``pool_sentences`` (with their ``pool_vectors``), pair tasks the sentences of the task's first
    ``pair_pool_rows`` training pairs (default: all) and of the students' own rows. ``graphs``: the teacher's steps
    replayed from a CUDA graph (:func:`kdtutorial.text.finetuning.fine_tune`; a CUDA device only)."""
    task = build_task(name, tokenizer, max_length, select_share=select_share, select_sentences=select_sentences,
                      seed=seed, dev_rows=dev_rows)
    teacher, scores = fine_tune_teacher(mlm.base_model, task, sentences=teacher_sentences, epochs=teacher_epochs,
                                        lr=teacher_lr, batch_size=teacher_batch, seed=seed, device=device, amp=amp,
                                        freeze_embeddings=freeze_embeddings, graphs=graphs)
    teacher.requires_grad_(False)
    generator = copy_layers_student(mlm, list(generator_layers))
    fit_mlm_head(generator, task.first(head_sentences)[0], mask_token_id=tokenizer.mask_token_id, epochs=head_epochs,
                 seed=seed, device=device, amp=amp, progress=False)
    text, labels = task.first(sentences)
    n = len(text)
    raw = task.train_raw.subset(range(n))
    run = dict(K=K, max_length=max_length, batch_size=eval_batch, device=device, amp=amp)
    if raw.sentence2 is None:
        if pool_sentences is None or pool_vectors is None:
            raise ValueError(f"{name} is a single-sentence task: Minimax-kNN needs pool_sentences and pool_vectors")
        knn = sentence_knn_data(teacher, tokenizer, text, labels, raw.sentence1, pool_sentences, pool_vectors,
                                embed(raw.sentence1), **run)
    else:
        rows = len(task.train_raw) if pair_pool_rows is None else min(pair_pool_rows, len(task.train_raw))
        knn = pair_knn_data(teacher, tokenizer, text, raw, labels, embed, pool_raw=task.train_raw.subset(range(rows)),
                            **run)
    release_memory()
    return Prepared(task, teacher, scores, mlm.base_model, generator.cpu(), tokenizer.mask_token_id,
                    unused_token_ids(tokenizer), knn)


def _train(method, student, prep: Prepared, text, labels, setting: AllSetting, seed: int, after) -> int:
    """Train ``student`` by ``method``; returns the student updates the method's own trainer reports."""
    s, teacher = setting, prep.teacher
    per_epoch = -(-len(text) // s.batch_size)
    common = dict(lr=s.lr, batch_size=s.batch_size, seed=seed, device=s.device, amp=s.amp,
                  freeze_embeddings=s.freeze_embeddings, after_step=after)
    if method in ("no KD", "KD", "PKD", "ALP-KD"):
        term, map_name, beta = {"no KD": ("none", None, 0.0), "KD": ("kd", None, 0.0),
                                "PKD": ("pkd", "pkd-skip", s.pkd_beta), "ALP-KD": ("alp", "alp", s.alp_beta)}[method]
        lmap = layer_map(map_name, s.layers, len(encoder_layers(teacher.encoder))) if map_name else None
        losses, _ = distil_with_layers(teacher, student, text, labels, term=term, lmap=lmap, T=s.T, alpha=s.alpha,
                                       beta=beta, epochs=-(-s.updates // per_epoch), max_steps=s.updates,
                                       progress=False, **common)
        return len(losses)
    if method == "Annealing KD":
        out = train_annealing_text(teacher, student, text, labels, updates=s.updates, stage1_share=s.stage1_share,
                                 tau_max=s.tau_max, **common)
        return len(out["stage1"]) + len(out["stage2"])
    if method == "MATE-KD":
        history = train_mate_kd(teacher, student, copy.deepcopy(prep.generator), text, labels,
                                mask_token_id=prep.mask_token_id, student_steps=s.updates, n_gen=s.n_gen,
                                n_student=s.n_student, p=s.p_mask, tau=s.mate_tau, lam=s.mate_lam, gen_lr=s.gen_lr,
                                never_write=prep.never_write, progress=False, **common)
        return sum(h["phase"] == "student" for h in history)
    if method == "Annealing + MATE":
        out = train_annealing_mate(teacher, student, copy.deepcopy(prep.generator), text, labels,
                                   mask_token_id=prep.mask_token_id, updates=s.updates, stage1_share=s.stage1_share,
                                   tau_max=s.tau_max, n_gen=s.n_gen, n_student=s.n_student, p=s.p_mask,
                                   tau=s.mate_tau, gen_lr=s.gen_lr, never_write=prep.never_write, **common)
        return sum(h["phase"] == "student" for h in out["stage1"]) + len(out["stage2"])
    if method == "Minimax-kNN":
        knn_setting = KnnSetting(steps=s.updates, batch_size=s.batch_size, lr=s.lr, tau=s.T, alpha=s.alpha,
                                 freeze_embeddings=s.freeze_embeddings, device=s.device, amp=s.amp,
                                 eval_batch=s.eval_batch)
        run = train_knn_student(student, prep.knn, Augmentation("minimax", s.k1, s.max_distance), knn_setting,
                                seed=seed, after_step=after)
        return len(run.history)
    raise ValueError(f"method = {method!r} is not allowed: expected one of {', '.join(METHODS)}")


def train_one(method: str, prep: Prepared, seed: int, setting: AllSetting) -> dict:
    """Train and score one student by ``method`` from ``seed``; returns its record: ``task``, ``method``, ``seed``,
    ``updates`` (as the method's trainer counted them), ``data`` (:func:`data_fingerprint`), the checkpoint kept
    (``selected_update``) with its held-out score (``selection``) and dev metrics (``dev`` is the task's main
    metric, ``dev_<metric>`` each metric), ``dev_oracle`` (the best dev score over the checkpoints: choosing on
    the reported set), ``seconds`` (training only; scoring excluded) and ``peak_mib`` (GPU)."""
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is not allowed: expected one of {', '.join(METHODS)}")
    task, s = prep.task, setting
    text, labels = task.first(s.sentences)
    if method == "Minimax-kNN" and data_fingerprint(prep.knn.train_text, prep.knn.labels) != data_fingerprint(text, labels):
        raise ValueError(f"the kNN transfer set ({len(prep.knn)} rows) is not the {len(text)} rows the students "
                         f"train on: build it from task.first({s.sentences})")
    at = set(checkpoint_updates(s.updates, s.checkpoints))
    metric = glue.main_metric(task.name)
    scored, paused = [], [0.0]

    def after(u):
        if u not in at:
            return
        synchronize(s.device)
        start = time.perf_counter()
        select = task.score(student, "select", device=s.device, amp=s.amp, batch_size=s.eval_batch)[metric]
        dev = task.score(student, "dev", device=s.device, amp=s.amp, batch_size=s.eval_batch)
        scored.append({"update": u, "select": select, "dev": dev})
        paused[0] += time.perf_counter() - start

    seed_everything(seed)
    student = new_student(prep.pretrained, s.layers, "bottom", n_classes=int(task.train_labels.max()) + 1)
    reset_peak_memory(s.device)
    synchronize(s.device)
    start = time.perf_counter()
    updates = _train(method, student, prep, text, labels, s, seed, after)
    synchronize(s.device)
    seconds = time.perf_counter() - start - paused[0]
    if not scored:
        raise RuntimeError(f"{method}: no checkpoint was scored (updates {updates}, checkpoints {sorted(at)})")
    best = max(scored, key=lambda c: (c["select"], -c["update"]))  # ties: the earlier checkpoint
    record = {"task": task.name, "method": method, "seed": seed, "updates": updates, "data": data_fingerprint(text, labels),
              "selected_update": best["update"], "selection": best["select"], "dev": best["dev"][metric],
              **{f"dev_{k}": v for k, v in best["dev"].items()},
              "dev_oracle": max(c["dev"][metric] for c in scored), "seconds": seconds, "peak_mib": peak_memory_mib(s.device),
              "checkpoints": [(c["update"], c["select"], c["dev"][metric]) for c in scored]}
    del student
    release_memory()
    return record


def check_same_budget(records, updates: int) -> None:
    """Raise ``AssertionError`` unless, task by task, every method ran the same seeds on the same training data
    (equal :func:`data_fingerprint`) with exactly ``updates`` student updates."""
    for task in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == task]
        seeds = {m: sorted(r["seed"] for r in rows if r["method"] == m) for m in {r["method"] for r in rows}}
        if len({tuple(v) for v in seeds.values()}) != 1:
            raise AssertionError(f"{task}: the methods ran different seeds: {seeds}")
        if len({r["data"] for r in rows}) != 1:
            raise AssertionError(f"{task}: the methods trained on different data: {sorted({r['data'] for r in rows})}")
        wrong = [(r["method"], r["seed"], r["updates"]) for r in rows if r["updates"] != updates]
        if wrong:
            raise AssertionError(f"{task}: student updates differ from {updates}: {wrong}")


def _student_job(prepared: dict, job) -> dict:
    key, method, seed, setting = job
    return train_one(method, prepared[key], seed, setting)


def run_students(prepared: dict, jobs, *, workers: int = 1, progress=None) -> list:
    """Train the students ``jobs`` (``(key of prepared, method, seed, setting)`` each, :func:`train_one`) and return
    their records in the order of ``jobs``.

    ``workers > 1`` trains that many students at a time in separate processes on the same device
    (:func:`~kdtutorial.common.processes.run_jobs`): a small student's step is bound by the CPU launching GPU kernels,
    so several processes keep one GPU busier. Each process receives the prepared tasks once (data, model configs and
    weights; it rebuilds the models) and :func:`train_one` seeds every student itself, so a record does not depend on
    which process trained it (up to a GPU's run-to-run variation); wall times are then measured while sharing the
    device. ``progress``: a tqdm bar advanced once per student."""
    return run_jobs(_student_job, prepared, jobs, workers=workers, progress=progress)


def compare_all(prepared: dict, methods, seeds, setting: AllSetting, *, workers: int = 1, progress=None) -> list:
    """Every ``task x seed x method`` student (:func:`train_one`); ``prepared``: task name -> :class:`Prepared`.
    Checks the shared budget (:func:`check_same_budget`) before returning the records. ``workers``: students
    trained at a time (:func:`run_students`); ``progress``: a tqdm bar advanced once per student."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods {unknown} are not known: expected some of {', '.join(METHODS)}")
    jobs = [(name, method, seed, setting) for name in prepared for seed in seeds for method in methods]
    records = run_students(prepared, jobs, workers=workers, progress=progress)
    check_same_budget(records, setting.updates)
    return records


def average_records(records, metric: str = "dev") -> list:
    """One record per ``(method, seed)`` holding the mean of ``metric`` over the tasks (the GLUE-style average);
    only seeds every task ran count."""
    tasks = sorted({r["task"] for r in records})
    out = []
    for method in dict.fromkeys(r["method"] for r in records):
        by_seed = {}
        for r in records:
            if r["method"] == method:
                by_seed.setdefault(r["seed"], {})[r["task"]] = r[metric]
        for seed, values in sorted(by_seed.items()):
            if len(values) == len(tasks):
                out.append({"method": method, "seed": seed, metric: float(np.mean([values[t] for t in tasks]))})
    return out


def inflation(records) -> list:
    """One record per student: how much choosing the checkpoint on the reported dev set raises its score
    (``dev_oracle - dev``, points)."""
    return [{"task": r["task"], "method": r["method"], "seed": r["seed"], "inflation": r["dev_oracle"] - r["dev"]}
            for r in records]


def talk_ordering(average, order=TALK_ORDER, metric: str = "dev") -> list:
    """The talk's ranking checked step by step: for each neighbouring pair ``(a, b)`` of ``order``, the paired
    difference ``b - a`` of the task-averaged score over seeds (:func:`kdtutorial.common.statistics.paired`)."""
    return [(a, b, paired(average, b, a, metric=metric)) for a, b in zip(order, order[1:])]


def results_table(records, methods, tasks, metric: str = "dev", digits: int = 1) -> pd.DataFrame:
    """Methods x (tasks, then the average over tasks): ``mean ± std`` over seeds of ``metric``."""
    frame, average = pd.DataFrame(records), pd.DataFrame(average_records(records, metric))
    cells = {}
    for task in tasks:
        part = frame[frame.task == task]
        cells[f"{task} ({glue.main_metric(task)})"] = [
            "{:.{d}f} ± {:.{d}f}".format(*mean_std(part.loc[part.method == m, metric]), d=digits) for m in methods]
    cells["average"] = ["{:.{d}f} ± {:.{d}f}".format(*mean_std(average.loc[average.method == m, metric]), d=digits)
                        for m in methods]
    return pd.DataFrame(cells, index=pd.Index(list(methods), name="method"))


def cost_table(records, methods, baseline: str = "no KD", metric: str = "dev") -> pd.DataFrame:
    """Per method: student updates, mean training seconds per student, peak GPU MiB, and the mean gain of the
    task-averaged ``metric`` over ``baseline`` (points): what each method costs beside what it brings."""
    frame, average = pd.DataFrame(records), pd.DataFrame(average_records(records, metric))
    base = average[average.method == baseline].set_index("seed")[metric]
    rows = []
    for m in methods:
        part, mine = frame[frame.method == m], average[average.method == m].set_index("seed")[metric]
        gain = (mine - base.reindex(mine.index)).mean() if len(mine) else float("nan")
        rows.append({"method": m, "student updates": int(part.updates.iloc[0]),
                     "seconds per student": round(float(part.seconds.mean()), 1),
                     "peak GPU MiB": round(float(part.peak_mib.mean()), 0),
                     f"gain over {baseline} (points)": round(float(gain), 2)})
    return pd.DataFrame(rows).set_index("method")


def claim_status(verdict, expected: str = "higher") -> str:
    """How a paired verdict stands against a claim that the method is ``expected`` (higher / lower) than its
    baseline: ``reproduces``, ``the opposite``, ``not resolved`` (interval includes 0) or ``not judged``."""
    if verdict.n < 3:
        return "not judged (fewer than 3 seeds)"
    if verdict.verdict == "not distinguishable":
        return "not resolved: not distinguishable"
    return "reproduces" if verdict.verdict == expected else "does not reproduce: the opposite"
