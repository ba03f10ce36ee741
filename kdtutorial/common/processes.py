"""Independent training runs (the text lessons', lesson 08's), several at a time, each in a process of its own on one
device.

On a GPU a small BERT student's step is bound by the host: transformers' Python code launches a few hundred small
kernels per step, and the GPU waits for them. Runs that do not depend on each other (methods x seeds) can then share
one GPU: while one process prepares its kernels, another's run (lesson 10's full run trains 8 students at a time this
way). On a CPU there is nothing to gain (the cores are already busy), so the lessons train one run after another
there, in this process.

:func:`run_jobs` is :func:`~kdtutorial.common.workerpool.map_in_processes` (its docstring says how jobs run, where and
with which guarantees; ``tests/common/test_processes.py`` checks a text job bit for bit on the CPU) with models
crossing process boundaries as plain parts (:func:`portable`, :func:`restored`): a transformers model carries forward
hooks that do not survive pickling, so it travels as its class, config and weights and is rebuilt on the other side,
with its train/eval mode and frozen parameters as they were. A module that holds such a model (e.g. the text lessons'
``SentenceClassifier``) says how to rebuild itself: its ``constructor_arguments()`` (a dict of the arguments its
class takes, models among them) travel as parts too. Tensors arrive on the CPU.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from kdtutorial.common.workerpool import map_in_processes

__all__ = ["run_jobs", "portable", "restored"]


@dataclass(frozen=True)
class _ModuleParts:
    """A model as plain parts: ``kind`` "rebuilt" (a module with ``constructor_arguments()``: its class and those
    arguments, models among them as parts), "config" (a transformers model: class, config and constructor options)
    or "module" (any other module, pickled as is on the CPU); ``state`` the weights on the CPU; ``training`` its mode;
    ``frozen`` the parameters without gradients."""

    kind: str
    parts: tuple
    state: dict
    training: bool
    frozen: frozenset


def _parts(m: nn.Module) -> _ModuleParts:
    state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    frozen = frozenset(name for name, p in m.named_parameters() if not p.requires_grad)
    if callable(getattr(m, "constructor_arguments", None)):
        parts = ("rebuilt", (type(m), {k: _parts(v) if isinstance(v, nn.Module) else v
                                       for k, v in m.constructor_arguments().items()}))
    elif hasattr(m, "config") and hasattr(m.config, "to_dict"):
        # an encoder cut from a masked LM has no pooler (``pooler`` None); rebuilt from its config it would get one
        options = {"add_pooling_layer": False} if getattr(m, "pooler", False) is None else {}
        parts = ("config", (type(m), m.config, options))
    else:
        parts, state = ("module", (copy.deepcopy(m).cpu(),)), {}
    return _ModuleParts(parts[0], parts[1], state, m.training, frozen)


def _module(spec: _ModuleParts) -> nn.Module:
    if spec.kind == "rebuilt":
        cls, arguments = spec.parts
        model = cls(**{k: _module(v) if isinstance(v, _ModuleParts) else v for k, v in arguments.items()})
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


def _walk(obj, kinds, convert):
    """``obj`` with ``convert`` applied to every object of the types ``kinds`` it holds, also inside dicts, lists,
    tuples and dataclasses (a dataclass is rebuilt only if something in it changed); anything else is left as it
    is."""
    if isinstance(obj, kinds):
        return convert(obj)
    if isinstance(obj, dict):
        return {k: _walk(v, kinds, convert) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_walk(v, kinds, convert) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {f.name: _walk(getattr(obj, f.name), kinds, convert) for f in dataclasses.fields(obj) if f.init}
        if any(v is not getattr(obj, k) for k, v in changed.items()):
            return dataclasses.replace(obj, **changed)
    return obj


def portable(obj):
    """``obj`` with every model in it (also inside dicts, lists, tuples and dataclasses) replaced by its plain parts
    and every tensor moved to the CPU; :func:`restored` undoes it. Anything else is left as it is."""
    return _walk(obj, (nn.Module, torch.Tensor),
                 lambda x: _parts(x) if isinstance(x, nn.Module) else x.detach().cpu())


def restored(obj):
    """The inverse of :func:`portable`: models rebuilt from their parts (on the CPU)."""
    return _walk(obj, _ModuleParts, _module)


def run_jobs(fn, shared, jobs, *, workers: int = 1, threads: int | None = None, progress=None) -> list:
    """``[fn(shared, job) for job in jobs]``, with ``workers > 1`` computed in that many processes at a time
    (:func:`~kdtutorial.common.workerpool.map_in_processes`; ``threads``: CPU threads per process, default the
    machine's cores shared among them; ``progress``: a tqdm bar advanced once per finished job). Models and tensors
    travel as :func:`portable` makes them, so with processes the results' models and tensors arrive on the CPU."""
    return map_in_processes(fn, shared, jobs, workers=workers, threads=threads, progress=progress, encode=portable,
                            decode=restored)
