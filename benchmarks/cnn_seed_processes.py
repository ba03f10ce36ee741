"""What the seed processes buy on one GPU (issue 21), measured on one host: the CNN teacher (dropout and batch norm, so
not stackable) trained for R runs of E epochs on Fashion-MNIST at batch 256, as lessons 01/02/04 train it, once one
run after another in this process and once with ``train_models(..., workers=W)`` (each run in a process of its own).
Both after an untimed warm-up run; the process time includes starting the processes (as a lesson pays it). One JSON
line per measurement. Run: ``python benchmarks/cnn_seed_processes.py`` (CUDA; Fashion-MNIST under $KDTUTORIAL_DATA).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import kdtutorial as kd
from kdtutorial.vision.experiments import train_model, train_models


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    args = p.parse_args(argv)
    device = kd.environment.resolve_device("auto")
    data = kd.data.load_vision("fashion-mnist", seed=0)
    objective, seeds = kd.objectives.CrossEntropy(), list(range(args.runs))
    kw = dict(epochs=args.epochs, lr=3e-3, batch_size=256, device=device)
    print(json.dumps({"device": kd.environment.banner(device), "runs": args.runs, "epochs": args.epochs}), flush=True)
    train_model("cnn-teacher", data, objective, seed=99, **{**kw, "epochs": 1})  # warm-up: cuDNN, allocator

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(label, fn):
        sync()
        began = time.perf_counter()
        runs = fn()
        sync()
        seconds = time.perf_counter() - began
        print(json.dumps({"variant": label, "seconds": round(seconds, 2),
                          "seconds_per_run_epoch": round(seconds / (args.runs * args.epochs), 3),
                          "mean_test_acc": round(sum(r[2] for r in runs) / len(runs), 2)}), flush=True)

    timed("one after another", lambda: [train_model("cnn-teacher", data, objective, seed=s, **kw) for s in seeds])
    for w in args.workers:
        timed(f"processes, {w} at a time",
              lambda: train_models("cnn-teacher", data, [objective] * len(seeds), seeds=seeds, workers=w, **kw))


if __name__ == "__main__":
    main()
