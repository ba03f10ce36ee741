"""Lesson 06: does a stronger teacher give the deployable students room to gain from distillation?

With the lesson's MiniLM teacher (0.831 ROC-AUC on QADSM-de) distillation bought C-DSSM nothing (-0.6 AUC points,
gain kept -10%) and TwinBERT-Tiny +0.6 in the archived full run, against issue bars of half the gain kept and +3
points; the teacher is only 6.0 and 4.6 points above them. all-mpnet-base-v2 (12 layers, 768 wide) is the course's
largest offline encoder. Here each encoder in ``--teachers`` is fine-tuned as the lesson's step (b) (``kd.crossencoder.fine_tune_cross_encoder``,
its plain published encoder, one seed: the recipe's one teacher), scores the same million transfer pairs and the
labelled pairs, and every student of ``--students`` is trained by the lesson's jobs
(``kd.studentruns.run_two_towers``, the full profile's rates, epochs and batches) on the labels alone and distilled
from each teacher, seeds 0 .. ``--seeds``-1. Only the teacher changes: the transfer set (neighbours by MiniLM's
sentence vectors), the students' tokenizer and weights (MiniLM's) and the seeds are the same for all.

Lines: ``teacher`` (test ROC-AUC, scoring speed), ``student`` (one per job: test ROC-AUC, before fine-tuning too),
``summary`` (per teacher and student: labels-only and distilled means, the paired gain with its 95% interval and
verdict, and the share of the teacher's gain kept, (distilled - labels only) / (teacher - labels only)).

Run: ``python benchmarks/qadsm_teacher_room.py --out room.jsonl`` on a CUDA GPU (``KDTUTORIAL_DATA`` set, MPNet from
``$KDTUTORIAL_MODELS/all-mpnet-base-v2`` or its wheels). MPNet needs a smaller rate than the lesson's 1e-4, e.g.
``--teachers $MPNET $MPNET --teacher-lr 2e-5 5e-5``. On a CPU, a smoke run:
``--train-pairs 300 --test-pairs 300 --transfer-pairs 3000 --seeds 1 --teacher-epochs 1 --workers 1``.

Archived as ``results/full/06_teacher_room_h200.jsonl`` (one H200, 2026-12-07; two runs, each line tagged with its
``run`` and its teacher's ``teacher_lr``, the teacher's hub id shortened to its last part): run 1 the defaults (6 min
56 s), run 2 MPNet at 2e-5 and 5e-5 (7 min 46 s). MiniLM's teacher reached 0.832 and MPNet's 0.640 (1e-4: the
fine-tuning collapsed), 0.833 (2e-5) and 0.814 (5e-5): no more room than MiniLM's. Distilled from MiniLM, C-DSSM
lost 0.7 points (lower) and TwinBERT-Tiny gained 0.3 (not distinguishable); from MPNet at 2e-5 they lost 2.5 and
1.2 points (both lower, 3 of 3 seeds).
It replaces ``benchmarks/qadsm_teachers.py`` (the two teachers alone over seeds, removed at the review of
2026-12-07), whose only run was a CPU probe at a fifth of the training (3,000 pairs, one epoch, lr 5e-5, seed 0,
2,000 test pairs): MPNet 0.752 against MiniLM 0.715, a hint that the full size above did not bear out.
"""
from __future__ import annotations

import argparse
import copy
import json
import pathlib
import time

import numpy as np

import kdtutorial as kd
from _jsonlines import emitter  # benchmarks/_jsonlines.py (this folder is on the path when a script runs)

TEACHERS = ["sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"]
STUDENTS = ["C-DSSM", "TwinBERT-Tiny"]


def full_profile() -> dict:
    """Lesson 06's parameters in its full profile: the notebook's parameters cell, then the profile's values."""
    notebook = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "06_qadsm_two_tower.ipynb"
    cell = next(c for c in json.loads(notebook.read_text())["cells"]
                if "parameters" in c.get("metadata", {}).get("tags", []))
    defaults = {}
    exec("".join(cell["source"]), {}, defaults)  # the course's own notebook: plain assignments of constants
    return {**defaults, **kd.lessons.lesson("06_qadsm_two_tower").full, "PROFILE": "full"}


