"""Several seeds of one vision configuration trained together, as they would be trained one at a time.

The vision lessons train small MLP students for many seeds. On a GPU one such student is far too small to keep the
device busy: each step is a handful of tiny kernels, and the time goes to launching them. :func:`fit_seeds` trains
``K`` seeds in one pass per step instead. Each seed keeps everything it has in :func:`~kdtutorial.vision.training.fit`:
its own initial weights (the models are built from their seeds), its own shuffling order (a generator seeded with its
seed) and its own objective and Adam state. The models' parameters are stacked along a new first axis
(``torch.func.stack_module_state``) and one vmapped forward and backward pass runs all of them:

    L(theta_1, ..., theta_K) = sum_k L_k(theta_k; batch_k),   so   dL/dtheta_k = dL_k/dtheta_k,

and Adam is elementwise, so one Adam over the stacked tensors takes each model's own step. Only the floating-point
rounding differs (batched matrix products instead of one at a time): ``tests/vision/test_seedbatch.py`` checks that
the batched path gives the same models and losses as the one-seed-at-a-time path, to float32 rounding.

Exact only for models that behave the same in a batch as alone: no dropout (its random masks would come from another
stream) and no batch normalisation (its running statistics are buffers the vmapped pass does not update). Such a
model is refused; the lessons' students (``mlp-*``) have neither.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from tqdm.auto import tqdm

from kdtutorial.vision.objectivestack import stack_objectives
from kdtutorial.common.stepgraph import GraphedStep, check_graph_device, step_autocast
from kdtutorial.vision.training import History, epoch_order

__all__ = ["fit_seeds", "check_batchable"]


def check_batchable(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first module that makes a model behave differently when trained in a stack
    (dropout with ``p > 0``, batch normalisation)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            raise ValueError(f"model module {name!r} is dropout (p = {module.p}): its random masks would differ from "
                             f"one-at-a-time training; train such a model with fit()")
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"model module {name!r} is batch normalisation: its running statistics are not updated "
                             f"in a stacked pass; train such a model with fit()")


def fit_seeds(models, train_set, objectives, *, seeds, epochs: int, lr: float = 1e-3, batch_size: int = 64,
              weight_decay: float = 0.0, device="cpu", amp: bool = False, val_set=None, progress=None,
              on_epoch_start=None, graphs: bool = False) -> list:
    """Train ``models[k]`` with ``objectives[k]`` and shuffling seed ``seeds[k]``, all in one stacked pass per step,
    as :func:`~kdtutorial.vision.training.fit` trains one (same arguments, same Adam, same per-epoch ``loss`` and
    ``val_acc``). The models must share one architecture (:func:`check_batchable`); their trained weights are written
    back into them, which are left in eval mode. Returns one :class:`~kdtutorial.vision.training.History` per model.
    ``progress``: an open ``tqdm`` bar advanced by one per epoch, or ``None`` for a bar of this call's own.
    ``on_epoch_start(epoch)``: a hook called before each epoch, as ``fit`` calls it (e.g. the ``start_epoch`` of
    Annealing KD's objectives).

    Nothing in a step waits for the host: each epoch's shuffling orders (the same ``randperm`` draws as ``fit``
    makes) go to the device once, the objectives of all models are computed together
    (:func:`~kdtutorial.vision.objectivestack.stack_objectives`), and the epoch's losses are summed on the device.
    ``graphs=True`` (CUDA only, every objective grouped) replays each full-size step from a CUDA graph
    (:class:`~kdtutorial.common.stepgraph.GraphedStep`; Adam then keeps its step count on the device, which moves the
    weights by float32 rounding only)."""
    models, objectives, seeds = list(models), list(objectives), [int(s) for s in seeds]
    if not models or not len(models) == len(objectives) == len(seeds):
        raise ValueError(f"fit_seeds needs one objective and one seed per model: got {len(models)} models, "
                         f"{len(objectives)} objectives and {len(seeds)} seeds")
    for model in models:
        check_batchable(model)
    shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}
    if len(shapes) != 1:
        raise ValueError("fit_seeds stacks models of one architecture: these models' parameters differ in name or shape")
    device = torch.device(device)
    if graphs:
        check_graph_device(device)
    for model in models:
        model.to(device).train()
    params, buffers = torch.func.stack_module_state(models)  # each [K, ...]; the parameters are new leaf tensors
    skeleton = copy.deepcopy(models[0]).to("meta")

    def one(p, b, x):
        return torch.func.functional_call(skeleton, (p, b), (x,))

    forward = torch.func.vmap(one)
    optimiser = torch.optim.Adam(list(params.values()), lr=lr, weight_decay=weight_decay, fused=device.type == "cuda",
                                 capturable=graphs)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    x, y = train_set.x.to(device), train_set.y.to(device)
    with torch.no_grad():
        n_classes = models[0](x[:1]).shape[-1]
    stack = stack_objectives(objectives, n_classes, device)
    if graphs and stack.looped:
        raise ValueError(f"graphs=True is not allowed with objectives computed one model at a time (positions "
                         f"{stack.looped}): they read host indices, which a CUDA graph cannot")
    use_amp = amp and device.type == "cuda"
    totals = torch.zeros(len(models), dtype=torch.float64, device=device)  # each epoch's loss sums, one per model

    def step(idx):  # one step on the models' [K, B] batch indices; nothing is read back to the host
        with step_autocast(use_amp, graphs):
            logits = forward(params, buffers, x[idx])
        losses = stack(logits.float(), y[idx], idx)
        losses.sum().backward()
        optimiser.step()
        totals.add_(losses.detach().double() * idx.shape[1])

    def zero_grad():
        optimiser.zero_grad(set_to_none=True)

    graphed = GraphedStep(step, zero_grad) if graphs else None
    histories = [History() for _ in models]
    own_bar = progress is None
    bar = tqdm(total=epochs, desc=f"epochs ({len(models)} seeds together)", leave=False) if own_bar else progress
    try:
        for epoch in range(1, epochs + 1):
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            stack.start_epoch()
            # each model's order for the epoch, drawn as fit draws it from the model's own generator, [K, n]
            orders = torch.stack([epoch_order(len(x), True, g) for g in generators]).to(device)
            totals.zero_()
            for start in range(0, len(x), batch_size):
                idx = orders[:, start : start + batch_size]  # [K, B]: each model's own batch
                if graphed is not None:
                    graphed(idx)
                else:
                    zero_grad()
                    step(idx)
            accs = _accuracies(forward, params, buffers, val_set, device) if val_set is not None else None
            for k, history in enumerate(histories):
                row = {"epoch": epoch, "loss": float(totals[k]) / len(x)}
                if accs is not None:
                    row["val_acc"] = accs[k]
                history.add(**row)
            bar.update(1)
    finally:
        if own_bar:
            bar.close()
    with torch.no_grad():
        for k, model in enumerate(models):
            model.load_state_dict({name: t[k] for name, t in {**params, **buffers}.items()})
            model.eval()
    return histories


@torch.no_grad()
def _accuracies(forward, params, buffers, dataset, device, batch_size: int = 1024) -> list:
    """Top-1 accuracy (percent) of every stacked model on ``dataset``, computed as ``training.evaluate`` does (a
    float32 mean of hits, times 100), so a model's value equals the one ``fit`` would record."""
    k = next(iter(params.values())).shape[0]
    x, y = dataset.x, dataset.y.to(device)
    hits = []
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size].to(device)
        hits.append(forward(params, buffers, chunk.expand(k, *chunk.shape)).float().argmax(-1) == y[i : i + batch_size])
    return [100.0 * m for m in torch.cat(hits, dim=1).float().mean(-1).tolist()]
