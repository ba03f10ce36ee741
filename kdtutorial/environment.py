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


def banner(device: torch.device | str) -> str:
    """One line naming Python, torch, the device (GPU name if any) and the CPU thread count."""
    device = torch.device(device)
    where = "cpu"
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    return (
        f"python {platform.python_version()} | torch {torch.__version__} | device {where} | "
        f"cpu threads {torch.get_num_threads()}"
    )
