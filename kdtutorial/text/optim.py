"""The supervised training loop of the text lessons: AdamW, linear warm-up, then linear decay to 0.

This is the usual BERT fine-tuning recipe (Devlin et al., 2019, appendix A.3). :func:`train_steps` runs it for any
model, batch source and loss (sentence classifier, cross-encoder, two-tower ranker); ``optimiser_kernels`` picks
Adam's implementation per device. Three text loops differ from it on purpose, each for a reason its docstring gives:
``pretraining.fit_mlm_head`` (a head on cached hidden states), ``pretraining.general_distillation`` (teacher and
student through the same masked batches, no labels) and ``matekd.train_mate_kd`` (two models alternating a
maximisation and a minimisation step, each step updating one model only).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from kdtutorial.common.stepgraph import GraphedStep, check_graph_device, step_autocast

__all__ = ["optimiser_kernels", "adamw_with_warmup", "planned_steps", "to_device", "graph_targets", "train_steps"]


def optimiser_kernels(device) -> dict:
    """Adam's implementation per device: fused kernels on CUDA; on the CPU the per-tensor loop.

    The CPU default (``foreach``) updates all tensors at once through temporary copies of every parameter,
    which for a small BERT costs several hundred MB at the peak; the per-tensor loop needs almost none and is
    about as fast on a CPU. Both compute the same update.
    """
    if torch.device(device).type == "cuda":
        return {"fused": True}
    return {"foreach": False}


def adamw_with_warmup(params, *, lr: float, weight_decay: float, warmup: float, steps: int, device,
                      capturable: bool = False):
    """``(optimiser, schedule)``: AdamW whose rate rises linearly over the first ``warmup`` share of ``steps``,
    then falls linearly to 0 at ``steps``. Call ``schedule.step()`` after every ``optimiser.step()``.

    ``capturable=True`` (CUDA): an optimiser a CUDA graph can record: its step count and its learning rate live in
    device tensors (the schedule writes the rate in place, so a replayed step reads the current one), and its bias
    corrections are computed on the device."""
    kernels = optimiser_kernels(device)
    if capturable:
        check_graph_device(device)
        lr, kernels = torch.tensor(float(lr), device=device), {**kernels, "capturable": True}
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kernels)
    warm = max(1, int(warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warm, max(0.0, (steps - step) / max(1, steps - warm))))
    return optimiser, schedule


def planned_steps(n_rows: int, batch_size: int, epochs: int, max_steps: int | None = None) -> int:
    """Optimiser steps of ``epochs`` passes over ``n_rows`` in batches of ``batch_size``, capped by ``max_steps``."""
    steps = epochs * -(-n_rows // batch_size)
    return steps if max_steps is None else min(max_steps, steps)


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``, without making the host wait for the GPU (anything that is not a tensor, such as a key
    made on the host, is returned as it is).

    A copy from ordinary (pageable) host memory to a CUDA device first waits for all the work already queued on the
    stream, so a copy per step would stall the training loop once per step. A CPU tensor bound for CUDA is therefore
    copied into page-locked memory first (PyTorch caches those blocks) and sent asynchronously; anything else is a
    plain ``.to(device)``.
    """
    if not isinstance(t, torch.Tensor):
        return t
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def graph_targets(values: torch.Tensor, device, graphs: bool) -> torch.Tensor:
    """Per-row targets (labels, teacher logits) where ``loss_of`` gathers its batch's rows from them: on ``device``
    when ``graphs`` (a graphed :func:`train_steps` hands ``loss_of`` the rows as a device tensor), else as they
    are."""
    return values.to(device) if graphs else values


