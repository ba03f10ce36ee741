"""The training loop of the vision lessons (01, 02, 04), plus a safe cache of teacher outputs.

``fit(model, train_set, objective, ...)`` runs mini-batch training with ``tqdm.auto`` progress and returns a
``History``. An *objective* is any callable ``objective(student_logits, labels, indices) -> loss``; the ones
the lessons use are in ``kdtutorial.vision.objectives``.

Why the indices: distillation code often precomputes the teacher's logits once and then reads them
back batch by batch. If the cached tensor is read by batch *position* while the loader shuffles, every
student sees another image's soft targets, and nothing crashes. Here a dataset yields
``(x, y, index)`` and ``TeacherCache`` is looked up by that index, so a shuffled batch gets its own
teacher outputs by construction; the cache also remembers a fingerprint of the data it was built on
and refuses to serve a different data set.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm
from kdtutorial.common.statistics import accuracy
from kdtutorial.common.stepgraph import GraphedStep, check_graph_device, step_autocast

__all__ = ["History", "TeacherCache", "fingerprint", "predict_logits", "accuracy", "evaluate", "fit", "batches",
           "epoch_order"]


def fingerprint(x: torch.Tensor) -> str:
    """A short hash of a tensor's shape and contents (identifies the data set a cache was built on)."""
    h = hashlib.sha1(str(tuple(x.shape)).encode())
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def epoch_order(n: int, shuffle: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """The order in which one epoch visits ``range(n)``: a permutation drawn from ``generator``, or ``0..n-1``."""
    return torch.randperm(n, generator=generator) if shuffle else torch.arange(n)


def batches(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
    """Index tensors covering ``range(n)`` in chunks of ``batch_size``, in :func:`epoch_order`."""
    return epoch_order(n, shuffle, generator).split(batch_size)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, device="cpu", batch_size: int = 1024) -> torch.Tensor:
    """The model's logits for every row of ``x``, in order, on the CPU (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    out = [model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: nn.Module, dataset, device="cpu") -> float:
    """Top-1 test accuracy (percent) of ``model`` on an ``IndexedDataset``."""
    return accuracy(predict_logits(model, dataset.x, device), dataset.y)


class TeacherCache:
    """Teacher logits for every example of one data set, looked up by example index.

    Build it once with ``TeacherCache.build(teacher, dataset)``; read it with ``cache[indices]``.
    ``cache.check(dataset)`` raises if it is used with a data set other than the one it was built on.
    """

    def __init__(self, logits: torch.Tensor, data_fingerprint: str):
        self.logits = logits
        self.data_fingerprint = data_fingerprint

    @classmethod
    def build(cls, teacher: nn.Module, dataset, device="cpu", batch_size: int = 1024) -> "TeacherCache":
        return cls(predict_logits(teacher, dataset.x, device, batch_size), fingerprint(dataset.x))

    def check(self, dataset) -> None:
        if len(dataset) != len(self.logits) or fingerprint(dataset.x) != self.data_fingerprint:
            raise ValueError(
                "this TeacherCache was built on another data set (length or contents differ): "
                "build a new cache for this data"
            )

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return self.logits[indices.to(self.logits.device)]

    def __len__(self) -> int:
        return len(self.logits)


@dataclass
class History:
    """Per-epoch records of a ``fit`` call: ``epoch``, ``loss`` (mean over batches), optional ``val_acc``."""

    records: list = field(default_factory=list)

    def add(self, **row):
        self.records.append(row)

    def column(self, name):
        return [r[name] for r in self.records if name in r]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.records)


def fit(
    model: nn.Module,
    train_set,
    objective,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    device="cpu",
    val_set=None,
    amp: bool = False,
    progress=None,
    on_epoch_start=None,
    graphs: bool = False,
) -> History:
    """Train ``model`` on ``train_set`` (an ``IndexedDataset``) by minimising ``objective`` with Adam.

    ``objective(logits, labels, indices)`` returns the batch loss. The shuffling order comes from a
    generator seeded with ``seed``, so two calls with the same seed see the same batches. ``amp=True``
    uses bfloat16 autocast on CUDA (ignored on the CPU). ``progress``: an open ``tqdm`` bar to advance by
    one per epoch (one bar for a whole experiment), or ``None`` for a bar of this call's own.
    ``on_epoch_start(epoch)``: an optional hook (e.g. a temperature schedule stepping forward).

    ``graphs=True`` (CUDA only) replays each full-size step from a CUDA graph
    (:class:`~kdtutorial.common.stepgraph.GraphedStep`), for models the stacked path refuses (dropout, batch norm):
    a captured step draws its dropout masks from the same generator and updates batch norm's running statistics in
    place, as the eager step does. The objective is then computed in its grouped form
    (:func:`~kdtutorial.vision.objectivestack.stack_objectives` with one model: the same formula, the teacher cache on
    the device, no host indices) and Adam keeps its step count on the device, which moves the weights by float32
    rounding only. An objective without a grouped form is refused, naming the parameter.
    """
    device = torch.device(device)
    if graphs:
        check_graph_device(device)
    model.to(device).train()
    x, y = train_set.x.to(device), train_set.y.to(device)
    # fused Adam: one kernel per step on a GPU (same maths as the default implementation)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=device.type == "cuda",
                                 capturable=graphs)
    generator = torch.Generator().manual_seed(int(seed))
    use_amp = amp and device.type == "cuda"
    # the epoch's loss is summed on the device in float64: no host synchronisation per step, and the same float64
    # additions of the same float32 losses as summing loss.item() on the host would do
    total = torch.zeros((), dtype=torch.float64, device=device)
    loss_of = _graphable_objective(objective, model, x, device) if graphs else None

    def step(idx, idx_dev):  # forward, loss, backward, Adam; nothing is read back to the host
        with step_autocast(use_amp, graphs):
            logits = model(x[idx_dev])
        if loss_of is None:
            loss = objective(logits.float(), y[idx_dev], idx)
        else:
            loss = loss_of(logits.float(), y[idx_dev], idx_dev)
        loss.backward()
        optimiser.step()
        total.add_(loss.detach().double() * idx_dev.shape[0])

    def zero_grad():
        optimiser.zero_grad(set_to_none=True)

    graphed = GraphedStep(lambda idx_dev: step(None, idx_dev), zero_grad) if graphs else None
    history = History()
    own_bar = progress is None
    bar = tqdm(total=epochs, desc="epochs", leave=False) if own_bar else progress
    try:
        for epoch in range(1, epochs + 1):
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            if loss_of is not None:
                loss_of.start_epoch()
            total.zero_()
            # the epoch's order goes to the device once: copying each batch's indices from the host would make the
            # host wait for the GPU at every step (a blocking copy synchronises the stream), so that launching the
            # next step's kernels could never overlap running this one's. The batches are those of ``batches``.
            order = epoch_order(len(x), True, generator)
            order_dev = order.to(device)
            for start in range(0, len(order), batch_size):
                idx_dev = order_dev[start : start + batch_size]
                if graphed is not None:
                    graphed(idx_dev)
                else:
                    zero_grad()
                    step(order[start : start + batch_size], idx_dev)
            row = {"epoch": epoch, "loss": float(total) / len(order)}
            if val_set is not None:
                row["val_acc"] = evaluate(model, val_set, device)
            history.add(**row)
            bar.update(1)
    finally:
        if own_bar:
            bar.close()
    model.eval()
    return history


class _OneModelStack:
    """``objective`` in its grouped form for one model (:mod:`~kdtutorial.vision.objectivestack`): ``loss_of(logits
    [B, C], labels [B], indices [B] on the device)`` -> the scalar loss, nothing read back to the host."""

    def __init__(self, stack):
        self.stack = stack

    def start_epoch(self):
        self.stack.start_epoch()

    def __call__(self, logits, labels, indices):
        return self.stack(logits[None], labels[None], indices[None])[0]


def _graphable_objective(objective, model, x, device) -> _OneModelStack:
    """The objective as a captured step can compute it, or ``ValueError`` naming ``graphs`` when it has no grouped
    form (it would read host indices)."""
    # imported here: the objectives module imports this one (TeacherCache)
    from kdtutorial.vision.objectivestack import stack_objectives

    with torch.no_grad():
        was_training = model.training
        model.eval()
        n_classes = model(x[:1]).shape[-1]
        model.train(was_training)
    stack = stack_objectives([objective], n_classes, device)
    if stack.looped:
        raise ValueError(f"graphs=True is not allowed with objective {type(objective).__name__}: it has no grouped "
                         f"form and reads host indices, which a CUDA graph cannot")
    return _OneModelStack(stack)
