"""Independent training runs of the text lessons, several at a time, each in a process of its own on one device.

On a GPU a small BERT student's step is bound by the host: transformers' Python code launches a few hundred small
kernels per step, and the GPU waits for them. Runs that do not depend on each other (methods x seeds) can then share
one GPU: while one process prepares its kernels, another's run (lesson 10's full run trains 8 students at a time this
way). On a CPU there is nothing to gain (the cores are already busy), so the lessons train one run after another
there, in this process.

:func:`run_jobs` runs ``fn(shared, job)`` for every job, in order, and returns the results in the order of the jobs:

* ``workers <= 1``: here, one after another (exactly what a loop over the jobs does);
* ``workers > 1``: that many ``spawn`` processes, each receiving ``shared`` once. ``fn`` must be a function of a
  module (it is sent by name), and each job must seed what it draws (``seed_everything``), so that a result does not
  depend on which process computed it. With as many CPU threads as the loop had, a process computes what the loop
  computes, bit for bit on the CPU (``tests/text/test_processes.py``); on a GPU up to its run-to-run variation.

Models cross process boundaries as plain parts (:func:`portable`, :func:`restored`): a transformers model carries
forward hooks that do not survive pickling, so it travels as its class, config and weights and is rebuilt on the
other side, with its train/eval mode and frozen parameters as they were. Tensors arrive on the CPU.
"""
from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import io
import os
from dataclasses import dataclass

import torch
from torch import nn

from kdtutorial.text.finetuning import SentenceClassifier

__all__ = ["run_jobs", "portable", "restored"]


@dataclass(frozen=True)
class _ModuleParts:
    """A model as plain parts: ``kind`` "classifier" (a :class:`SentenceClassifier`: ``encoder`` parts, classes,
    dropout), "config" (a transformers model: class, config and constructor options) or "module" (any other module, pickled as is on the
    CPU); ``state`` the weights on the CPU; ``training`` its mode; ``frozen`` the parameters without gradients."""

    kind: str
    parts: tuple
    state: dict
    training: bool
    frozen: frozenset


def _parts(m: nn.Module) -> _ModuleParts:
    state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    frozen = frozenset(name for name, p in m.named_parameters() if not p.requires_grad)
    if isinstance(m, SentenceClassifier):
        parts = ("classifier", (_parts(m.encoder), m.head.out_features, m.dropout.p))
    elif hasattr(m, "config") and hasattr(m.config, "to_dict"):
        # an encoder cut from a masked LM has no pooler (``pooler`` None); rebuilt from its config it would get one
        options = {"add_pooling_layer": False} if getattr(m, "pooler", False) is None else {}
        parts = ("config", (type(m), m.config, options))
    else:
        parts, state = ("module", (copy.deepcopy(m).cpu(),)), {}
    return _ModuleParts(parts[0], parts[1], state, m.training, frozen)


def _module(spec: _ModuleParts) -> nn.Module:
    if spec.kind == "classifier":
        encoder, n_classes, dropout = spec.parts
        model = SentenceClassifier(_module(encoder), n_classes=n_classes, dropout=dropout)
        model.load_state_dict(spec.state)
    elif spec.kind == "config":
        cls, config, options = spec.parts
        model = cls(config, **options)
        model.load_state_dict(spec.state)
    else:
        model = spec.parts[0]
    model.train(spec.training)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in spec.frozen)
    return model


def portable(obj):
    """``obj`` with every model in it (also inside dicts, lists, tuples and dataclasses) replaced by its plain parts
    and every tensor moved to the CPU; :func:`restored` undoes it. Anything else is left as it is."""
    if isinstance(obj, nn.Module):
        return _parts(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(portable(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {f.name: portable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        if any(v is not getattr(obj, k) for k, v in changed.items()):
            return dataclasses.replace(obj, **changed)
    return obj


def restored(obj):
    """The inverse of :func:`portable`: models rebuilt from their parts (on the CPU)."""
    if isinstance(obj, _ModuleParts):
        return _module(obj)
    if isinstance(obj, dict):
        return {k: restored(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(restored(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {f.name: restored(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        if any(v is not getattr(obj, k) for k, v in changed.items()):
            return dataclasses.replace(obj, **changed)
    return obj


#: what a worker process received, set once by its initializer (:func:`run_jobs` with ``workers > 1``); the main
#: process never reads it
_WORKER_SHARED: dict = {}


def _worker_start(payload: bytes, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER_SHARED["shared"] = restored(torch.load(io.BytesIO(payload), weights_only=False))


def _worker_job(fn, job):
    return portable(fn(_WORKER_SHARED["shared"], job))


def run_jobs(fn, shared, jobs, *, workers: int = 1, threads: int | None = None, progress=None) -> list:
    """``[fn(shared, job) for job in jobs]``, with ``workers > 1`` computed in that many processes at a time (see the
    module docstring). ``threads``: CPU threads per process (default: the machine's cores shared among the
    processes). ``progress``: a tqdm bar advanced once per finished job. With processes, the results' models and
    tensors arrive on the CPU."""
    jobs = list(jobs)
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers = {workers!r} is not allowed: 0 or 1 (one after another here) or a number of "
                         "processes")
    workers = min(workers, len(jobs))  # no idle processes; one job runs here
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(fn(shared, job))
            if progress is not None:
                progress.update(1)
        return results
    buffer = io.BytesIO()
    torch.save(portable(shared), buffer)
    threads = max(1, (os.cpu_count() or 2) // workers) if threads is None else int(threads)
    context = torch.multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                                                    initargs=(buffer.getvalue(), threads)) as pool:
            futures = [pool.submit(_worker_job, fn, job) for job in jobs]
            for _ in concurrent.futures.as_completed(futures):
                if progress is not None:
                    progress.update(1)
            return [restored(f.result()) for f in futures]
    except concurrent.futures.process.BrokenProcessPool as error:
        raise RuntimeError(f"a worker process of run_jobs died before finishing its job (killed for memory?): with "
                           f"workers = {workers} each process holds its own models; try fewer workers, or 1 to run "
                           "the jobs one after another here") from error
