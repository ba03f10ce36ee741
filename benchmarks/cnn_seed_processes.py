"""Where the CNN runs of lessons 01/02/04 lose GPU time (issue 21), measured on one host.

1. **The step loop**: the CNN teacher (dropout and batch norm) for ``E`` epochs at batch 256 on Fashion-MNIST, with
   each batch's indices copied from the host at every step (as ``fit`` did up to commit d1fb8ed: a blocking copy
   synchronises the stream, so the host cannot launch the next step while the GPU runs this one) against the epoch's
   order copied once and sliced on the device (``fit`` since). The same batches, model and optimiser, so the same
   maths; only the waiting differs.
2. **Processes**: ``R`` runs one after another in this process against ``train_models(..., workers=W)``, each run in
   a process of its own on the same GPU (the process time includes starting the processes, as a lesson pays it).

Each after an untimed warm-up. One JSON line per measurement. Run: ``python benchmarks/cnn_seed_processes.py`` (CUDA;
Fashion-MNIST under $KDTUTORIAL_DATA).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import kdtutorial as kd
from kdtutorial.vision import models
from kdtutorial.vision.experiments import train_model, train_models
from kdtutorial.vision.training import epoch_order


def step_loop(data, device, *, epochs: int, batch_size: int, per_step_copy: bool) -> float:
    """Seconds for ``epochs`` of the CNN teacher's training step (cross-entropy, fused Adam), synchronised at the end."""
    kd.environment.seed_everything(0)
    model = models.build("cnn-teacher", data.input_shape, data.n_classes).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, fused=True)
    x, y = data.train.x.to(device), data.train.y.to(device)
    generator = torch.Generator().manual_seed(0)
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(epochs):
        order = epoch_order(len(x), True, generator)
        order_dev = None if per_step_copy else order.to(device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size].to(device) if per_step_copy else order_dev[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    torch.cuda.synchronize()
    return time.perf_counter() - began


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    args = p.parse_args(argv)
    device = kd.environment.resolve_device("auto")
    data = kd.data.load_vision("fashion-mnist", seed=0)
    print(json.dumps({"device": kd.environment.banner(device), "runs": args.runs, "epochs": args.epochs}), flush=True)
    step_loop(data, device, epochs=1, batch_size=256, per_step_copy=True)  # warm-up: cuDNN, allocator
    for per_step_copy in (True, False, True, False):
        seconds = step_loop(data, device, epochs=args.epochs, batch_size=256, per_step_copy=per_step_copy)
        print(json.dumps({"variant": "indices copied every step" if per_step_copy else "order copied once an epoch",
                          "epochs": args.epochs, "seconds": round(seconds, 2),
                          "ms_per_step": round(1000 * seconds / (args.epochs * -(-len(data.train) // 256)), 3)}),
              flush=True)

    objective, seeds = kd.objectives.CrossEntropy(), list(range(args.runs))
    kw = dict(epochs=args.epochs, lr=3e-3, batch_size=256, device=device)

    def timed(label, fn):
        torch.cuda.synchronize()
        began = time.perf_counter()
        runs = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        print(json.dumps({"variant": label, "seconds": round(seconds, 2),
                          "seconds_per_run_epoch": round(seconds / (args.runs * args.epochs), 3),
                          "mean_test_acc": round(sum(r[2] for r in runs) / len(runs), 2)}), flush=True)

    timed("one after another", lambda: [train_model("cnn-teacher", data, objective, seed=s, progress=_Quiet(), **kw)
                                        for s in seeds])
    for w in args.workers:
        timed(f"processes, {w} at a time",
              lambda: train_models("cnn-teacher", data, [objective] * len(seeds), seeds=seeds, workers=w, **kw))


class _Quiet:
    def update(self, n: int = 1):
        pass


if __name__ == "__main__":
    main()
