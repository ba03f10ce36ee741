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
instance) raises an error saying so, not a bare ``BrokenProcessPool``; a job that runs out of GPU memory is run again
with half as many processes (down to one after another here), with a warning.
"""
from __future__ import annotations

import concurrent.futures
import io
import os
import warnings

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


def _here(fn, shared, jobs, progress) -> list:
    results = []
    for job in jobs:
        results.append(fn(shared, job))
        if progress is not None:
            progress.update(1)
    return results


def _in_pool(fn, payload: bytes, jobs: dict, workers: int, threads: int, progress, encode, decode) -> tuple[dict, list]:
    """Run ``jobs`` ({index: job}) in ``workers`` processes: the results of those that finished, by index, and the
    indices of those that ran out of GPU memory."""
    context = torch.multiprocessing.get_context("spawn")
    done, short = {}, []
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                                                    initargs=(payload, threads, decode)) as pool:
            futures = {pool.submit(_worker_job, fn, job, encode): index for index, job in jobs.items()}
            for future in concurrent.futures.as_completed(futures):
                try:
                    done[futures[future]] = decode(future.result())
                except torch.OutOfMemoryError:
                    short.append(futures[future])
                    continue
                if progress is not None:
                    progress.update(1)
    except concurrent.futures.process.BrokenProcessPool as error:
        raise RuntimeError(f"a worker process died before finishing its job (killed for memory?): with workers = "
                           f"{workers} each process holds its own models; try fewer workers, or 1 to run the jobs one "
                           "after another here") from error
    return done, sorted(short)


def map_in_processes(fn, shared, jobs, *, workers: int = 1, threads: int | None = None, progress=None, encode=None,
                     decode=None) -> list:
    """``[fn(shared, job) for job in jobs]``, with ``workers > 1`` computed in that many processes at a time (see the
    module docstring). ``threads``: CPU threads per process (default: the machine's cores shared among the
    processes). ``progress``: a tqdm bar advanced once per finished job.

    Processes that share a GPU may not all fit in its memory (a 16 GB card, say, for a profile sized for 80 GB). A job
    that runs out of GPU memory in a process is run again, with half as many processes, down to one after another
    here; a warning says so. The result is the same: a job seeds what it draws, so where it runs does not matter."""
    jobs = list(jobs)
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers = {workers!r} is not allowed: 0 or 1 (one after another here) or a number of "
                         "processes")
    workers = min(workers, len(jobs))  # no idle processes; a single job runs here
    if workers <= 1:
        return _here(fn, shared, jobs, progress)
    encode, decode = encode or _same, decode or _same
    buffer = io.BytesIO()
    torch.save(encode(shared), buffer)
    results, todo = {}, dict(enumerate(jobs))
    while todo:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # this process's cached, unused GPU blocks go back to the card, for the processes
        count = max(1, (os.cpu_count() or 2) // workers) if threads is None else int(threads)
        done, short = _in_pool(fn, buffer.getvalue(), todo, workers, count, progress, encode, decode)
        results.update(done)
        if not short:
            break
        fewer = workers // 2
        warnings.warn(f"{len(short)} of {len(todo)} jobs ran out of GPU memory with {workers} processes sharing the "
                      f"GPU: running them again " + (f"with {fewer} processes" if fewer > 1 else "one after another "
                                                      "here") + " (the same results: each job seeds what it draws)",
                      RuntimeWarning, stacklevel=2)
        todo = {index: todo[index] for index in short}
        if fewer <= 1:
            results.update(zip(todo, _here(fn, shared, list(todo.values()), progress)))
            break
        workers = fewer
    return [results[index] for index in range(len(jobs))]
