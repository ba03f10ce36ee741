"""Lesson 06: which offline encoder makes the stronger QADSM cross-encoder teacher, all-MiniLM-L6-v2 or
all-mpnet-base-v2?

Distillation can only pay where the teacher is well above the label-only student: the archived full run's MiniLM
teacher (0.831 ROC-AUC) is 2.4-3 points above the best two-tower students, so the AdsBERT bars (+3 points from
distillation, half of the teacher's gain kept by C-DSSM) cannot be reached with it. all-mpnet-base-v2 (12 layers, 768
wide, the course's largest offline encoder, lesson 07's teacher) is the candidate with more room. Each encoder here
is fine-tuned as the lesson's step (b) does (``kd.crossencoder.fine_tune_cross_encoder``: the same pairs, schedule and
seeds for both), then scored on QADSM-de's test pairs; the last line pairs the two over the seeds
(``kd.statistics.paired``: mean gain in AUC points, 95% interval, verdict; nothing is ranked below 3 seeds).

Run: ``python benchmarks/qadsm_teachers.py --out teachers.jsonl`` on a CUDA GPU (the lesson's full profile: 9,000
labelled pairs, 3 epochs, batch 32, 64 tokens, 10,000 test pairs; learning rate 1e-4 as the notebook's; 3 seeds;
``KDTUTORIAL_DATA`` set, MPNet from ``$KDTUTORIAL_MODELS/all-mpnet-base-v2`` or its wheels). On a CPU, smaller sizes,
e.g. ``--train-pairs 3000 --test-pairs 2000 --epochs 1 --seeds 1``: a first probe of this recipe at those sizes with
``--lr 5e-5``, seed 0, on a 2-core AMD EPYC (2026-12-07, beside a test run), took 2.6 min for MiniLM and 23 min for
MPNet and gave ROC-AUC 0.715 and 0.752 (one seed, a fifth of the full profile's training: a hint, not a ranking).
At full size on one H200 (``benchmarks/qadsm_teacher_room.py``, one seed, 2026-12-07) the hint did not hold: MPNet's
fine-tuning collapsed at 1e-4 (0.640) and reached 0.833 at 2e-5 and 0.814 at 5e-5, against MiniLM's 0.832 at 1e-4; so
give MPNet ``--lr 2e-5`` (one rate for both encoders here; that script takes one per teacher).
One JSON line per teacher and seed, also appended to ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np

import kdtutorial as kd
from _jsonlines import emitter  # benchmarks/_jsonlines.py (this folder is on the path when a script runs)

ENCODERS = ["sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--encoders", nargs="+", default=ENCODERS, help="hub ids or folders (the first is the baseline)")
    full = kd.lessons.lesson("06_qadsm_two_tower").full  # the full profile's pairs, epochs, batch and length
    p.add_argument("--train-pairs", type=int, default=full["TRAIN_PAIRS"])
    p.add_argument("--test-pairs", type=int, default=full["TEST_PAIRS"])
    p.add_argument("--epochs", type=int, default=full["TEACHER_EPOCHS"])
    p.add_argument("--lr", type=float, default=1e-4, help="the notebook's TEACHER_LR (not in the profile)")
    p.add_argument("--batch", type=int, default=full["BATCH_SIZE"])
    p.add_argument("--max-length", type=int, default=full["MAX_LENGTH"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if len(set(args.encoders)) != len(args.encoders):
        p.error(f"--encoders names an encoder twice: {args.encoders}")
    emit = emitter(args.out)
    device = kd.environment.resolve_device(args.device)
    amp = device.type == "cuda"
    train = kd.qadsm.load_qadsm("de", "train").data.shuffle(seed=0).select(range(args.train_pairs))
    test = kd.qadsm.load_qadsm("de", "test").data.shuffle(seed=0).select(range(args.test_pairs))
    y_train, y_test = np.asarray(train["label"]), np.asarray(test["label"])
    records = []
    for name in args.encoders:
        tokenizer = kd.hub.load_tokenizer(name)
        encoder = kd.hub.load_masked_lm(name).base_model
        train_pairs = kd.crossencoder.tokenize_pairs(tokenizer, train["query"], kd.crossencoder.ads_of(train),
                                                     args.max_length)
        test_pairs = kd.crossencoder.pair_matrix(tokenizer, test["query"], kd.crossencoder.ads_of(test),
                                                 args.max_length)
        for seed in kd.statistics.seeds_from(0, args.seeds):
            began = time.perf_counter()
            kd.environment.seed_everything(seed)
            model = kd.crossencoder.CrossEncoder(copy.deepcopy(encoder))
            losses = kd.crossencoder.fine_tune_cross_encoder(model, train_pairs, y_train, epochs=args.epochs,
                                                             lr=args.lr, batch_size=args.batch, seed=seed,
                                                             device=device, amp=amp, progress=False)
            logits, _ = kd.crossencoder.score_pairs(model, test_pairs, batch_size=1024, device=device, amp=amp)
            record = dict(teacher=name, seed=seed, train_pairs=args.train_pairs, test_pairs=args.test_pairs,
                          epochs=args.epochs, lr=args.lr, steps=len(losses),
                          roc_auc=round(float(kd.metrics.roc_auc(y_test, logits)), 4),
                          seconds=round(time.perf_counter() - began, 1), device=kd.environment.banner(device))
            records.append({**record, "method": name})
            emit(step="teacher", **record)
            del model
            kd.environment.release_memory()
    base, *others = args.encoders
    for other in others:
        verdict = kd.statistics.paired(records, other, base, metric="roc_auc")
        emit(step="paired", teacher=other, against=base, gain_points=round(100 * verdict.mean, 2),
             ci95_points=[round(100 * verdict.low, 2), round(100 * verdict.high, 2)] if verdict.n >= 3 else None,
             verdict=verdict.verdict)


if __name__ == "__main__":
    main()
