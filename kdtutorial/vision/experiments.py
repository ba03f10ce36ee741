"""Vision models trained from a seed: ``train_model`` (one objective) and ``train_annealing_kd`` (Annealing KD's
two stages, Jafari et al., EACL 2021). Same seed, same initial weights. The statistics over the seeds (mean ±
sample std, tables, comparisons) are in :mod:`kdtutorial.common.statistics`.
"""
from __future__ import annotations


from kdtutorial.vision import models
from kdtutorial.common.environment import seed_everything
from kdtutorial.vision.objectives import AnnealedLogits, CrossEntropy
from kdtutorial.vision.training import History, evaluate, fit

__all__ = ["train_model", "train_annealing_kd"]


def train_model(arch: str, data, objective, *, seed: int, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                weight_decay: float = 0.0, device="cpu", progress=None, amp: bool = False, val_set=None):
    """Build ``arch`` from ``seed`` (same seed -> same initial weights), train it with ``objective``.

    Returns ``(model, history, test_accuracy)``; with ``val_set`` the history holds per-epoch ``val_acc``.
    """
    seed_everything(seed)
    model = models.build(arch, data.input_shape, data.n_classes)
    history = fit(model, data.train, objective, epochs=epochs, lr=lr, batch_size=batch_size,
                  weight_decay=weight_decay, seed=seed, device=device, progress=progress, amp=amp, val_set=val_set)
    return model, history, evaluate(model, data.test, device)


def train_annealing_kd(arch: str, data, cache, schedule, *, seed: int, stage2_epochs: int, stage1_lr: float = 1e-3,
                       lr: float = 1e-3, batch_size: int = 64, device="cpu", progress=None, val_set=None):
    """Annealing KD (Jafari et al., EACL 2021): stage I regresses ``phi(T) * z_t``, stage II trains on labels.

    Stage I runs ``schedule.stage1_epochs`` epochs with ``AnnealedLogits`` at ``stage1_lr``; stage II continues
    the same model for ``stage2_epochs`` epochs of cross-entropy at ``lr``. The history numbers the epochs of
    both stages in one sequence and marks each with ``stage`` (1 or 2) and, in stage I, ``phi``.
    Returns ``(model, history, test_accuracy)``.
    """
    seed_everything(seed)
    model = models.build(arch, data.input_shape, data.n_classes)
    objective = AnnealedLogits(cache, schedule)
    common = dict(batch_size=batch_size, device=device, progress=progress, val_set=val_set)
    stage1 = fit(model, data.train, objective, epochs=schedule.stage1_epochs, lr=stage1_lr, seed=seed,
                 on_epoch_start=objective.start_epoch, **common)
    stage2 = fit(model, data.train, CrossEntropy(), epochs=stage2_epochs, lr=lr, seed=seed + 1, **common)
    history = History()
    for row, p in zip(stage1.records, objective.phis_seen):
        history.add(**row, stage=1, phi=p)
    for row in stage2.records:
        history.add(**{**row, "epoch": row["epoch"] + schedule.stage1_epochs}, stage=2)
    return model, history, evaluate(model, data.test, device)


