"""Lesson 06, C-DSSM only: how much of the teacher's gain does a distilled C-DSSM keep, and what does it depend on?

The talk's student (Microsoft Ads: the distilled C-DSSM keeps 70% of the AUC gain) kept 17% in the archived full run,
where it made one pass over the million-pair transfer set (`DISTILL_EPOCHS = 1`, a budget set by the TwinBERTs) and
its label-only rival trained 3 epochs (an earlier run's 6 epochs gave 0.763, above the distilled 0.760). So both sides
are swept here, on the same seeds:

* ``label_only``: C-DSSM on the labelled pairs for each of ``--label-epochs``;
* ``distilled``: C-DSSM on the teacher's logits over the transfer set for each of ``--distil-epochs``, then on the
  labels with the KD term (``--finetune-epochs``), as the notebook's steps (d) and (e).

Every student is scored on QADSM's dev split (to choose epochs on) and test split (to report): choosing on test would
flatter whichever side has more settings. The last line (:func:`summary`) pairs, per seed, the best-on-dev distilled
student with the best-on-dev label-only one (``kd.statistics.paired``: mean gain, 95% interval, verdict) and gives the
share of the teacher's gain kept, (distilled - labels only) / (teacher - labels only); it also pairs every distilled
setting and every longer label-only setting with the shortest label-only one. On an H100 one distillation pass took
16-19 s, three times the teacher's scoring of the million pairs (about 5 s at 188,000 pairs/s; 20 s with building the
transfer set), and a label epoch about 1 s.

Run: ``python benchmarks/cdssm_distillation.py --out cdssm.jsonl`` (a CUDA GPU: the full sizes; ``KDTUTORIAL_DATA``
set). On a CPU, smaller sizes, e.g. ``--train-pairs 3000 --transfer-pairs 40000 --teacher-epochs 2``.
One JSON line per measurement, also appended to ``--out``. A run cut short can be finished with ``--first-seed``;
``--summarize A.jsonl B.jsonl --out C.jsonl`` then writes the summary line of the lines of both (nothing is trained).
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np

import kdtutorial as kd
from _jsonlines import emitter  # benchmarks/_jsonlines.py (this folder is on the path when a script runs)
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.ranking import metrics, qadsm, rankers, studentkinds, transfer, twotower


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--train-pairs", type=int, default=None, help="labelled pairs (default: all)")
    p.add_argument("--transfer-pairs", type=int, default=1_000_000)
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1 (to finish "
                   "a run cut short; the summary line then covers these seeds only)")
    p.add_argument("--label-epochs", type=int, nargs="+", default=[3, 6, 12])
    p.add_argument("--distil-epochs", type=int, nargs="+", default=[1, 3, 10])
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--kd-loss", default="mse", choices=["mse", "bce"])
    p.add_argument("--scratch-lr", type=float, default=1e-3, help="C-DSSM's rate (the lesson's SCRATCH_LR)")
    p.add_argument("--distil-batch", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64, help="label batches (the lesson's 2 x BATCH_SIZE)")
    p.add_argument("--device", default="auto")
    p.add_argument("--summarize", nargs="+", default=None, metavar="JSONL",
                   help="only write the summary line of these files' measurements (runs of the same teacher)")
    args = p.parse_args(argv)
    emit = emitter(args.out)
    if args.summarize:
        lines = [json.loads(line) for path in args.summarize for line in open(path) if line.strip()]
        emit(**summary(lines))
        return
    lines = []  # every measurement, for the summary line

    def record(**measured):
        lines.append(measured)
        emit(**measured)

    device = kd.environment.resolve_device(args.device)
    amp = device.type == "cuda"
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tokenizer, pretrained = kd.hub.load_tokenizer(name), kd.hub.load_masked_lm(name).base_model
    train, dev, test = (qadsm.load_qadsm("de", split).data for split in ("train", "dev", "test"))
    if args.train_pairs:
        train = train.shuffle(seed=0).select(range(args.train_pairs))
    y = {"train": np.asarray(train["label"]), "dev": np.asarray(dev["label"]), "test": np.asarray(test["label"])}
    ads = {"train": ce.ads_of(train), "dev": ce.ads_of(dev), "test": ce.ads_of(test)}
    split_data = {"train": train, "dev": dev, "test": test}
    score = dict(batch_size=4096 if amp else 256, device=device, amp=amp, bf16_weights=amp, warmup=amp)

    # the teacher: the notebook's cross-encoder on the plain encoder, seed 0
    kd.environment.seed_everything(0)
    teacher = ce.CrossEncoder(copy.deepcopy(pretrained))
    t0 = time.perf_counter()
    ce.fine_tune_cross_encoder(teacher, ce.tokenize_pairs(tokenizer, train["query"], ads["train"], 64), y["train"],
                               epochs=args.teacher_epochs, lr=1e-4, batch_size=32, seed=0, device=device, amp=amp,
                               progress=False)
    finetune_s = time.perf_counter() - t0
    teacher_logits = {s: ce.score_pairs(teacher, ce.pair_matrix(tokenizer, split_data[s]["query"], ads[s], 64),
                                        **score)[0] for s in ("train", "dev", "test")}
    teacher_auc = {s: metrics.roc_auc(y[s], teacher_logits[s]) for s in ("dev", "test")}
    record(step="teacher", device=str(device), train_pairs=len(train), dev_auc=round(teacher_auc["dev"], 4),
           test_auc=round(teacher_auc["test"], 4), finetune_s=round(finetune_s, 1))

    def embed(texts):
        return rankers.sentence_vectors(pretrained, tokenizer, texts, 48, batch_size=1024, device=device, amp=amp)

    t0 = time.perf_counter()
    index = transfer.transfer_index(train, args.transfer_pairs, seed=0, candidates="neighbours", embed=embed)
    transfer_pairs = ce.pair_matrix(tokenizer, index.queries, index.ads(), 64, query_ids=index.query_ids,
                                    ad_ids=index.ad_ids)
    transfer_logits, stats = ce.score_pairs(teacher, transfer_pairs, **score)
    record(step="transfer", pairs=len(index), seconds=round(time.perf_counter() - t0, 1),
           scoring_pairs_per_s=round(stats["pairs_per_s"]))
    del teacher, transfer_pairs

    hashing = twotower.CDSSM()
    sides = {s: rankers.trigram_sides(hashing, split_data[s]["query"], ads[s]) for s in ("train", "dev", "test")}
    sides["transfer"] = rankers.trigram_sides(hashing, index.queries, index.ads(), query_ids=index.query_ids,
                                              ad_ids=index.ad_ids)
    # C-DSSM starts from random weights: its rates all come from the scratch rate (the others do not apply)
    rates = studentkinds.student_kind("C-DSSM").rates(labels=0.0, distil=0.0, finetune=0.0, scratch=args.scratch_lr)
    common = dict(device=device, amp=amp, progress=False)

    def scored(model):
        return {s: metrics.roc_auc(y[s], rankers.score_two_tower(model, *sides[s], device=device, amp=amp))
                for s in ("dev", "test")}

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        for epochs in args.label_epochs:
            model = studentkinds.build_student("C-DSSM", pretrained, [], seed)
            t0 = time.perf_counter()
            rankers.fine_tune_two_tower(model, *sides["train"], y["train"], epochs=epochs, lr=rates["labels"],
                                        batch_size=args.batch, seed=seed, **common)
            auc = scored(model)
            record(step="label_only", seed=seed, epochs=epochs, dev_auc=round(auc["dev"], 4),
                   test_auc=round(auc["test"], 4), train_s=round(time.perf_counter() - t0, 1))
        for epochs in args.distil_epochs:
            model = studentkinds.build_student("C-DSSM", pretrained, [], seed)
            t0 = time.perf_counter()
            rankers.distil_two_tower(model, *sides["transfer"], transfer_logits, kind=args.kd_loss, epochs=epochs,
                                     lr=rates["distil"], batch_size=args.distil_batch, seed=seed, **common)
            distil_s = time.perf_counter() - t0
            before = scored(model)
            rankers.fine_tune_two_tower(model, *sides["train"], y["train"], teacher_logits=teacher_logits["train"],
                                        kind=args.kd_loss, alpha=0.5, epochs=args.finetune_epochs,
                                        lr=rates["finetune"], batch_size=args.batch, seed=seed, **common)
            auc = scored(model)
            record(step="distilled", seed=seed, distil_epochs=epochs, kd_loss=args.kd_loss,
                   dev_auc_before_labels=round(before["dev"], 4), test_auc_before_labels=round(before["test"], 4),
                   dev_auc=round(auc["dev"], 4), test_auc=round(auc["test"], 4), distil_s=round(distil_s, 1))

    emit(**summary(lines))


def summary(lines) -> dict:
    """The summary line of a run's measurement ``lines`` (dicts as emitted; several runs' lines may be joined, e.g. a
    run finished with ``--first-seed``): seeds that have every setting on both sides; per side the setting with the
    highest mean dev AUC, its per-seed test AUCs paired with the other side's; the teacher's share of gain kept. A
    setting measured twice for one seed keeps its first measurement."""
    from kdtutorial.common.statistics import mean_std, paired

    teacher = {round(line["test_auc"], 4) for line in lines if line.get("step") == "teacher"}
    if len(teacher) != 1:
        raise ValueError(f"the lines hold {len(teacher)} different teachers' test AUCs ({sorted(teacher)}): "
                         "summarize runs of one teacher")
    results = {}  # (method name, seed) -> {"dev", "test"}
    for line in lines:
        if line.get("step") in ("label_only", "distilled"):
            n = line["epochs"] if line["step"] == "label_only" else line["distil_epochs"]
            name = (f"labels only, {n} epoch{'s' * (n != 1)}" if line["step"] == "label_only"
                    else f"distilled, {n} pass{'es' * (n != 1)}")
            results.setdefault((name, line["seed"]), {"dev": line["dev_auc"], "test": line["test_auc"]})
    methods = sorted({m for m, _ in results}, key=lambda m: (m.split(",")[0], int(m.split()[-2])))
    seeds = sorted({s for _, s in results if all((m, s) in results for m in methods)})
    records = [dict(method=m, seed=s, **results[(m, s)]) for m in methods for s in seeds]

    def best_on_dev(prefix):
        side = [m for m in methods if m.startswith(prefix)]
        return max(side, key=lambda m: np.mean([results[(m, s)]["dev"] for s in seeds]))

    def pair(method, baseline):
        p = paired(records, method, baseline, metric="test")
        return dict(method=method, baseline=baseline, gain_points=round(100 * p.mean, 2),
                    ci95_points=[round(100 * p.low, 2), round(100 * p.high, 2)],
                    higher_in=f"{p.n_higher} of {len(p.seeds)}", verdict=p.verdict)

    label, distil = best_on_dev("labels only"), best_on_dev("distilled")
    shortest = next(m for m in methods if m.startswith("labels only"))
    (teacher_auc,) = teacher
    label_mean = mean_std([results[(label, s)]["test"] for s in seeds])[0]
    headline = pair(distil, label)
    room = teacher_auc - label_mean
    return dict(step="summary", seeds=seeds, best_on_dev={"labels only": label, "distilled": distil},
                teacher_test_auc=teacher_auc,
                test_auc={m: "{:.4f} +- {:.4f}".format(*mean_std([results[(m, s)]["test"] for s in seeds]))
                          for m in methods},
                mean_dev_auc={m: round(float(np.mean([results[(m, s)]["dev"] for s in seeds])), 4) for m in methods},
                **{k: v for k, v in headline.items() if k not in ("method", "baseline")},
                gain_kept_pct=round(headline["gain_points"] / (100 * room) * 100, 1) if room > 0 else None,
                against_the_shortest=[pair(m, shortest) for m in methods if m != shortest])


if __name__ == "__main__":
    main()
