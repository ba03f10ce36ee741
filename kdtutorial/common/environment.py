"""Reproducibility and hardware: seeding, device choice and a one-line banner.

Every notebook starts with ``seed_everything(SEED)`` and ``resolve_device(DEVICE)`` and prints
``banner(device)``, so a reader can tell which library versions and which device produced the outputs.
"""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch
import contextlib

DEVICES = ("auto", "cpu", "cuda")


def seed_everything(seed: int) -> int:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every GPU) with ``seed``; return it.

    Seeding makes a CPU run repeatable on the same machine. Across machines, float kernels may still
    differ in the last bits, which is why the notebooks print results at a coarse precision.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


def set_cpu_threads(n: int | None) -> int:
    """Fix the number of CPU threads torch uses (``None``: leave torch's default); returns the count.

    The course's quick profile uses one thread: its models are tiny, so more threads buy little, and a
    fixed count makes CPU results independent of how many cores the machine has.
    """
    if n is not None:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def resolve_device(device: str = "auto") -> torch.device:
    """Map ``"auto" | "cpu" | "cuda"`` to a ``torch.device``; ``auto`` picks CUDA when it is present.

    Asking for ``"cuda"`` on a machine without a GPU raises a ``RuntimeError`` that says so, rather
    than failing later inside a training loop.
    """
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not allowed: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE = 'cuda' was asked for, but torch sees no CUDA GPU here; use 'auto' or 'cpu'")
    return torch.device(device)


def banner(device: torch.device | str, environ=None) -> str:
    """One line naming Python, torch, the device (GPU name if any) and the CPU thread count; and, when the course's
    runner runs several notebooks at once (``$KDTUTORIAL_JOBS`` > 1, set by ``python -m kdtutorial run --jobs``), how
    many: the times this notebook measures then include their competition for the GPU and the cores."""
    device = torch.device(device)
    where = "cpu"
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    jobs = (os.environ if environ is None else environ).get("KDTUTORIAL_JOBS", "")
    shared = f" | {jobs} notebooks at once on this machine" if jobs.isdigit() and int(jobs) > 1 else ""
    return (
        f"python {platform.python_version()} | torch {torch.__version__} | device {where} | "
        f"cpu threads {torch.get_num_threads()}{shared}"
    )


def release_memory() -> None:
    """Give freed memory back to the operating system: garbage-collect, then ask glibc to trim its heaps.

    Training many models one after another in one process leaves the C allocator holding freed blocks, so the
    process's resident memory keeps growing even though nothing is alive; on Binder's 2 GB that matters.
    ``malloc_trim`` exists only with glibc (Linux); elsewhere only the garbage collector runs.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name and platform.system() == "Linux":
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


def frugal_memory(threshold_bytes: int = 2 << 20) -> bool:
    """Make glibc return every freed block of at least ``threshold_bytes`` to the OS at once; True if set.

    By default glibc raises its mmap threshold each time a large block is freed, after which blocks of that size
    come from a heap that rarely shrinks: a process that trains many models one after another then holds far
    more memory than it uses. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD, ...)``) keeps the resident
    memory close to what is alive, at the cost of a few more system calls. The text lessons call it so their
    quick profile fits Binder's 2 GB. Linux/glibc only; elsewhere it does nothing and returns False.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux":
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(-3, int(threshold_bytes)))  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA when ``amp``; a no-op context on the CPU."""
    if amp and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device) -> None:
    """Wait for the queued GPU work on ``device`` (a no-op on the CPU): call before reading a timer."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device) -> None:
    """Start counting a GPU's peak allocated memory afresh (after its queued work); a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device) -> float:
    """The GPU memory allocated at the peak since :func:`reset_peak_memory`, in MiB; ``nan`` on the CPU."""
    if torch.device(device).type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20
