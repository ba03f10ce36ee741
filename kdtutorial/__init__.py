"""kdtutorial: the tested code behind the knowledge-distillation course notebooks.

The package has one folder per part of the course; parts depend one way only
(``ranking -> text -> common``, ``vision -> common``, ``lm -> common``; ``course`` imports no lesson code):

* ``common``   what every lesson uses: KD losses, temperature schedules, statistics over seeds, seeding and
               devices, verified downloads, seeded stratified splits, parameter counts, the shared text corpora,
               seeded label noise, the process pool that runs independent jobs side by side and the models that
               travel to it as parts, a training step replayed from a CUDA graph
* ``vision``   lessons 01, 02, 04: digits / Fashion-MNIST, MLP and CNN models, the vision training loop,
               objectives binding the losses to cached teacher outputs, multi-seed experiments
* ``text``     lessons 03, 05, 07, 09, 10: model resolution, tokenised batches, the text training loop (``optim``),
               layer-copied students, DistilBERT's losses, masked-LM pre-training, fine-tuning, DistilBERT's two
               stages for several variants, MATE-KD, SST-2,
               layer maps and intermediate-layer losses (PKD, TinyBERT, CKD, ALP-KD), GLUE tasks and scores
               (SST-2, RTE, MRPC, CoLA), unlabelled sentence pools, leakage checks, cached sentence embeddings,
               retrieval (exact vector index, TF-IDF), Minimax-kNN selection and kNN-augmented KD, Annealing KD on
               text and its combination with MATE-KD, the all-methods harness and two open problems
* ``ranking``  lesson 06: XGLUE QADSM, transfer sets, the cross-encoder teacher, two-tower students, relevance
               KD losses, ranking metrics, the students' runs side by side in processes, multi-GPU scaling
* ``lm``       lesson 08: causal LMs (SmolLM2 from its GGUF wheel), decoder students, per-token divergences
               (forward / reverse KL, JSD(beta), top-k), word-level, sequence-level and on-policy KD, held-out scores
* ``course``   the machinery: notebook parameters, the suite runner, metrics reports, the archived full runs,
               plotting (one colour per method), one diagram per lesson, sliders

Notebooks write ``import kdtutorial as kd`` and reach every module by its own name, ``kd.losses``,
``kd.rankers``, ...: ``MODULES`` below says which part each name lives in. Modules load on first use, so
``python -m kdtutorial --help`` or the runner do not pay for importing torch.
"""
import importlib

__version__ = "0.1.0"

PARTS = ("common", "vision", "text", "ranking", "lm", "course")

#: module name -> its part (``kd.losses`` is ``kdtutorial.common.losses``)
MODULES = {
    **dict.fromkeys(("losses", "schedules", "statistics", "environment", "downloads", "splits", "modules", "checks",
                     "corpora", "labelnoise", "workerpool", "processes", "stepgraph"), "common"),
    **dict.fromkeys(("data", "models", "training", "seedbatch", "seedprocesses", "objectives",
                     "objectivestack", "experiments"),
                    "vision"),
    **dict.fromkeys(("hub", "tokens", "optim", "students", "distilbert", "pretraining", "finetuning", "matekd", "sst2",
                     "layers", "intermediate", "layerdistil", "layercompare", "glue", "pool", "leakage", "embedcache",
                     "retrieval", "minimax", "knnaug", "annealing", "allmethods", "openproblems", "twostage",
                     "materuns"),
                    "text"),
    **dict.fromkeys(("qadsm", "transfer", "crossencoder", "twotower", "rankers", "relevance", "metrics", "scaling",
                     "leanscorer", "domainmlm", "studentkinds", "studentruns"),
                    "ranking"),
    **dict.fromkeys(("causallm", "decoders", "divergences", "lmtext", "generation", "lmdistil", "lmeval", "lmcompare",
                     "modes"), "lm"),
    **dict.fromkeys(("parameters", "lessons", "runner", "report", "outputs", "plotting", "widgets", "archive",
                     "benchmarkarchive", "fullsummary", "diagrams"), "course"),
}

__all__ = [*PARTS, *MODULES]


def __getattr__(name):
    if name in PARTS:
        return importlib.import_module(f"{__name__}.{name}")
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{MODULES[name]}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
