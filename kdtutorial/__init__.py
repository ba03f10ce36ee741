"""kdtutorial: the tested code behind the knowledge-distillation course notebooks.

One module per idea:

* ``losses``       the distillation losses, each with the paper and equation it implements
* ``objectives``   those losses bound to labels and cached teacher outputs, ready for training
* ``training``     one small fit/evaluate loop and a teacher-output cache that a shuffled loader cannot misalign
* ``schedules``    Annealing KD's temperature schedule (paper and released-code counting)
* ``experiments``  several seeds of one recipe, mean ± std tables
* ``models``       teachers and students for the vision lessons
* ``textdata``     SST-2 and XGLUE QADSM (local mirror, hub or verified download), transfer sets of query-ad pairs
* ``hub``          finding a pretrained BERT-family model: path, $KDTUTORIAL_MODELS, packaged MiniLM, hub id
* ``students``     DistilBERT-style students: fewer layers, copied from chosen teacher layers
* ``distilbert``   DistilBERT's triple loss (soft targets, masked LM, cosine) and an attention/[CLS] variant
* ``matekd``       MATE-KD: a masked-LM generator rewrites text to maximise teacher-student divergence
* ``scaling``      lesson 06's recipe on 1 or N GPUs under Hugging Face Accelerate (sharded scoring, data-parallel training)
* ``tokens``       tokenised text in dynamically padded batches
* ``pretraining``  masked-LM head fitting and general-purpose distillation on unlabeled text
* ``optim``        AdamW with linear warm-up and decay, Adam kernels per device
* ``finetuning``   a sentence classifier on an encoder: fine-tuning, accuracy, side-by-side throughput
* ``twotower``     TwinBERT and C-DSSM two-tower rankers for query-ad relevance
* ``crossencoder`` the BERT cross-encoder teacher: pair tokenisation, fine-tuning, fast length-bucketed scoring
* ``rankers``      two-tower students: distillation on a transfer set, fine-tuning, scoring, cached-ad serving
* ``relevance``    distillation losses for a binary relevance score (MSE on logits, tempered BCE)
* ``ranking``      ROC-AUC, PR-AUC, nDCG@k, label density, the RankScore of an ad auction
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
    "crossencoder", "data", "distilbert", "environment", "experiments", "finetuning", "hub", "losses", "matekd", "models",
    "objectives", "optim", "parameters", "plotting", "pretraining", "rankers", "ranking", "relevance", "report", "runner",
    "scaling", "schedules", "students", "textdata", "tokens", "training", "twotower", "widgets",
]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
