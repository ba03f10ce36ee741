"""Teacher-scoring throughput of lesson 06's cross-encoder on one GPU, variant by variant, each measured twice.

The weights are the pretrained all-MiniLM-L6-v2 with an untrained head: throughput does not depend on their values.
The pairs are the notebook's full-profile transfer set (1,000,000 QADSM-de pairs, ``candidates="overlap"``, at most
64 tokens). Prints one JSON line per measurement. Run: ``python benchmarks/teacher_scoring.py`` (CUDA, data set).
"""
from __future__ import annotations

import argparse
import json

import kdtutorial as kd
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.ranking import qadsm, transfer


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--batches", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    device = kd.environment.resolve_device("auto")
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tokenizer = kd.hub.load_tokenizer(name)
    kd.environment.seed_everything(0)
    teacher = ce.CrossEncoder(kd.hub.load_masked_lm(name).base_model)
    train = qadsm.load_qadsm("de", "train").data
    index = transfer.transfer_index(train, args.pairs, seed=0, candidates="overlap")
    pairs = ce.pair_matrix(tokenizer, index.queries, index.ads(), 64, query_ids=index.query_ids, ad_ids=index.ad_ids)
    amp = device.type == "cuda"
    for batch in args.batches:
        for cls_only in (False, True):
            for repeat in range(args.repeats):
                _, stats = ce.score_pairs(teacher, pairs, batch_size=batch, device=device, amp=amp, bf16_weights=amp,
                                          cls_only=cls_only, warmup=amp)
                print(json.dumps({"device": kd.environment.banner(device), "batch": batch, "cls_only": cls_only,
                                  "repeat": repeat, "pairs": len(pairs),
                                  "pairs_per_s": round(stats["pairs_per_s"])}), flush=True)


if __name__ == "__main__":
    main()
