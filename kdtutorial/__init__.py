"""kdtutorial: the tested code behind the knowledge-distillation course notebooks.

One module per idea:

* ``losses``       the distillation losses, each with the paper and equation it implements
* ``objectives``   those losses bound to labels and cached teacher outputs, ready for training
* ``training``     one small fit/evaluate loop and a teacher-output cache that a shuffled loader cannot misalign
* ``schedules``    Annealing KD's temperature schedule (paper and released-code counting)
* ``experiments``  several seeds of one recipe, mean ± std tables
* ``models``       teachers and students for the vision lessons
* ``data``         digits (built in), Fashion-MNIST (local mirror or verified download), seeded splits
* ``parameters``   checking a notebook's papermill parameters, quick/full profiles
* ``environment``  seeding, device choice, a versions banner
* ``plotting``, ``widgets``, ``report``   one figure style, sliders with a static fallback, metrics for the runner
* ``runner``       ``python -m kdtutorial run --profile quick``: the whole suite under papermill, with a summary

Notebooks import it as ``import kdtutorial as kd`` and use ``kd.losses.kd_kl_loss`` and so on. Submodules load on
first use, so ``python -m kdtutorial --help`` or the runner do not pay for importing torch.
"""
import importlib

__version__ = "0.1.0"

__all__ = [
    "data", "environment", "experiments", "losses", "models", "objectives", "parameters",
    "plotting", "report", "runner", "schedules", "training", "widgets",
]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
