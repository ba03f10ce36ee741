"""One training step captured as a CUDA graph and replayed, so the host launches a step with one call.

A step of the vision lessons' small models (the stacked students of ``seedbatch.fit_seeds``, or one CNN teacher in
``training.fit``) is a few dozen to a few hundred tiny kernels, a small BERT student's step (``text.optim.train_steps``)
a few hundred (269 for a 3-layer MiniLM classifier's), each launched by Python; on a GPU the launches, not the
arithmetic, are the cost, and a faster GPU on a slower host is slower (README, "where these lessons' GPU time goes").
A CUDA graph records the kernels of one step once; replaying it launches them all with one call. It computes the same
kernels on the same addresses, so a replayed step is the step, provided that

* everything the step reads lives in tensors that keep their address: the batch's tensors (its indices; in the text
  loop also its token ids and masks, padded to one width) are copied into static tensors before each replay, and every
  other input (data, labels, teacher logits, hyper-parameters such as the learning rate or Annealing KD's ``phi``) is a
  device tensor updated in place if at all;
* the step never reads a value back to the host (no ``.item()``, no host indices): the objectives of
  :mod:`~kdtutorial.vision.objectivestack` qualify, a per-model objective called on host indices does not;
* the optimiser keeps its step count on the device (``torch.optim.Adam(..., capturable=True)``; its bias corrections
  are then computed in float32 on the device rather than in double on the host, which moves the weights by float32
  rounding only).

The pattern is PyTorch's "whole-network capture": a few eager warm-up steps on a side stream (they are real steps of
the training), the gradients set to None so the captured backward pass allocates them from the graph's own memory
pool, the capture on that side stream, then a replay per step. A batch of another shape (an epoch's last, shorter
batch) runs eagerly: its gradients are fresh tensors, and the graph keeps reading and writing its own.
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["GraphedStep", "check_graph_device", "step_autocast"]


def check_graph_device(device) -> None:
    """``ValueError`` naming ``graphs`` unless ``device`` is a CUDA device (a loop asked for ``graphs=True``)."""
    kind = torch.device(device).type
    if kind != "cuda":
        raise ValueError(f"graphs=True is not allowed on device {kind!r}: CUDA graphs need a CUDA device")


def step_autocast(amp: bool, graphs: bool):
    """The context a training step's forward pass runs in: bf16 autocast when ``amp`` (on CUDA), else none. Under
    ``graphs`` autocast keeps no cast-weight cache: the graph would hold the capture step's cast copies."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphs)


class GraphedStep:
    """``step(*tensors)`` (one training step on the batch the tensors name or hold: forward, loss, backward, optimiser
    step, nothing read back to the host) run as a CUDA graph after ``warmup`` eager calls; ``zero_grad()`` sets the
    gradients to None.

    Call it once per step with the step's tensors on the GPU: the vision loops pass one, the batch's index tensor; the
    text loop passes the row indices and the padded token tensors. Before a replay each is copied into the tensor the
    graph reads (same shapes required; a call with other shapes runs eagerly). Counters: ``eager`` (warm-up and
    odd-shaped steps), ``replays`` (steps run from the graph, the captured one included).
    """

    def __init__(self, step, zero_grad, *, warmup: int = 3):
        if not torch.cuda.is_available():
            raise ValueError("GraphedStep captures a CUDA graph: it needs a CUDA device")
        if warmup < 1:
            raise ValueError(f"warmup = {warmup} is not allowed: at least 1 eager step must run before the capture")
        self.step, self.zero_grad, self.warmup = step, zero_grad, warmup
        self.stream = torch.cuda.Stream()
        self.graph, self.static = None, None
        self.eager, self.replays = 0, 0

    def _fits(self, tensors) -> bool:
        return len(tensors) == len(self.static) and all(
            t.shape == s.shape and t.dtype == s.dtype for t, s in zip(tensors, self.static))

    def __call__(self, *tensors: torch.Tensor) -> None:
        if not tensors:
            raise ValueError("GraphedStep needs at least one tensor per step (e.g. the batch's indices)")
        if self.graph is not None and self._fits(tensors):
            for s, t in zip(self.static, tensors):
                s.copy_(t)
            self.graph.replay()
            self.replays += 1
        elif self.graph is not None:  # another shape after the capture: an ordinary step
            self.zero_grad()
            self.step(*tensors)
            self.eager += 1
        elif self.eager < self.warmup:  # warm-up: real steps, on the stream the capture will use
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                self.zero_grad()
                self.step(*tensors)
            torch.cuda.current_stream().wait_stream(self.stream)
            self.eager += 1
        else:  # capture this step, then run it: a capture only records
            self.static = tuple(t.clone() for t in tensors)
            self.zero_grad()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self.step(*self.static)
            self.graph.replay()
            self.replays += 1
