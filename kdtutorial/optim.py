"""The optimiser every training loop of the text lessons uses: AdamW, linear warm-up, then linear decay to 0.

This is the usual BERT fine-tuning recipe (Devlin et al., 2019, appendix A.3). ``optimiser_kernels`` picks Adam's
implementation per device.
"""
from __future__ import annotations

import torch

__all__ = ["optimiser_kernels", "adamw_with_warmup"]


def optimiser_kernels(device) -> dict:
    """Adam's implementation per device: fused kernels on CUDA; on the CPU the per-tensor loop.

    The CPU default (``foreach``) updates all tensors at once through temporary copies of every parameter,
    which for a small BERT costs several hundred MB at the peak; the per-tensor loop needs almost none and is
    about as fast on a CPU. Both compute the same update.
    """
    if torch.device(device).type == "cuda":
        return {"fused": True}
    return {"foreach": False}


def adamw_with_warmup(params, *, lr: float, weight_decay: float, warmup: float, steps: int, device):
    """``(optimiser, schedule)``: AdamW whose rate rises linearly over the first ``warmup`` share of ``steps``,
    then falls linearly to 0 at ``steps``. Call ``schedule.step()`` after every ``optimiser.step()``."""
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **optimiser_kernels(device))
    warm = max(1, int(warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warm, max(0.0, (steps - step) / max(1, steps - warm))))
    return optimiser, schedule
