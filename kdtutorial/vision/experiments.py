"""Vision models trained from a seed: ``train_model`` (one objective), ``train_models`` and ``train_recipes`` (many
``(seed, objective)`` pairs trained together, the same models as ``train_model`` per pair up to float32 rounding),
``train_annealing_kd`` (Annealing KD's two stages, Jafari et al., EACL 2021) and ``train_annealing_kd_models`` (its
seeds trained together). Same seed, same initial weights. The
statistics over the seeds (mean ± sample std, tables, comparisons) are in :mod:`kdtutorial.common.statistics`.
"""
from __future__ import annotations


from kdtutorial.vision import models
from kdtutorial.common.environment import seed_everything
from kdtutorial.vision.objectives import AnnealedLogits, CrossEntropy
from kdtutorial.vision.seedbatch import check_batchable, fit_seeds
from kdtutorial.vision.seedprocesses import train_in_processes
from kdtutorial.vision.training import History, evaluate, fit

__all__ = ["train_model", "train_models", "train_architectures", "train_recipes", "train_annealing_kd",
           "train_annealing_kd_models"]


def train_model(arch: str, data, objective, *, seed: int, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                weight_decay: float = 0.0, device="cpu", progress=None, amp: bool = False, val_set=None,
                graphs: bool = False):
    """Build ``arch`` from ``seed`` (same seed -> same initial weights), train it with ``objective``.

    Returns ``(model, history, test_accuracy)``; with ``val_set`` the history holds per-epoch ``val_acc``.
    ``graphs``: each step replayed from a CUDA graph (``fit(graphs=True)``).
    """
    seed_everything(seed)
    model = models.build(arch, data.input_shape, data.n_classes)
    history = fit(model, data.train, objective, epochs=epochs, lr=lr, batch_size=batch_size,
                  weight_decay=weight_decay, seed=seed, device=device, progress=progress, amp=amp, val_set=val_set,
                  graphs=graphs)
    return model, history, evaluate(model, data.test, device)


def train_models(arch: str, data, objectives, *, seeds, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                 weight_decay: float = 0.0, device="cpu", progress=None, amp: bool = False, val_set=None,
                 workers: int = 0, graphs: bool = False) -> list:
    """``train_model`` for every ``(seed, objective)`` pair, all trained together: the same results as
    ``[train_model(arch, data, obj, seed=s, ...) for s, obj in zip(seeds, objectives)]`` up to float32 rounding.

    ``objectives``: one per seed (an objective with per-seed state, e.g. a teacher cache of that seed, goes with its
    seed; a stateless one may be repeated). The pairs may be the seeds of one recipe or of several: a lesson that
    compares recipes on the same data and architecture passes ``seeds * n_recipes`` with each recipe's objective
    repeated, and the GPU trains all of them in one stacked pass. Each model is built as ``train_model`` builds it
    (``seed_everything(seed)``, then ``models.build``), in seed order, and all of them are trained in one stacked pass
    per step
    (:func:`~kdtutorial.vision.seedbatch.fit_seeds`: torch.func, one vmapped forward and backward, one Adam): each
    keeps its initial weights, batch order, objective and Adam state, and only the rounding of the batched matrix
    products differs (``tests/vision/test_experiments.py`` bounds it). An architecture that behaves differently in a
    stack (dropout, batch normalisation: :func:`~kdtutorial.vision.seedbatch.check_batchable`) is trained by
    ``train_model`` itself, seed by seed (bit for bit its results), one after another in this process, or with
    ``workers`` > 0 that many at a time, each in a process of its own
    (:func:`~kdtutorial.vision.seedprocesses.train_in_processes`: measured slower on one H100, see there).
    ``progress``: an open ``tqdm`` bar advanced by one per model and epoch, as ``train_model`` per seed advances it.
    ``graphs``: every step replayed from a CUDA graph (``fit_seeds(graphs=True)`` for the stack, ``fit(graphs=True)``
    seed by seed). Returns ``[(model, history, test_accuracy), ...]`` in seed order.
    """
    seeds, objectives = [int(s) for s in seeds], list(objectives)
    if not seeds or len(objectives) != len(seeds):
        raise ValueError(f"train_models needs one objective per seed: got {len(seeds)} seeds and "
                         f"{len(objectives)} objectives")
    common = dict(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, device=device,
                  progress=progress, amp=amp, val_set=val_set)
    try:
        check_batchable(models.build(arch, data.input_shape, data.n_classes))
    except ValueError:  # dropout or batch norm: one at a time, each seeded right before it is built and trained
        return _one_at_a_time([arch] * len(seeds), data, objectives, seeds, workers, graphs=graphs, **common)
    built = _build_in_seed_order(arch, data, seeds)
    if progress is not None:
        common["progress"] = _Advance(progress, len(built))
    histories = fit_seeds(built, data.train, objectives, seeds=seeds, graphs=graphs, **common)
    return [(model, history, evaluate(model, data.test, device)) for model, history in zip(built, histories)]


