"""What training lesson 06's students in processes saves on one GPU (issue 21): the lesson's jobs
(``kd.studentruns.run_two_towers``; each student kind x seed, on labels only and distilled) one after another
(``workers=1``) against ``--workers`` processes sharing the device, with the lesson's full-profile settings.

The transfer set is the lesson's size (a million re-paired QADSM-de training pairs, ``candidates="random"``, which
needs no embedding pass), and the teacher's logits are a seeded stand-in (normal, std 3): the time of a step does not
depend on the values it learns, and no AUC here means anything. What is compared besides the time: the test logits of
every job, which should agree between the two ways up to the GPU's run-to-run variation (on a CPU, up to rounding:
each process gets a share of the cores, and other thread counts sum in another order). Both ways follow an untimed
warm-up job in this process; the time in processes includes starting them and sending each the shared data (as the
lesson pays it). One JSON line per measurement. Run:
``python benchmarks/two_tower_processes.py --out FILE`` (CUDA; QADSM-de under $KDTUTORIAL_DATA; a tiny CPU smoke run:
``--transfer-pairs 2000 --train-pairs 256 --test-pairs 256 --kinds C-DSSM TwinBERT_res --seeds 1 --workers 2``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import kdtutorial as kd
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.ranking import qadsm, rankers, studentruns, transfer, twotower

from _jsonlines import emitter


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--train-pairs", type=int, default=None, help="labelled pairs (default: all)")
    p.add_argument("--test-pairs", type=int, default=None, help="test pairs each job scores (default: all)")
    p.add_argument("--transfer-pairs", type=int, default=1_000_000)
    p.add_argument("--kinds", nargs="+", default=["C-DSSM", "TwinBERT-Tiny", "TwinBERT_1L", "TwinBERT_res"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    emit = emitter(args.out)

    device = kd.environment.resolve_device(args.device)
    amp = device.type == "cuda"
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tokenizer, pretrained = kd.hub.load_tokenizer(name), kd.hub.load_masked_lm(name).base_model
    train, test = (qadsm.load_qadsm("de", split).data for split in ("train", "test"))
    if args.train_pairs:
        train = train.shuffle(seed=0).select(range(args.train_pairs))
    if args.test_pairs:
        test = test.select(range(args.test_pairs))
    index = transfer.transfer_index(train, args.transfer_pairs, seed=0)
    parts = {"train": (train["query"], ce.ads_of(train), {}), "test": (test["query"], ce.ads_of(test), {}),
             "transfer": (index.queries, index.ads(), dict(query_ids=index.query_ids, ad_ids=index.ad_ids))}
    lesson = kd.lessons.lesson("06_qadsm_two_tower").full  # the full profile's lengths, epochs and batches
    tokens = {k: rankers.tokenize_sides(tokenizer, q, a, lesson["MAX_QUERY_LEN"], lesson["MAX_AD_LEN"], **ids)
              for k, (q, a, ids) in parts.items()}
    tokens["transfer"] = rankers.padded_sides(*tokens["transfer"])
    trigrams = {k: rankers.trigram_sides(twotower.CDSSM(), q, a, **ids) for k, (q, a, ids) in parts.items()}
    rng = np.random.default_rng(0)
    stand_in = (rng.normal(0, 3, len(index)).astype(np.float32), rng.normal(0, 3, len(train)).astype(np.float32))
    runs = studentruns.StudentRuns(
        pretrained=pretrained, layers=lesson["STUDENT_LAYERS"], tokens=tokens, trigrams=trigrams,
        labels=np.asarray(train["label"]), teachers={"one": stand_in},
        rates=dict(labels=1e-4, distil=3e-4, finetune=5e-5, scratch=1e-3),  # the notebook's parameter defaults
        epochs=dict(labels=lesson["STUDENT_EPOCHS"], scratch=lesson["SCRATCH_EPOCHS"],
                    distil=lesson["DISTILL_EPOCHS"], finetune=lesson["FINETUNE_EPOCHS"]),
        batch_size=2 * lesson["BATCH_SIZE"], distil_batch=lesson["DISTILL_BATCH"], freeze_embeddings=False,
        options=dict(device=device, amp=amp))
    jobs = [(kind, seed, how) for seed in range(args.seeds) for kind in args.kinds for how in ("labels", "distilled")]
    emit(step="setup", device=kd.environment.banner(device), transfer_pairs=len(index),
         train_pairs=len(train), jobs=len(jobs))

    studentruns.run_two_towers(runs, [("TwinBERT_res", 0, "labels")])  # warm-up: kernels, allocator
    logits = {}
    for workers in (1, args.workers):
        began = time.perf_counter()
        done = studentruns.run_two_towers(runs, jobs, workers=workers)
        seconds = time.perf_counter() - began
        logits[workers] = [job["test_logits"] for job in done]
        emit(step="students", workers=workers, jobs=len(jobs), seconds=round(seconds, 1),
             seconds_per_job=round(seconds / len(jobs), 2))
    gaps = [float(np.abs(a - b).max()) for a, b in zip(logits[1], logits[args.workers])]
    emit(step="agreement", max_abs_logit_gap=float(f"{max(gaps):.3g}"), jobs_identical=sum(g == 0.0 for g in gaps))


if __name__ == "__main__":
    main()
