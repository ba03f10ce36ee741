"""Facts about a torch module: its parameter count and weight norm."""
from __future__ import annotations
import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (tied weights counted once); ``trainable_only``: those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

def weight_norm(model: nn.Module) -> float:
    """L2 norm of all parameters: printed after seeding so a reader sees two baselines start identical."""
    with torch.no_grad():
        return float(torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters())))