def train_architectures(archs, data, objective, *, seed: int, epochs: int, device="cpu", workers: int = 0,
                        **kwargs) -> list:
    """Several architectures trained with one objective from one seed (e.g. teachers of growing size): the results of
    ``[train_model(a, data, objective, seed=seed, ...) for a in archs]``, bit for bit. Models of different shapes
    cannot share a stack, so they train one after another (or with ``workers`` > 0 each in a process of its own,
    :func:`~kdtutorial.vision.seedprocesses.train_in_processes`, as in :func:`train_models`). ``kwargs`` as :func:`train_model` takes them. Returns ``[(model, history,
    test_accuracy), ...]`` in the order of ``archs``."""
    archs = [str(a) for a in archs]
    if not archs:
        raise ValueError("train_architectures needs at least one architecture in archs")
    return _one_at_a_time(archs, data, [objective] * len(archs), [int(seed)] * len(archs), workers, epochs=epochs,
                          device=device, **kwargs)


def _one_at_a_time(archs, data, objectives, seeds, workers, **common) -> list:
    """``train_model`` for each ``(arch, objective, seed)``: one after another here, or with ``workers`` > 0 each in a
    process of its own, ``workers`` at a time."""
    workers = int(workers)
    if workers < 0:
        raise ValueError(f"workers = {workers} is not allowed: 0 (one after another) or a number of processes")
    if workers > 0:
        return train_in_processes(archs, data, objectives, seeds, workers=workers, **common)
    return [train_model(a, data, obj, seed=s, **common) for a, obj, s in zip(archs, objectives, seeds)]


def train_recipes(arch: str, data, recipes: dict, *, seeds, epochs: int, **kwargs) -> dict:
    """Every recipe of ``recipes`` (name -> objective, or a list of one objective per seed) for every seed, all in
    one stack (:func:`train_models`): ``{name: [(model, history, test_accuracy) per seed]}`` in the recipes' order.
    The same models as :func:`train_model` per recipe and seed, up to float32 rounding; ``kwargs`` as
    :func:`train_models` takes them."""
    seeds = [int(s) for s in seeds]
    per_seed = {}
    for name, objective in recipes.items():
        objs = list(objective) if isinstance(objective, (list, tuple)) else [objective] * len(seeds)
        if len(objs) != len(seeds):
            raise ValueError(f"recipe {name!r} has {len(objs)} objectives for {len(seeds)} seeds: give one objective, "
                             f"or one per seed")
        per_seed[name] = objs
    runs = train_models(arch, data, [o for objs in per_seed.values() for o in objs], seeds=seeds * len(per_seed),
                        epochs=epochs, **kwargs)
    return {name: runs[i * len(seeds) : (i + 1) * len(seeds)] for i, name in enumerate(per_seed)}


def _build_in_seed_order(arch: str, data, seeds) -> list:
    """Each seed's model as ``train_model`` builds it, in seed order: the global random state ends where the
    one-at-a-time loop leaves it."""
    built = []
    for s in seeds:
        seed_everything(s)
        built.append(models.build(arch, data.input_shape, data.n_classes))
    return built


def _annealing_history(stage1, phis, stage2, stage1_epochs: int) -> History:
    """Both stages' records in one sequence of epochs, each marked with its ``stage`` (and ``phi`` in stage I)."""
    history = History()
    for row, p in zip(stage1.records, phis):
        history.add(**row, stage=1, phi=p)
    for row in stage2.records:
        history.add(**{**row, "epoch": row["epoch"] + stage1_epochs}, stage=2)
    return history


