"""Independent jobs, several at a time, each in a process of its own on one device: the one process pool every lesson
that trains runs side by side uses (vision: ``vision.seedprocesses``; text: ``common.processes``).

:func:`map_in_processes` runs ``fn(shared, job)`` for every job and returns the results in the order of the jobs:

* ``workers <= 1`` (or a single job): here, one after another, exactly what a loop over the jobs does;
* ``workers > 1``: that many ``spawn`` processes, each receiving ``shared`` once (through ``torch.save``). ``fn`` must
  be a function of a module (it is sent by name), and each job must seed what it draws (``seed_everything``), so that
  a result does not depend on which process computed it. With as many CPU threads as the loop had, a process computes
  what the loop computes, bit for bit on the CPU; on a GPU up to its run-to-run variation.

``encode`` / ``decode`` (functions of a module) turn what crosses a process boundary into something that pickles and
back: ``shared`` on its way to the processes, each result on its way back (e.g. a transformers model, whose forward
hooks do not pickle, as its class, config and weights: ``common.processes``). A process that dies (killed for memory, for
instance) raises an error saying so, not a bare ``BrokenProcessPool``.
"""
from __future__ import annotations

import concurrent.futures
import io
import os

import torch

__all__ = ["map_in_processes"]

#: what a worker process received, set once by its initializer; the main process never reads it
_WORKER: dict = {}


def _same(obj):
    return obj


def _worker_start(payload: bytes, threads: int, decode) -> None:
    torch.set_num_threads(threads)
    _WORKER["shared"] = decode(torch.load(io.BytesIO(payload), weights_only=False))


def _worker_job(fn, job, encode):
    return encode(fn(_WORKER["shared"], job))


def map_in_processes(fn, shared, jobs, *, workers: int = 1, threads: int | None = None, progress=None, encode=None,
                     decode=None) -> list:
    """``[fn(shared, job) for job in jobs]``, with ``workers > 1`` computed in that many processes at a time (see the
    module docstring). ``threads``: CPU threads per process (default: the machine's cores shared among the
    processes). ``progress``: a tqdm bar advanced once per finished job."""
    jobs = list(jobs)
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers = {workers!r} is not allowed: 0 or 1 (one after another here) or a number of "
                         "processes")
    workers = min(workers, len(jobs))  # no idle processes; a single job runs here
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(fn(shared, job))
            if progress is not None:
                progress.update(1)
        return results
    encode, decode = encode or _same, decode or _same
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # this process's cached, unused GPU blocks go back to the card, for the processes
    buffer = io.BytesIO()
    torch.save(encode(shared), buffer)
    threads = max(1, (os.cpu_count() or 2) // workers) if threads is None else int(threads)
    context = torch.multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                                                    initargs=(buffer.getvalue(), threads, decode)) as pool:
            futures = [pool.submit(_worker_job, fn, job, encode) for job in jobs]
            for _ in concurrent.futures.as_completed(futures):
                if progress is not None:
                    progress.update(1)
            return [decode(f.result()) for f in futures]
    except torch.OutOfMemoryError as error:
        raise torch.OutOfMemoryError(f"{error}\nThe {workers} worker processes share one GPU, each with its own models "
                                     "and activations: try fewer workers (1 runs the jobs one after another here)") \
            from error
    except concurrent.futures.process.BrokenProcessPool as error:
        raise RuntimeError(f"a worker process died before finishing its job (killed for memory?): with workers = "
                           f"{workers} each process holds its own models; try fewer workers, or 1 to run the jobs one "
                           "after another here") from error
