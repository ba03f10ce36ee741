"""Lesson 06 on a GPU, outside the notebook: which transfer set, which teacher, how fast can the teacher score?

One seed, TwinBERT_res, the notebook's full-profile settings. Prints one JSON line per measurement (and appends it
to the file given by ``--out``):

* ``teacher``: the cross-encoder's test ROC-AUC;
* ``label_only``: the student fine-tuned on the labels alone;
* ``distilled``: the student distilled on a 1M-pair transfer set drawn with ``--candidates`` (each of them in
  turn), then fine-tuned on labels + teacher scores; test ROC-AUC before and after the labels;
* ``scoring``: teacher-scoring throughput of :func:`kdtutorial.ranking.crossencoder.score_pairs` (bf16 weights, length
  bucketing) at several batch sizes, and with ``torch.compile``;
* ``ensemble``: the mean logit of ``--teachers`` cross-encoders (seeds 0, 1, ...), and a student distilled from it;
* ``--distil-epochs``: each distilled student once per number of passes over the transfer set;
* ``serving``: :func:`kdtutorial.ranking.rankers.serve_grid` over every test query x every test ad (an untrained
  TwinBERT_res and _cos: the cost does not depend on the weights), queries encoded in batches of
  ``--serve-batches``.

Run: ``python benchmarks/qadsm_transfer_sets.py --out results.jsonl`` (a CUDA GPU; ``KDTUTORIAL_DATA`` set).
The archived ``results/full/06_transfer_sets_h100.jsonl`` came from the defaults, and
``results/full/06_kd_gain_h100.jsonl`` from ``--candidates neighbours --teachers 3 --distil-epochs 1 3 --skip scoring``
(its ``grid`` lines came from an earlier form of this script that swept the residual grid's query chunk on the
encoded test vectors; that sweep now lives, on random vectors, in ``benchmarks/residual_grid.py --chunks``).
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

import kdtutorial as kd
from _jsonlines import emitter  # benchmarks/_jsonlines.py (this folder is on the path when a script runs)
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.ranking import rankers, metrics, twotower
from kdtutorial.ranking import qadsm


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--transfer-pairs", type=int, default=1_000_000)
    p.add_argument("--candidates", nargs="+", default=["overlap", "neighbours"])
    p.add_argument("--teachers", type=int, default=3)
    p.add_argument("--score-batches", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--distil-epochs", type=int, nargs="+", default=[1])
    p.add_argument("--serve-batches", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--skip", nargs="*", default=[])
    p.add_argument("--smoke", action="store_true", help="128 train and test pairs, a CPU check of the plumbing")
    args = p.parse_args(argv)
    emit = emitter(args.out)

    device = kd.environment.resolve_device("auto")
    amp = device.type == "cuda"
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tokenizer, pretrained = kd.hub.load_tokenizer(name), kd.hub.load_masked_lm(name).base_model
    train, test = (qadsm.load_qadsm("de", split).data for split in ("train", "test"))
    if args.smoke:
        train, test = train.select(range(128)), test.select(range(128))
    y_train, y_test = np.asarray(train["label"]), np.asarray(test["label"])
    train_ads, test_ads = ce.ads_of(train), ce.ads_of(test)
    train_pairs = ce.tokenize_pairs(tokenizer, train["query"], train_ads, 64)
    test_pairs = ce.pair_matrix(tokenizer, test["query"], test_ads, 64)
    score = dict(batch_size=4096, device=device, amp=amp, bf16_weights=amp, warmup=amp)

    def teacher_of(seed):
        kd.environment.seed_everything(seed)
        model = ce.CrossEncoder(copy.deepcopy(pretrained))
        t0 = time.perf_counter()
        ce.fine_tune_cross_encoder(model, train_pairs, y_train, epochs=3, lr=1e-4, batch_size=32, seed=seed,
                                   device=device, amp=amp, progress=False)
        return model, time.perf_counter() - t0

    teachers = [teacher_of(0)]
    teacher = teachers[0][0]
    test_logits = [ce.score_pairs(teacher, test_pairs, **score)[0]]
    train_logits = [ce.score_pairs(teacher, train_pairs, **score)[0]]
    emit(step="teacher", seed=0, roc_auc=round(metrics.roc_auc(y_test, test_logits[0]), 4),
         finetune_s=round(teachers[0][1], 1))

    side = dict(max_query_len=16, max_ad_len=48)
    sides = {split: rankers.tokenize_sides(tokenizer, d["query"], ads, **side)
             for split, d, ads in (("train", train, train_ads), ("test", test, test_ads))}

    def embed(texts):
        return rankers.sentence_vectors(pretrained, tokenizer, texts, 48, batch_size=1024, device=device, amp=amp)

    transfer = {}
    for candidates in args.candidates:
        t0 = time.perf_counter()
        index = transfer.transfer_index(train, args.transfer_pairs, seed=0, candidates=candidates,
                                        embed=embed if candidates == "neighbours" else None)
        pairs = ce.pair_matrix(tokenizer, index.queries, index.ads(), 64, query_ids=index.query_ids,
                               ad_ids=index.ad_ids)
        drawn_s = time.perf_counter() - t0
        logits, stats = ce.score_pairs(teacher, pairs, **score)
        transfer[candidates] = (index, pairs, logits,
                                rankers.tokenize_sides(tokenizer, index.queries, index.ads(), **side,
                                                       query_ids=index.query_ids, ad_ids=index.ad_ids))
        emit(step="transfer", candidates=candidates, pairs=len(index), draw_s=round(drawn_s, 1),
             share_word=round(float(index.overlap.mean()), 3),
             mean_p_good=round(float(np.mean(1 / (1 + np.exp(-logits)))), 3),
             pairs_per_s=round(stats["pairs_per_s"]))

    def student(seed):
        kd.environment.seed_everything(seed)
        return twotower.TwinBERT(kd.students.copy_layers_encoder(pretrained, [0, 2, 4]), crossing="res")

    common = dict(seed=0, device=device, amp=amp, progress=False)
    if "label_only" not in args.skip:
        s = student(0)
        rankers.fine_tune_two_tower(s, *sides["train"], y_train, epochs=3, lr=1e-4, batch_size=64, **common)
        emit(step="label_only", roc_auc=round(metrics.roc_auc(y_test, rankers.score_two_tower(
            s, *sides["test"], device=device, amp=amp)), 4))

    def distil(logits_transfer, transfer_sides, logits_train, epochs=1):
        s = student(0)
        t0 = time.perf_counter()
        rankers.distil_two_tower(s, *transfer_sides, logits_transfer, epochs=epochs, lr=3e-4, batch_size=1024,
                                 **common)
        seconds = time.perf_counter() - t0
        before = metrics.roc_auc(y_test, rankers.score_two_tower(s, *sides["test"], device=device, amp=amp))
        rankers.fine_tune_two_tower(s, *sides["train"], y_train, teacher_logits=logits_train, alpha=0.5, epochs=2,
                                    lr=5e-5, batch_size=64, **common)
        after = metrics.roc_auc(y_test, rankers.score_two_tower(s, *sides["test"], device=device, amp=amp))
        return round(before, 4), round(after, 4), round(seconds, 1)

    for candidates, (_, _, logits, t_sides) in transfer.items():
        for epochs in args.distil_epochs:
            before, after, seconds = distil(logits, t_sides, train_logits[0], epochs)
            emit(step="distilled", candidates=candidates, teacher="seed 0", distil_epochs=epochs,
                 roc_auc_before_labels=before, roc_auc=after, distil_s=seconds)

    if "serving" not in args.skip:
        all_q, all_a, _, _ = ce.pair_index(test["query"], test_ads)
        q_all, _ = rankers.tokenize_sides(tokenizer, all_q, all_q, 16, 16)
        _, a_all = rankers.tokenize_sides(tokenizer, all_a, all_a, 48, 48)
        for crossing in ("res", "cos"):
            server = twotower.TwinBERT(kd.students.copy_layers_encoder(pretrained, [0, 2, 4]), crossing=crossing)
            for batch in args.serve_batches:
                for _ in range(2):  # the first call pays for kernel selection: report the second
                    _, served = rankers.serve_grid(server, q_all, a_all, batch_size=batch, device=device, amp=amp)
                emit(step="serving", crossing=crossing, query_batch=batch, pairs=served["pairs"],
                     query_ms=round(1000 * served["query_seconds"], 2),
                     grid_ms=round(1000 * served["scoring_seconds"], 2),
                     online_ms=round(1000 * served["online_seconds"], 2), pairs_per_s=round(served["pairs_per_s"]))
            del server

    last = args.candidates[-1]
    _, pairs, _, t_sides = transfer[last]
    if "scoring" not in args.skip and amp:
        for batch in args.score_batches:
            _, stats = ce.score_pairs(teacher, pairs, **{**score, "batch_size": batch})
            emit(step="scoring", variant=f"bf16 weights, bucketed, batch {batch}",
                 pairs_per_s=round(stats["pairs_per_s"]))
        fast = copy.deepcopy(teacher).to(device=device, dtype=torch.bfloat16)
        t0 = time.perf_counter()
        compiled = torch.compile(fast, dynamic=True)
        _, stats = ce.score_pairs(compiled, pairs, **{**score, "bf16_weights": False, "amp": False})
        emit(step="scoring", variant="bf16 weights, bucketed, batch 4096, torch.compile(dynamic=True)",
             pairs_per_s=round(stats["pairs_per_s"]), first_call_s=round(time.perf_counter() - t0, 1))
        _, stats = ce.score_pairs(compiled, pairs, **{**score, "bf16_weights": False, "amp": False})
        emit(step="scoring", variant="torch.compile, second call", pairs_per_s=round(stats["pairs_per_s"]))
        del compiled, fast

    if args.teachers > 1:
        transfer_logits = [transfer[last][2]]
        for seed in range(1, args.teachers):
            model, seconds = teacher_of(seed)
            test_logits.append(ce.score_pairs(model, test_pairs, **score)[0])
            train_logits.append(ce.score_pairs(model, train_pairs, **score)[0])
            transfer_logits.append(ce.score_pairs(model, pairs, **score)[0])
            emit(step="teacher", seed=seed, roc_auc=round(metrics.roc_auc(y_test, test_logits[-1]), 4),
                 finetune_s=round(seconds, 1))
            del model
        mean_test = np.mean(test_logits, axis=0)
        emit(step="ensemble", teachers=args.teachers, roc_auc=round(metrics.roc_auc(y_test, mean_test), 4))
        for epochs in args.distil_epochs:
            before, after, seconds = distil(np.mean(transfer_logits, axis=0), t_sides, np.mean(train_logits, axis=0),
                                            epochs)
            emit(step="distilled", candidates=last, teacher=f"ensemble of {args.teachers}", distil_epochs=epochs,
                 roc_auc_before_labels=before, roc_auc=after, distil_s=seconds)


if __name__ == "__main__":
    main()