class _Advance:
    """A ``tqdm`` bar seen through ``fit_seeds``: one stacked epoch advances it by ``k`` (one per model)."""

    def __init__(self, bar, k: int):
        self.bar, self.k = bar, k

    def update(self, n: int = 1):
        self.bar.update(n * self.k)


def train_annealing_kd(arch: str, data, cache, schedule, *, seed: int, stage2_epochs: int, stage1_lr: float = 1e-3,
                       lr: float = 1e-3, batch_size: int = 64, device="cpu", progress=None, val_set=None,
                       graphs: bool = False):
    """Annealing KD (Jafari et al., EACL 2021): stage I regresses ``phi(T) * z_t``, stage II trains on labels.

    Stage I runs ``schedule.stage1_epochs`` epochs with ``AnnealedLogits`` at ``stage1_lr``; stage II continues
    the same model for ``stage2_epochs`` epochs of cross-entropy at ``lr``. The history numbers the epochs of
    both stages in one sequence and marks each with ``stage`` (1 or 2) and, in stage I, ``phi``. ``graphs``: each
    step replayed from a CUDA graph (``fit(graphs=True)``). Returns ``(model, history, test_accuracy)``.
    """
    seed_everything(seed)
    model = models.build(arch, data.input_shape, data.n_classes)
    objective = AnnealedLogits(cache, schedule)
    common = dict(batch_size=batch_size, device=device, progress=progress, val_set=val_set, graphs=graphs)
    stage1 = fit(model, data.train, objective, epochs=schedule.stage1_epochs, lr=stage1_lr, seed=seed,
                 on_epoch_start=objective.start_epoch, **common)
    stage2 = fit(model, data.train, CrossEntropy(), epochs=stage2_epochs, lr=lr, seed=seed + 1, **common)
    history = _annealing_history(stage1, objective.phis_seen, stage2, schedule.stage1_epochs)
    return model, history, evaluate(model, data.test, device)



def train_annealing_kd_models(arch: str, data, cache, schedule, *, seeds, stage2_epochs: int,
                              stage1_lr: float = 1e-3, lr: float = 1e-3, batch_size: int = 64, device="cpu",
                              progress=None, val_set=None, graphs: bool = False) -> list:
    """``train_annealing_kd`` for every seed, the seeds trained together (:func:`~kdtutorial.vision.seedbatch.fit_seeds`
    for each stage): the same results as ``[train_annealing_kd(arch, data, cache, schedule, seed=s, ...) for s in
    seeds]`` up to float32 rounding. Each seed has its own ``AnnealedLogits``; all follow one schedule. An architecture
    that cannot be stacked is trained seed by seed. ``graphs``: both stages' steps replayed from a CUDA graph, as
    :func:`train_models` takes it. Returns ``[(model, history, test_accuracy), ...]`` in seed order.
    """
    seeds = [int(s) for s in seeds]
    common = dict(batch_size=batch_size, device=device, val_set=val_set)
    try:
        check_batchable(models.build(arch, data.input_shape, data.n_classes))
    except ValueError:
        return [train_annealing_kd(arch, data, cache, schedule, seed=s, stage2_epochs=stage2_epochs,
                                   stage1_lr=stage1_lr, lr=lr, progress=progress, graphs=graphs, **common)
                for s in seeds]
    built = _build_in_seed_order(arch, data, seeds)
    objs = [AnnealedLogits(cache, schedule) for _ in seeds]
    if progress is not None:
        common["progress"] = _Advance(progress, len(built))

    def start_epoch(epoch):
        for objective in objs:
            objective.start_epoch(epoch)

    stage1 = fit_seeds(built, data.train, objs, seeds=seeds, epochs=schedule.stage1_epochs, lr=stage1_lr,
                       on_epoch_start=start_epoch, graphs=graphs, **common)
    stage2 = fit_seeds(built, data.train, [CrossEntropy()] * len(seeds), seeds=[s + 1 for s in seeds],
                       epochs=stage2_epochs, lr=lr, graphs=graphs, **common)
    return [(model, _annealing_history(h1, objective.phis_seen, h2, schedule.stage1_epochs),
             evaluate(model, data.test, device)) for model, objective, h1, h2 in zip(built, objs, stage1, stage2)]
