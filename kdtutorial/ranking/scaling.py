"""Lesson 06's recipe on 1 or N GPUs with Hugging Face Accelerate: the same code, launched differently.

When one GPU is not enough (the talk's setting: a teacher scoring billions of query-ad pairs), the two expensive
stages split across processes, one per GPU:

* teacher scoring (:func:`score_pairs_sharded`): process ``r`` of ``N`` scores pairs ``r, r + N, ...`` with
  :func:`kdtutorial.ranking.crossencoder.score_pairs` (bf16, length bucketing), and the scores are gathered back into
  the original order on every process;
* training (teacher fine-tuning, student distillation and fine-tuning): ``accelerator=`` in
  :func:`kdtutorial.text.optim.train_steps` and the functions built on it trains data-parallel
  (``DistributedDataParallel``), each process on its share of the batches.

Run the whole recipe (teacher fine-tuning, transfer-set scoring, distillation, fine-tuning, test ROC-AUC) with::

    accelerate launch --num_processes 1 -m kdtutorial.ranking.scaling --transfer-pairs 1000000   # one GPU
    accelerate launch --num_processes 4 -m kdtutorial.ranking.scaling --transfer-pairs 1000000   # four GPUs
    python -m kdtutorial.ranking.scaling --cpu --train-pairs 256 --test-pairs 256 --transfer-pairs 512 \
        --teacher-steps 4 --student-steps 4                                           # CPU smoke run

It prints one JSON line of results on the main process. With one process the scores and the training are those
of the notebook's functions without an accelerator.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from kdtutorial.ranking import crossencoder as ce

__all__ = ["make_accelerator", "shard_rows", "score_pairs_sharded", "run_recipe", "main"]


def make_accelerator(cpu: bool = False):
    """An ``accelerate.Accelerator`` for :func:`kdtutorial.text.optim.train_steps`: mixed precision left to its ``amp``
    (bf16 autocast), and ``find_unused_parameters`` on, since a copied BERT encoder carries a pooler that the
    course's models never call."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    return Accelerator(cpu=cpu, mixed_precision="no",
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def shard_rows(n: int, world: int, rank: int) -> np.ndarray:
    """Rows ``rank, rank + world, ...`` of ``n``: strided, so every shard has the same mix of short and long pairs."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must lie in [0, {world}), got {rank}")
    return np.arange(rank, n, world)


def score_pairs_sharded(accelerator, model, pairs, **kwargs):
    """:func:`kdtutorial.ranking.crossencoder.score_pairs` over all processes: ``(scores, stats)`` on every process,
    scores in the original pair order.

    ``kwargs`` go to ``score_pairs`` (``batch_size``, ``amp``, ``bf16_weights``, ``warmup``, ...; the device is
    ``accelerator.device``). ``stats``: ``pairs`` (all of them), ``seconds`` (the slowest process's scoring
    loop), ``pairs_per_s`` (all pairs over those seconds), ``processes``.
    """
    matrix = ce.as_pair_matrix(pairs)
    n, world, rank = len(matrix), accelerator.num_processes, accelerator.process_index
    mine = shard_rows(n, world, rank)
    scores, stats = ce.score_pairs(model, matrix.subset(mine), device=accelerator.device, **kwargs)
    width = -(-n // world)  # the largest shard; the others are padded to it for the gather
    local = torch.full((width,), float("nan"), dtype=torch.float32, device=accelerator.device)
    local[: len(mine)] = torch.from_numpy(scores).to(accelerator.device)
    every = accelerator.gather(local).cpu().numpy().reshape(world, width)
    seconds = float(accelerator.gather(torch.tensor([stats["seconds"]], device=accelerator.device)).max())
    out = np.empty(n, dtype=np.float32)
    for r in range(world):
        rows = shard_rows(n, world, r)
        out[rows] = every[r, : len(rows)]
    return out, {"pairs": n, "seconds": seconds, "pairs_per_s": n / max(seconds, 1e-12), "processes": world}


def run_recipe(args, accelerator) -> dict:
    """Teacher fine-tuning, transfer-set scoring, distillation and fine-tuning of a TwinBERT, all under
    ``accelerator``; returns the results (test ROC-AUC of teacher and student, throughputs, times)."""
    from kdtutorial.common import environment
    from kdtutorial.ranking import qadsm, transfer
    from kdtutorial.text import hub, students
    from kdtutorial.ranking import rankers, metrics, twotower

    environment.seed_everything(args.seed)
    device, amp = accelerator.device, accelerator.device.type == "cuda"
    began = time.perf_counter()
    train, test = (qadsm.load_qadsm(args.lang, split).data for split in ("train", "test"))
    if args.train_pairs is not None:
        train = train.shuffle(seed=args.seed).select(range(min(args.train_pairs, len(train))))
    if args.test_pairs is not None:
        test = test.shuffle(seed=args.seed).select(range(min(args.test_pairs, len(test))))
    y_train, y_test = np.asarray(train["label"]), np.asarray(test["label"])
    tokenizer, masked_lm = hub.load_tokenizer(args.teacher), hub.load_masked_lm(args.teacher)
    pretrained = masked_lm.base_model
    train_ads, test_ads = ce.ads_of(train), ce.ads_of(test)
    train_pairs = ce.tokenize_pairs(tokenizer, train["query"], train_ads, args.max_length)
    test_pairs = ce.pair_matrix(tokenizer, test["query"], test_ads, args.max_length)
    common = dict(seed=args.seed, amp=amp, progress=accelerator.is_main_process, accelerator=accelerator)

    teacher = ce.CrossEncoder(copy.deepcopy(pretrained))
    t0 = time.perf_counter()
    ce.fine_tune_cross_encoder(teacher, train_pairs, y_train, epochs=args.teacher_epochs, lr=args.teacher_lr,
                               batch_size=args.batch_size, max_steps=args.teacher_steps, **common)
    teacher_seconds = time.perf_counter() - t0
    score = dict(batch_size=args.score_batch, amp=amp, bf16_weights=amp, warmup=amp)
    teacher_test, _ = score_pairs_sharded(accelerator, teacher, test_pairs, **score)
    teacher_train, _ = score_pairs_sharded(accelerator, teacher, train_pairs, **score)

    transfer = transfer.transfer_index(train, args.transfer_pairs, seed=args.seed, candidates="overlap")
    transfer_pairs = ce.pair_matrix(tokenizer, transfer.queries, transfer.ads(), args.max_length,
                                    query_ids=transfer.query_ids, ad_ids=transfer.ad_ids)
    transfer_logits, scoring = score_pairs_sharded(accelerator, teacher, transfer_pairs, **score)

    sides = dict(
        transfer=rankers.tokenize_sides(tokenizer, transfer.queries, transfer.ads(), args.max_query_len,
                                        args.max_ad_len, query_ids=transfer.query_ids, ad_ids=transfer.ad_ids),
        train=rankers.tokenize_sides(tokenizer, train["query"], train_ads, args.max_query_len, args.max_ad_len),
        test=rankers.tokenize_sides(tokenizer, test["query"], test_ads, args.max_query_len, args.max_ad_len))
    environment.seed_everything(args.seed)
    student = twotower.TwinBERT(students.copy_layers_encoder(pretrained, args.student_layers), crossing=args.crossing)
    t0 = time.perf_counter()
    rankers.distil_two_tower(student, *sides["transfer"], transfer_logits, lr=args.distill_lr,
                             batch_size=args.distill_batch, max_steps=args.student_steps, **common)
    distil_seconds = time.perf_counter() - t0
    rankers.fine_tune_two_tower(student, *sides["train"], y_train, teacher_logits=teacher_train, lr=args.student_lr,
                                epochs=args.finetune_epochs, batch_size=2 * args.batch_size,
                                max_steps=args.student_steps, **common)
    student_test = rankers.score_two_tower(student, *sides["test"], device=device, amp=amp)
    return {
        "processes": accelerator.num_processes, "device": str(device), "transfer_pairs": len(transfer),
        "teacher_roc_auc": round(metrics.roc_auc(y_test, teacher_test), 4),
        "student_roc_auc": round(metrics.roc_auc(y_test, student_test), 4),
        "teacher_finetune_s": round(teacher_seconds, 1),
        "teacher_scoring_pairs_per_s": round(scoring["pairs_per_s"]),
        "distil_s": round(distil_seconds, 1),
        "distil_pairs_per_s": round(len(transfer) / max(distil_seconds, 1e-9)),
        "total_s": round(time.perf_counter() - began, 1),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdtutorial.ranking.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--lang", default="de")
    p.add_argument("--teacher", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--transfer-pairs", type=int, default=1_000_000)
    p.add_argument("--train-pairs", type=int, default=None, help="labelled pairs used (default: all)")
    p.add_argument("--test-pairs", type=int, default=None, help="test pairs scored (default: all)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-query-len", type=int, default=16)
    p.add_argument("--max-ad-len", type=int, default=48)
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--teacher-lr", type=float, default=1e-4)
    p.add_argument("--teacher-steps", type=int, default=None, help="cap on teacher steps (smoke runs)")
    p.add_argument("--student-layers", type=int, nargs="+", default=[0, 2, 4])
    p.add_argument("--crossing", choices=("cos", "res"), default="res")
    p.add_argument("--distill-lr", type=float, default=3e-4)
    p.add_argument("--distill-batch", type=int, default=1024)
    p.add_argument("--student-lr", type=float, default=5e-5)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--student-steps", type=int, default=None, help="cap on each student stage's steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--score-batch", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    return p


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    accelerator = make_accelerator(cpu=args.cpu)
    result = run_recipe(args, accelerator)
    if accelerator.is_main_process:
        print(json.dumps(result), flush=True)
    accelerator.end_training()  # closes the process group
    return result


if __name__ == "__main__":
    main()