def main(argv=None) -> None:
    full = full_profile()
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--teachers", nargs="+", default=TEACHERS, help="encoders the cross-encoder teacher starts from")
    p.add_argument("--students", nargs="+", default=STUDENTS, help="kinds of kd.studentkinds")
    p.add_argument("--train-pairs", type=int, default=full["TRAIN_PAIRS"])
    p.add_argument("--test-pairs", type=int, default=full["TEST_PAIRS"])
    p.add_argument("--transfer-pairs", type=int, default=full["TRANSFER_PAIRS"])
    p.add_argument("--teacher-epochs", type=int, default=full["TEACHER_EPOCHS"])
    p.add_argument("--teacher-lr", type=float, nargs="+", default=[full["TEACHER_LR"]],
                   help="one rate for every teacher, or one per teacher (an encoder may then be named twice)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=full["WORKERS"])
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if len(args.teacher_lr) not in (1, len(args.teachers)):
        p.error(f"--teacher-lr takes 1 or {len(args.teachers)} rates (one per teacher), got {len(args.teacher_lr)}")
    rates = args.teacher_lr * len(args.teachers) if len(args.teacher_lr) == 1 else args.teacher_lr
    if len(set(zip(args.teachers, rates))) != len(args.teachers):
        p.error(f"--teachers names an encoder twice with the same rate: {args.teachers}, {rates}")
    for kind in args.students:
        kd.studentkinds.student_kind(kind)  # an unknown kind fails before anything is trained
    emit = emitter(args.out)
    device = kd.environment.resolve_device(args.device)
    amp = device.type == "cuda"
    length, q_len, ad_len = full["MAX_LENGTH"], full["MAX_QUERY_LEN"], full["MAX_AD_LEN"]
    train = kd.qadsm.load_qadsm("de", "train").data.shuffle(seed=0).select(range(args.train_pairs))
    test = kd.qadsm.load_qadsm("de", "test").data.shuffle(seed=0).select(range(args.test_pairs))
    y_train, y_test = np.asarray(train["label"]), np.asarray(test["label"])
    train_ads, test_ads = kd.crossencoder.ads_of(train), kd.crossencoder.ads_of(test)

    # the students' side of things, the same for every teacher: MiniLM's tokenizer and weights, its transfer set
    student_tokenizer = kd.hub.load_tokenizer(TEACHERS[0])
    student_encoder = kd.hub.load_masked_lm(TEACHERS[0]).base_model

    def embed(texts):
        return kd.rankers.sentence_vectors(student_encoder, student_tokenizer, texts, ad_len, batch_size=1024,
                                           device=device, amp=amp)

    t0 = time.perf_counter()
    transfer = kd.transfer.transfer_index(train, args.transfer_pairs, seed=0, candidates="neighbours", embed=embed)
    sides = dict(
        transfer=kd.rankers.padded_sides(*kd.rankers.tokenize_sides(
            student_tokenizer, transfer.queries, transfer.ads(), q_len, ad_len, query_ids=transfer.query_ids,
            ad_ids=transfer.ad_ids)),
        train=kd.rankers.tokenize_sides(student_tokenizer, train["query"], train_ads, q_len, ad_len),
        test=kd.rankers.tokenize_sides(student_tokenizer, test["query"], test_ads, q_len, ad_len))
    hashing = kd.twotower.CDSSM()
    trigrams = dict(
        transfer=kd.rankers.trigram_sides(hashing, transfer.queries, transfer.ads(), query_ids=transfer.query_ids,
                                          ad_ids=transfer.ad_ids),
        train=kd.rankers.trigram_sides(hashing, train["query"], train_ads),
        test=kd.rankers.trigram_sides(hashing, test["query"], test_ads))
    emit(step="transfer", pairs=len(transfer), seconds=round(time.perf_counter() - t0, 1))

    score = dict(batch_size=4096 if amp else 256, device=device, amp=amp, bf16_weights=amp, warmup=amp)
    teachers = {}  # name -> (logits on the transfer pairs, on the training pairs), test AUC
    names = []  # one per teacher: its encoder, and its rate where an encoder comes twice
    for encoder, lr in zip(args.teachers, rates):
        name = encoder if args.teachers.count(encoder) == 1 else f"{encoder} (lr {lr:g})"
        names.append(name)
        t0 = time.perf_counter()
        tokenizer = kd.hub.load_tokenizer(encoder)
        kd.environment.seed_everything(0)
        model = kd.crossencoder.CrossEncoder(copy.deepcopy(kd.hub.load_masked_lm(encoder).base_model))
        kd.crossencoder.fine_tune_cross_encoder(
            model, kd.crossencoder.tokenize_pairs(tokenizer, train["query"], train_ads, length), y_train,
            epochs=args.teacher_epochs, lr=lr, batch_size=full["BATCH_SIZE"], seed=0, device=device, amp=amp,
            progress=False)
        finetune_s = time.perf_counter() - t0
        on_test, _ = kd.crossencoder.score_pairs(
            model, kd.crossencoder.pair_matrix(tokenizer, test["query"], test_ads, length), **score)
        on_train, _ = kd.crossencoder.score_pairs(
            model, kd.crossencoder.pair_matrix(tokenizer, train["query"], train_ads, length), **score)
        pairs = kd.crossencoder.pair_matrix(tokenizer, transfer.queries, transfer.ads(), length,
                                            query_ids=transfer.query_ids, ad_ids=transfer.ad_ids)
        on_transfer, stats = kd.crossencoder.score_pairs(model, pairs, **score)
        auc = float(kd.metrics.roc_auc(y_test, on_test))
        teachers[name] = ((on_transfer, on_train), auc)
        emit(step="teacher", teacher=name, lr=lr, seed=0, test_auc=round(auc, 4), finetune_s=round(finetune_s, 1),
             scoring_pairs_per_s=round(stats["pairs_per_s"]), mean_transfer_p_good=round(
                 float(np.mean(1 / (1 + np.exp(-on_transfer)))), 3), device=kd.environment.banner(device))
        del model, pairs
        kd.environment.release_memory()

    seeds = kd.statistics.seeds_from(0, args.seeds)
    records = []
    for i, name in enumerate(names):
        runs = kd.studentruns.StudentRuns(
            pretrained=student_encoder, layers=full["STUDENT_LAYERS"], tokens=sides, trigrams=trigrams,
            labels=y_train, teachers={"one": teachers[name][0]},
            rates=dict(labels=full["STUDENT_LR"], distil=full["DISTILL_LR"], finetune=full["FINETUNE_LR"],
                       scratch=full["SCRATCH_LR"]),
            epochs=dict(labels=full["STUDENT_EPOCHS"], scratch=full["SCRATCH_EPOCHS"],
                        distil=full["DISTILL_EPOCHS"], finetune=full["FINETUNE_EPOCHS"]),
            batch_size=2 * full["BATCH_SIZE"], distil_batch=full["DISTILL_BATCH"], kd_loss=full["KD_LOSS"],
            temperature=full["KD_TEMPERATURE"], alpha=full["ALPHA"], options=dict(device=device, amp=amp))
        hows = ("labels", "distilled") if i == 0 else ("distilled",)  # labels-only students do not see a teacher
        jobs = [(kind, seed, how) for seed in seeds for kind in args.students for how in hows]
        t0 = time.perf_counter()
        for job in kd.studentruns.run_two_towers(runs, jobs, workers=args.workers):
            before = job["after_distillation"]
            record = dict(kind=job["kind"], seed=job["seed"], how=job["how"],
                          teacher=None if job["how"] == "labels" else name,
                          test_auc=round(float(kd.metrics.roc_auc(y_test, job["test_logits"])), 4),
                          test_auc_before_finetuning=None if before is None else round(
                              float(kd.metrics.roc_auc(y_test, before)), 4))
            records.append(record)
            emit(step="student", **record)
        emit(step="students", teacher=name, jobs=len(jobs), workers=args.workers,
             seconds=round(time.perf_counter() - t0, 1))
    for line in summary(records, {name: auc for name, (_, auc) in teachers.items()}):
        emit(**line)


def summary(records, teacher_auc: dict) -> list:
    """Per teacher and student kind: the labels-only and distilled test ROC-AUC (mean +- std over seeds), the paired
    gain (``kd.statistics.paired``: AUC points, 95% interval, verdict; nothing judged below 3 seeds) and the share of
    the teacher's gain kept, (distilled - labels only) / (teacher - labels only), in % of the mean AUCs."""
    lines = []
    for name, auc in teacher_auc.items():
        for kind in dict.fromkeys(r["kind"] for r in records):
            rows = [dict(method=r["how"], seed=r["seed"], test_auc=r["test_auc"]) for r in records
                    if r["kind"] == kind and (r["how"] == "labels" or r["teacher"] == name)]
            if not {"labels", "distilled"} <= {r["method"] for r in rows}:
                continue
            p = kd.statistics.paired(rows, "distilled", "labels", metric="test_auc")
            label = kd.statistics.mean_std([r["test_auc"] for r in rows if r["method"] == "labels"])
            distil = kd.statistics.mean_std([r["test_auc"] for r in rows if r["method"] == "distilled"])
            room = auc - label[0]
            lines.append(dict(step="summary", teacher=name, teacher_test_auc=round(auc, 4), student=kind,
                              labels_only="{:.4f} +- {:.4f}".format(*label),
                              distilled="{:.4f} +- {:.4f}".format(*distil),
                              gain_points=round(100 * p.mean, 2),
                              ci95_points=[round(100 * p.low, 2), round(100 * p.high, 2)] if p.n >= 3 else None,
                              higher_in=f"{p.n_higher} of {len(p.seeds)}", verdict=p.verdict,
                              gain_kept_pct=round(100 * (distil[0] - label[0]) / room, 1) if room > 0 else None))
    return lines


if __name__ == "__main__":
    main()
