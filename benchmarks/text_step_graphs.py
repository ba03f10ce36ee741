"""Where a small BERT student's training step goes on a GPU, and what replaying the whole step from a CUDA graph saves.

    python benchmarks/text_step_graphs.py --device cuda --out results/full/text_step_graphs.jsonl

The step is the text lessons' fine-tuning step (``kd.finetuning.fine_tune``: a ``SentenceClassifier`` over MiniLM
layers, SST-2, AdamW with warm-up and decay, bf16 autocast), measured two ways:

* ``eager``: ``fine_tune`` as the lessons ran it (each batch padded to its longest sentence, launched op by op);
* ``graph``: ``fine_tune(graphs=True)``: batches padded to one width, the step captured once as a CUDA graph
  (``common.stepgraph.GraphedStep``) and replayed.

For each: milliseconds per step alone, the dev accuracy after one epoch (the graph must train as well as the loop),
and the steps per second of ``--procs`` processes training at once on the same device (as the lessons' full profiles
run their students). ``--profile`` adds a ``torch.profiler`` split of one eager step: host time against kernel time.
``--term kd`` or ``pkd-skip`` times lesson 07's step instead (``layerdistil.distil_with_layers``, a 6-layer teacher
beside the student, its forward pass inside the graph).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import kdtutorial as kd  # noqa: E402
from _jsonlines import emitter  # noqa: E402

NAME = "sentence-transformers/all-MiniLM-L6-v2"


def setup(args, device):
    tok, mlm = kd.hub.load_tokenizer(NAME), kd.hub.load_masked_lm(NAME)
    train = kd.sst2.load_sst2("train").shuffle(seed=0)
    dev = kd.sst2.load_sst2("dev")
    text = kd.tokens.tokenize(tok, train["sentence"][: args.sentences], args.max_length)
    labels = np.asarray(train["label"][: args.sentences])
    dev_text = kd.tokens.tokenize(tok, dev["sentence"], args.max_length)
    return mlm, text, labels, dev_text, np.asarray(dev["label"])


def new_student(mlm, layers, seed):
    kd.environment.seed_everything(seed)
    return kd.finetuning.SentenceClassifier(kd.students.copy_layers_encoder(mlm.base_model, layers))


def accuracy(model, dev_text, dev_labels, device):
    logits = kd.finetuning.predict(model, dev_text, device=device, amp=True)
    return float((logits.argmax(1).numpy() == dev_labels).mean())


def timed(fn, device):
    kd.environment.synchronize(device)
    t = time.perf_counter()
    fn()
    kd.environment.synchronize(device)
    return time.perf_counter() - t


def one_mode(mode, mlm, text, labels, args, device, seed, limit=None):
    """Train one student one epoch (or ``limit`` steps) by ``fine_tune``, eagerly or with ``graphs=True``;
    ``(seconds, model, steps)``."""
    model = new_student(mlm, args.layers, seed)
    steps = kd.optim.planned_steps(len(text), args.batch, 1, limit)
    common = dict(epochs=1, batch_size=args.batch, lr=args.lr, seed=seed, device=device, amp=True, max_steps=limit,
                  progress=False, graphs=(mode == "graph"))
    if args.term == "none":
        sec = timed(lambda: kd.finetuning.fine_tune(model, text, labels, **common), device)
    else:  # lesson 07's step: a 6-layer teacher (MiniLM with a fresh head) beside the student
        kd.environment.seed_everything(seed)
        teacher = kd.finetuning.SentenceClassifier(kd.students.copy_layers_encoder(mlm.base_model, range(6)))
        lmap = kd.layers.layer_map(args.term, len(args.layers), 6) if args.term.startswith("pkd") else None
        term = "pkd" if lmap is not None else args.term
        sec = timed(lambda: kd.layerdistil.distil_with_layers(teacher.to(device).eval(), model, text, labels,
                                                               term=term, lmap=lmap, **common), device)
    return sec, model, steps


def child(args):
    """One of ``--procs`` processes: load, wait for the common start time, train ``--steps`` steps, print the end."""
    device = torch.device(args.device)
    mlm, text, labels, _, _ = setup(args, device)
    one_mode(args.child, mlm, text, labels, args, device, seed=99, limit=5)  # warm-up (and the graph's capture)
    kd.environment.synchronize(device)
    print("READY", flush=True)
    sys.stdin.readline()  # the parent's "go", once every process is ready
    sec, _, steps = one_mode(args.child, mlm, text, labels, args, device, seed=args.seed, limit=args.steps)
    print(f"CHILD {time.time():.3f} {steps} {sec:.3f}", flush=True)


def together(mode, args, emit):
    cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
           "--device", args.device, "--batch", str(args.batch), "--max-length", str(args.max_length),
           "--sentences", str(args.sentences), "--term", args.term, "--layers", *map(str, args.layers)]
    threads = max(1, (os.cpu_count() or 2) // args.procs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    procs = [subprocess.Popen(cmd + ["--seed", str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=env) for i in range(args.procs)]
    for p in procs:
        for line in p.stdout:
            if line.startswith("READY"):
                break
    start_at = time.time()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    ends, steps = [], 0
    for p in procs:
        out, _ = p.communicate()
        line = [x for x in out.splitlines() if x.startswith("CHILD ")]
        if p.returncode or not line:
            emit(step="together", mode=mode, procs=args.procs, error=f"a process failed (rc {p.returncode})")
            return
        _, end, n, _ = line[-1].split()
        ends.append(float(end))
        steps += int(n)
    wall = max(ends) - start_at
    emit(step="together", mode=mode, procs=args.procs, steps=steps, seconds=round(wall, 2),
         steps_per_s=round(steps / wall, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--sentences", type=int, default=20000)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 2, 4])
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300, help="steps per process in the --procs run")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=["eager", "graph"], choices=["eager", "graph"])
    ap.add_argument("--term", default="none", choices=["none", "kd", "pkd-skip"],
                    help="none: fine_tune; kd / pkd-skip: distil_with_layers from a 6-layer teacher (lesson 07)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default="text_step_graphs.jsonl")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    device = torch.device(args.device)
    emit = emitter(args.out)
    mlm, text, labels, dev_text, dev_labels = setup(args, device)
    emit(step="setup", device=kd.environment.banner(device), sentences=len(text), width=int(text.lengths().max()),
         median_tokens=float(np.median(text.lengths())), batch=args.batch, layers=args.layers, term=args.term)
    for mode in args.modes:
        one_mode(mode, mlm, text, labels, args, device, seed=99, limit=20)  # warm-up: kernels, allocator
        for seed in range(args.seeds):
            sec, model, steps = one_mode(mode, mlm, text, labels, args, device, seed)
            emit(step="alone", mode=mode, seed=seed, steps=steps, seconds=round(sec, 2),
                 ms_per_step=round(1000 * sec / steps, 2), dev_acc=round(accuracy(model, dev_text, dev_labels, device),
                                                                          4))
    if args.profile:
        model = new_student(mlm, args.layers, 0)
        from torch.profiler import ProfilerActivity, profile
        kd.finetuning.fine_tune(model, text, labels, epochs=1, batch_size=args.batch, device=device, amp=True,
                                max_steps=5, progress=False)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            sec = timed(lambda: kd.finetuning.fine_tune(model, text, labels, epochs=1, batch_size=args.batch,
                                                         device=device, amp=True, max_steps=10, progress=False),
                        device)
        events = prof.key_averages()
        kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
        emit(step="profile", mode="eager", steps=10, ms_per_step=round(100 * sec, 2),
             kernel_ms_per_step=round(kernel_us / 1e4, 2), launches_per_step=launches / 10)
    if args.procs > 1 and device.type == "cuda":
        for mode in args.modes:
            together(mode, args, emit)


if __name__ == "__main__":
    main()
