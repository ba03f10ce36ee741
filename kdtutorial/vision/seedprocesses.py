"""Runs that cannot be stacked (seeds of a model with dropout or batch norm, or models of different sizes), each
trained in its own process on the same GPU: an option (``workers=`` of
:func:`~kdtutorial.vision.experiments.train_models` and :func:`~kdtutorial.vision.experiments.train_architectures`),
not the default.

A model with dropout or batch normalisation cannot join the stacked pass of :mod:`kdtutorial.vision.seedbatch`
exactly: its dropout masks would come from another random stream. :func:`train_in_processes` runs
:func:`~kdtutorial.vision.experiments.train_model` for each run in a process of its own (``spawn``), several at a time
on the same device, in the hope that one process launches kernels while another's run. On one H100 it did not pay:
8 CNN-teacher runs of 4 epochs took 17.5 s one after another, 19.1 s in 4 processes and 21.3 s in 8
(``benchmarks/cnn_seed_processes.py``, ``results/full/vision_seed_processes_h100.jsonl``; without MPS the processes
take turns on the GPU), so the lessons train such runs one after another. Each process does exactly what the
one-at-a-time loop does for its run: ``seed_everything(seed)`` (which seeds that process's CPU and CUDA generators),
build, train, evaluate, with the parent's number of CPU threads. So each run's model, history and test accuracy are
the ones the loop gives (``tests/vision/test_seedprocesses.py`` checks them bit for bit on the CPU, and on the H100 its
GPU test found the same losses epoch by epoch up to rounding).

The parent's CPU generator is left where the loop leaves it (after building the last seed's model); its CUDA generator
is not advanced by the children's dropout. Every lesson seeds before it draws, so neither changes a result.
"""
from __future__ import annotations

import torch

from kdtutorial.common.workerpool import map_in_processes

__all__ = ["train_in_processes"]


class _Quiet:
    """A child's progress: none (its own ``tqdm`` bar would print into the notebook; the parent's bar counts)."""

    def update(self, n: int = 1):
        pass


def _run(shared, job):
    """One run in a child process: ``train_model`` as the loop calls it; the weights come back on the CPU."""
    from kdtutorial.vision.experiments import train_model

    data, kwargs = shared
    arch, objective, seed = job
    model, history, accuracy = train_model(arch, data, objective, seed=seed, progress=_Quiet(), **kwargs)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, history, accuracy


class _Epochs:
    """The caller's ``tqdm`` bar seen through the pool, which advances once per finished run: by ``epochs``."""

    def __init__(self, bar, epochs: int):
        self.bar, self.epochs = bar, epochs

    def update(self, n: int = 1):
        self.bar.update(n * self.epochs)


def train_in_processes(archs, data, objectives, seeds, *, workers: int, progress=None, **kwargs) -> list:
    """``[train_model(a, data, obj, seed=s, **kwargs) for a, s, obj in zip(archs, seeds, objectives)]``, each in its
    own process, ``workers`` at a time: one architecture, objective and seed per run (the seeds of one model, or
    teachers of several sizes from one seed). ``progress``: an open ``tqdm`` bar, advanced by ``kwargs["epochs"]`` as
    each run finishes (in order). Returns ``[(model, history, test_accuracy), ...]`` in order, each model on
    ``kwargs["device"]`` in eval mode. The pool is :func:`~kdtutorial.common.workerpool.map_in_processes`, with the
    parent's number of CPU threads in every process."""
    from kdtutorial.common.environment import seed_everything
    from kdtutorial.vision import models

    archs, seeds, objectives = list(archs), [int(s) for s in seeds], list(objectives)
    if not (len(archs) == len(seeds) == len(objectives)):
        raise ValueError(f"train_in_processes needs one architecture, objective and seed per run: got {len(archs)} "
                         f"architectures, {len(objectives)} objectives and {len(seeds)} seeds")
    device = kwargs.get("device", "cpu")
    bar = None if progress is None else _Epochs(progress, kwargs.get("epochs", 0))
    runs = map_in_processes(_run, (data, kwargs), list(zip(archs, objectives, seeds)), workers=workers,
                            threads=torch.get_num_threads(), progress=bar)
    out = []
    for a, (state, history, accuracy) in zip(archs, runs):
        with torch.random.fork_rng(devices=[]):
            model = models.build(a, data.input_shape, data.n_classes)
        model.load_state_dict(state)
        out.append((model.to(device).eval(), history, accuracy))
    seed_everything(seeds[-1])  # the parent's CPU generator where the one-at-a-time loop leaves it
    models.build(archs[-1], data.input_shape, data.n_classes)
    return out
