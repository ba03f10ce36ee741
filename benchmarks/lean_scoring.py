"""Teacher scoring near the GPU's limit (lesson 06, issue: >= 350,000 pairs/s on one H200): every variant on the same
million pairs, each after an untimed warm-up, with its largest logit difference from the float32 reference.

The cross-encoder is all-MiniLM-L6-v2 with a random (seeded) head: throughput does not depend on the weights' values,
and the logit differences are measured on the same model. The pairs are the notebook's full-profile transfer set
(1,000,000 QADSM-de pairs of each training query with its nearest training ads, at most 64 tokens). Also prints the
linear-layer bound: the time of the encoder's matrix products alone at the median length. One JSON line per
measurement. Run: ``python benchmarks/lean_scoring.py`` (CUDA, data set).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import kdtutorial as kd
from kdtutorial.ranking import crossencoder as ce
from kdtutorial.ranking import qadsm, transfer


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--reference", type=int, default=100_000, help="pairs scored by the float32 reference")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", nargs="*", default=None, help="run only the variants whose label contains one of these")
    args = p.parse_args(argv)
    device = kd.environment.resolve_device("auto")
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tokenizer = kd.hub.load_tokenizer(name)
    kd.environment.seed_everything(0)
    encoder = kd.hub.load_masked_lm(name).base_model.float()
    teacher = ce.CrossEncoder(encoder).eval()
    train = qadsm.load_qadsm("de", "train").data

    def embed(texts):
        return kd.rankers.sentence_vectors(encoder, tokenizer, texts, 48, batch_size=4096, device=device, amp=True)

    index = transfer.transfer_index(train, args.pairs, seed=0, candidates="neighbours", embed=embed)
    pairs = ce.pair_matrix(tokenizer, index.queries, index.ads(), 64, query_ids=index.query_ids, ad_ids=index.ad_ids)
    median = int(np.median(pairs.n_tokens))
    head = dict(device=kd.environment.banner(device), pairs=len(pairs), median_tokens=median,
                mean_tokens=round(float(pairs.n_tokens.mean()), 2))
    print(json.dumps(head), flush=True)
    ref_rows = np.arange(min(args.reference, len(pairs)))
    reference, st = ce.score_pairs_padded(teacher, pairs.subset(ref_rows), max_length=64, batch_size=4096,
                                          device=device, warmup=True)
    print(json.dumps({"variant": "fp32, padded to 64 (plain loop)", "pairs_per_s": round(st["pairs_per_s"])}),
          flush=True)
    lean_model = kd.leanscorer.LeanCrossEncoder(teacher, dtype=torch.bfloat16).to(device)
    for batch in (4096, 8192):
        bound = kd.leanscorer.linear_bound(lean_model, median, batch, device=device)
        print(json.dumps({"linear_bound": bound}), flush=True)
    del lean_model
    big = dict(lean=True, exact_lengths=True, batch_tokens=2**19)
    variants = {  # the most promising first: a run stopped at its time limit still printed those
        "lean, exact lengths, 2^19 tokens, GELU epilogue": dict(big, gelu_epilogue=True),
        "lean, exact lengths, 2^19 tokens, GELU epilogue, matmul attention": dict(big, gelu_epilogue=True,
                                                                                 attention="matmul"),
        "lean, exact lengths, 2^19 tokens": big,
        "lean, exact lengths, 2^19 tokens, matmul attention": dict(big, attention="matmul"),
        "lean, exact lengths": dict(batch_size=4096, lean=True, exact_lengths=True),
        "lean, bucketed": dict(batch_size=4096, lean=True),
        "bf16 weights, bucketed, [CLS]-only last layer (before)": dict(batch_size=4096, cls_only=True),
    }
    if args.compile:
        variants["lean, exact lengths, 2^19 tokens, compiled"] = dict(big, compile=True)
        variants["lean, exact lengths, 2^19 tokens, GELU epilogue, compiled"] = dict(big, compile=True,
                                                                                    gelu_epilogue=True)
    if args.only is not None:
        variants = {k: v for k, v in variants.items() if any(x in k for x in args.only)}
    for label, kw in variants.items():
        for repeat in range(args.repeats):
            scores, st = ce.score_pairs(teacher, pairs, device=device, amp=True, bf16_weights=True, warmup=True, **kw)
            diff = float(np.abs(scores[ref_rows] - reference).max())
            print(json.dumps({"variant": label, "repeat": repeat, "pairs_per_s": round(st["pairs_per_s"]),
                              "padding": round(st["padding"], 4), "batches": st["batches"],
                              "max_abs_diff_vs_fp32": round(diff, 4),
                              "compile_seconds": st.get("compile_seconds")}), flush=True)


if __name__ == "__main__":
    main()
