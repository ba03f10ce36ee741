"""Where a vision lesson's GPU time goes (issue 21): one epoch of an MLP student on Fashion-MNIST (55,000 images,
batch 64, 860 steps) trained three ways, each after an untimed warm-up epoch:

* the loop as it was, reading ``loss.item()`` after every step (the host waits for the GPU each step);
* ``training.fit`` now (the epoch's loss summed on the device: no wait per step), eagerly and, on a GPU, each step
  replayed from a CUDA graph (``graphs=True``);
* ``seedbatch.fit_seeds`` with K seeds in one stacked pass per step (per seed: the time divided by K), each step
  launched eagerly and, on a GPU, replayed from a CUDA graph (``graphs=True``, :mod:`kdtutorial.common.stepgraph`);
* with ``--cnn``: one epoch of the CNN teacher (which has dropout and batch norm, so it is trained one seed at a
  time) with cuDNN's default algorithms, with ``cudnn.benchmark``, with bf16 autocast and from a CUDA graph, and its
  forward and backward pass on one batch alone;
* ``fit_seeds`` with K distillation students (a grid of T and alpha over one teacher cache, as lesson 01 stacks its
  recipes), their objectives computed together (``vision.objectivestack``) or, as before, one model at a time with
  the host's indices (``--batch-size 256`` is what the lessons' full profiles use).

Also the time of the forward and backward pass alone for one batch, to set against the per-step time. One JSON line
per measurement. Run: ``python benchmarks/vision_seed_costs.py`` (CUDA; Fashion-MNIST under $KDTUTORIAL_DATA).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import kdtutorial as kd
from kdtutorial.vision import models, objectives
from kdtutorial.vision.seedbatch import fit_seeds
from kdtutorial.vision.training import batches, fit


def synced(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def loop_with_item(model, data, device, seed=0, batch_size=64):
    """The loop before: Adam, one ``loss.item()`` per step."""
    model.to(device).train()
    x, y = data.train.x.to(device), data.train.y.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    total = 0.0
    for idx in batches(len(x), batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)):
        idx = idx.to(device)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total


class OneByOne:
    """An objective the stack does not group: called per model on its slice (the loop fit_seeds ran before)."""

    def __init__(self, objective):
        self.objective = objective

    def __call__(self, logits, labels, indices):
        return self.objective(logits, labels, indices)


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="mlp-medium")
    p.add_argument("--seeds", type=int, nargs="+", default=[5, 9, 45])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cnn", action="store_true", help="also time one epoch of the CNN teacher (default cuDNN, "
                   "cudnn.benchmark, bf16 autocast) and one batch's forward and backward pass")
    args = p.parse_args(argv)
    device = kd.environment.resolve_device("auto")
    data = kd.data.load_vision("fashion-mnist")
    print(json.dumps({"device": kd.environment.banner(device), "arch": args.arch, "train": len(data.train),
                      "batch_size": args.batch_size}), flush=True)

    def new(seed):
        kd.environment.seed_everything(seed)
        return models.build(args.arch, data.input_shape, data.n_classes)

    bs = dict(batch_size=args.batch_size)
    loop_with_item(new(0), data, device, **bs)  # warm-up
    began = synced(device)
    loop_with_item(new(0), data, device, **bs)
    print(json.dumps({"variant": "loss.item() every step (before)", "seconds_per_epoch": synced(device) - began}),
          flush=True)
    ce = objectives.CrossEntropy()
    for graphs in (False, True) if device.type == "cuda" else (False,):
        fit(new(0), data.train, ce, epochs=1, device=device, graphs=graphs, **bs)
        began = synced(device)
        fit(new(0), data.train, ce, epochs=1, device=device, graphs=graphs, **bs)
        label = "fit (no wait per step)" + (", CUDA graph" if graphs else "")
        print(json.dumps({"variant": label, "seconds_per_epoch": synced(device) - began}), flush=True)
    for k in args.seeds:
        seeds = list(range(k))
        for graphs in (False, True) if device.type == "cuda" else (False,):
            way = dict(device=device, graphs=graphs, **bs)
            fit_seeds([new(s) for s in seeds], data.train, [ce] * k, seeds=seeds, epochs=1, **way)
            began = synced(device)
            fit_seeds([new(s) for s in seeds], data.train, [ce] * k, seeds=seeds, epochs=1, **way)
            seconds = synced(device) - began
            label = f"fit_seeds, {k} seeds together" + (", CUDA graph" if graphs else "")
            print(json.dumps({"variant": label, "seconds_per_epoch": seconds, "seconds_per_seed_epoch": seconds / k}),
                  flush=True)
    cache = kd.training.TeacherCache.build(new(0).to(device), data.train, device)  # untrained: only the cost counts
    for k in args.seeds:
        grid = [objectives.Distillation(cache, T=2.0 ** (s % 4 + 1), alpha=0.5 if s % 2 else 0.9) for s in range(k)]
        ways = [("grouped", grid, False), ("one model at a time", [OneByOne(o) for o in grid], False)]
        if device.type == "cuda":
            ways.append(("grouped, CUDA graph", grid, True))
        for label, objs, graphs in ways:
            way = dict(seeds=range(k), epochs=1, device=device, graphs=graphs, **bs)
            fit_seeds([new(s) for s in range(k)], data.train, objs, **way)
            began = synced(device)
            fit_seeds([new(s) for s in range(k)], data.train, objs, **way)
            seconds = synced(device) - began
            print(json.dumps({"variant": f"fit_seeds, {k} KD students, objectives {label}",
                              "seconds_per_epoch": seconds, "seconds_per_seed_epoch": seconds / k}), flush=True)
    if args.cnn:  # the lessons' per-seed CNN runs (dropout and batch norm: not stackable)
        cnn = "cnn-teacher"

        def new_cnn():
            kd.environment.seed_everything(0)
            return models.build(cnn, data.input_shape, data.n_classes)

        for label, bench, amp, graphs in (("cuDNN default", False, False, False), ("cudnn.benchmark", True, False, False),
                                          ("bf16 autocast", False, True, False), ("CUDA graph", False, False, True)):
            torch.backends.cudnn.benchmark = bench
            fit(new_cnn(), data.train, ce, epochs=1, device=device, amp=amp, graphs=graphs, **bs)
            began = synced(device)
            fit(new_cnn(), data.train, ce, epochs=1, device=device, amp=amp, graphs=graphs, **bs)
            print(json.dumps({"variant": f"fit, {cnn}, {label}", "seconds_per_epoch": synced(device) - began}),
                  flush=True)
        torch.backends.cudnn.benchmark = False
        net = new_cnn().to(device).train()
        xc, yc = data.train.x[: args.batch_size].to(device), data.train.y[: args.batch_size].to(device)
        for _ in range(10):
            torch.nn.functional.cross_entropy(net(xc), yc).backward()
        began = synced(device)
        for _ in range(50):
            torch.nn.functional.cross_entropy(net(xc), yc).backward()
        print(json.dumps({"variant": f"{cnn} forward and backward of one batch",
                          "ms": (synced(device) - began) / 50 * 1e3}), flush=True)
    model = new(0).to(device)
    xb, yb = data.train.x[:64].to(device), data.train.y[:64].to(device)
    for _ in range(20):
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
    began = synced(device)
    for _ in range(200):
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
    print(json.dumps({"forward_backward_ms": (synced(device) - began) / 200 * 1e3}), flush=True)


if __name__ == "__main__":
    main()