def train_steps(model, batches, loss_of, *, n_rows: int, epochs: int, batch_size: int, lr: float,
                weight_decay: float, warmup: float, device, amp: bool = False, max_steps: int | None = None,
                frozen=(), desc: str = "train", progress: bool = True, accelerator=None, after_epoch=None,
                after_step=None, graphs: bool = False) -> list:
    """Train ``model`` and return the loss of every step; the model is left in eval mode.

    The loop never waits for the GPU: inputs go through :func:`to_device`, and the losses stay on the device until
    the end (a ``loss.item()`` per step would make the host wait for every step to finish before it prepares the
    next batch).

    ``batches(epoch)`` yields ``(rows, inputs)`` where ``inputs`` is a tuple passed positionally to ``model`` (its
    tensors moved to ``device``); ``loss_of(logits, rows)`` gives the batch loss from float32 logits. AdamW with
    :func:`adamw_with_warmup`; bf16 autocast on CUDA when ``amp``; parameters in ``frozen`` are not trained (and
    get ``requires_grad`` back afterwards). ``after_epoch(epoch)``, when given, is called after each epoch (e.g. to
    score the model on a held-out set and keep the best epoch); it may switch the model to eval mode, training
    resumes in train mode. ``after_step(updates)``, likewise, after every optimiser update, with the number of
    updates so far (e.g. to score checkpoints at fixed update counts, whatever the epoch length).

    ``accelerator``: a Hugging Face ``accelerate.Accelerator`` (the script runs under ``accelerate launch``; see
    :mod:`kdtutorial.ranking.scaling`). The model trains data-parallel on ``accelerator.device`` (``device`` is ignored):
    of each epoch's batches, process ``r`` of ``N`` takes ``r, r + N, ...`` (the last ``len % N`` are left out so
    every process takes as many), gradients are averaged across processes, and one optimiser step covers ``N``
    batches, so the schedule has about ``N`` times fewer steps. Each process returns its own losses. With one
    process this is the same training as without an accelerator.

    ``graphs=True`` (a CUDA device, no ``accelerator``): the step (forward, loss, backward, AdamW) is recorded once as
    a CUDA graph and replayed (:class:`~kdtutorial.common.stepgraph.GraphedStep`), so the host launches a step's
    few hundred kernels with one call. The step stays the same computation, under three conditions the callers meet:
    every batch's ``inputs`` are tensors of the same shapes (padded to one width; a shorter last batch runs eagerly),
    ``loss_of`` gets ``rows`` as a device tensor of row indices and indexes only device tensors with it, and it reads
    nothing back to the host. AdamW is then capturable (:func:`adamw_with_warmup`). Dropout draws other masks than
    the eager loop (the graph's random stream), as another seed would.
    """
    if graphs:
        check_graph_device(device if accelerator is None else accelerator.device)
        if accelerator is not None:
            raise ValueError("graphs=True is not allowed with an accelerator: the step would hold collective calls")
    world, rank = (1, 0) if accelerator is None else (accelerator.num_processes, accelerator.process_index)
    device = torch.device(device) if accelerator is None else accelerator.device
    model.to(device).train()
    frozen = set(frozen)
    per_epoch = planned_steps(n_rows, batch_size, 1)
    if world > 1:
        per_epoch //= world
        if per_epoch == 0:
            raise ValueError(f"{n_rows} rows in batches of {batch_size} give fewer batches than the {world} processes")
    steps = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    for p in frozen:
        p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p not in frozen]
    optimiser, schedule = adamw_with_warmup(trainable, lr=lr, weight_decay=weight_decay, warmup=warmup, steps=steps,
                                            device=device, capturable=graphs)
    net = model if accelerator is None else accelerator.prepare(model)  # DistributedDataParallel when N > 1
    backward = (lambda loss: loss.backward()) if accelerator is None else accelerator.backward
    cast = step_autocast(amp and device.type == "cuda", graphs)
    last = {}
    # a graphed step writes its loss into this tensor, made before the capture (read back after each replay)
    loss_out = torch.zeros((), device=device) if graphs else None

    def step(rows, *inputs):  # one update; its loss stays on the device
        with cast:
            logits = net(*inputs)
        loss = loss_of(logits.float(), rows)
        backward(loss)
        optimiser.step()
        if loss_out is None:
            last["loss"] = loss.detach()
        else:
            loss_out.copy_(loss.detach())

    def zero_grad():
        optimiser.zero_grad(set_to_none=True)

    graphed = GraphedStep(step, zero_grad) if graphs else None
    losses = []
    try:
        with tqdm(total=steps, desc=desc, leave=False, disable=not progress or rank > 0) as bar:
            for epoch in range(epochs):
                if len(losses) >= steps:
                    break
                taken = 0
                for k, (rows, inputs) in enumerate(batches(epoch)):
                    if len(losses) >= steps or taken == per_epoch:
                        break
                    if k % world != rank:
                        continue
                    taken += 1
                    inputs = tuple(to_device(t, device) for t in inputs)
                    if graphed is None:
                        zero_grad()
                        step(rows, *inputs)
                        losses.append(last["loss"])
                    else:
                        if not all(isinstance(t, torch.Tensor) for t in inputs):
                            raise ValueError("graphs=True needs every input of a batch to be a tensor")
                        graphed(to_device(torch.as_tensor(rows, dtype=torch.long), device), *inputs)
                        losses.append(loss_out.clone())  # the next step rewrites it in place
                    schedule.step()
                    bar.update(1)
                    if after_step is not None:
                        after_step(len(losses))
                        model.train()
                if after_epoch is not None:
                    after_epoch(epoch)
                    model.train()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    model.eval()
    return torch.stack(losses).double().cpu().tolist() if losses else []
