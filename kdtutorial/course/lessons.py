"""Every lesson's parameters in one declaration each: the rules, the quick and full profiles, cross-parameter rules.

A notebook keeps its papermill ``parameters`` cell of plain literals (what papermill injects into and what a
Colab learner edits) and settles it in one call right below::

    P = kd.lessons.settle("01_soft_targets", globals())

``settle`` reads exactly the declared names from the notebook's namespace, checks each against its rule,
fills the ``None`` ones from the profile and applies the lesson's cross-parameter rules. A bad value stops the
notebook with a :class:`~kdtutorial.course.parameters.ParameterError` naming the parameter, the value and what
is allowed. The tests try a bad value for every parameter declared here.

The choices below that name things in lesson code (architectures, data sets, transfer-set kinds) are written
out as literals, so the course machinery imports no lesson code; a test checks them against the lesson modules.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping

from kdtutorial.course.parameters import (COMMON_RULES, Choice, Flag, Float, Int, Lesson, ListOf, ParameterError,
                                          Requires, Text)

__all__ = ["LESSONS", "ARCHITECTURES", "VISION_DATASETS", "GLUE_TASKS", "LAYER_METHODS", "LM_METHODS", "LM_INITS",
           "RETRIEVERS", "ALL_METHODS", "lesson", "settle"]

#: the vision lessons' model names (``kdtutorial.vision.models.ARCHITECTURES``) and data sets (``...data.VISION_NAMES``)
ARCHITECTURES = ("cnn-teacher", "cnn-small", "mlp-large", "mlp-medium", "mlp-small", "mlp-tiny")
VISION_DATASETS = ("digits", "fashion-mnist")
#: lesson 06's transfer-set kinds (``kdtutorial.ranking.transfer.TRANSFER_CANDIDATES``) and QADSM languages
TRANSFER_CANDIDATES = ("neighbours", "overlap", "random")
QADSM_LANGS = ("de", "en", "fr")
#: lesson 06's two-tower students (``kdtutorial.ranking.studentkinds.STUDENT_KINDS``)
TWO_TOWER_STUDENTS = ("C-DSSM", "TwinBERT-Tiny", "TwinBERT_1L", "TwinBERT_cos", "TwinBERT_res")
#: lesson 07's GLUE tasks (``kdtutorial.text.glue.GLUE_TASKS``), methods (``kdtutorial.text.layercompare.METHODS``)
#: and student initialisations (``...layercompare.INITS``)
GLUE_TASKS = ("sst2", "rte", "mrpc", "cola")
LAYER_METHODS = ("no KD", "KD", "PKD-Skip", "PKD-Last", "TinyBERT", "CKD-NO", "CKD-PO", "ALP-KD", "ALP-KD (scaled)")
STUDENT_INITS = ("bottom", "random")
#: lesson 08's methods (``kdtutorial.lm.lmdistil.LM_METHODS``) and student initialisations (``...lmcompare.LM_INITS``)
LM_METHODS = ("supervised CE", "word-level KD", "top-k KD", "sequence-level KD", "on-policy JSD")
LM_INITS = ("copied", "random")
#: lesson 09's retrievers (``kdtutorial.text.retrieval.RETRIEVERS``)
RETRIEVERS = ("embedding", "tfidf")
#: lesson 10's methods (``kdtutorial.text.allmethods.METHODS``)
ALL_METHODS = ("no KD", "KD", "PKD", "ALP-KD", "Annealing KD", "MATE-KD", "Minimax-kNN", "Annealing + MATE")

_positive = Float(0, 100, low_open=True)   # temperatures
_rate = Float(0, 1, low_open=True)         # learning rates
_share = Float(0, 1)                       # weights and probabilities
_arch = Choice(*ARCHITECTURES)
_layers = ListOf(Int(0, 47))

LESSONS: dict[str, Lesson] = {
    "01_soft_targets": Lesson(
        rules=dict(TEMPERATURE=_positive, ALPHA=_share, DATASET=Choice(*VISION_DATASETS), TEACHER=_arch, STUDENT=_arch,
                   EPOCHS=Int(1, 1000), TEACHER_EPOCHS=Int(1, 1000), GRID_T=ListOf(_positive), GRID_ALPHA=ListOf(_share),
                   N_LABELS=Int(0, 100_000)),
        quick=dict(N_SEEDS=5, DATASET="digits", TEACHER="cnn-teacher", STUDENT="mlp-medium", EPOCHS=80,
                   TEACHER_EPOCHS=40, GRID_T=[1.0, 2.0, 4.0, 8.0], GRID_ALPHA=[0.5, 0.9], N_LABELS=50),
        full=dict(N_SEEDS=5, DATASET="fashion-mnist", TEACHER="cnn-teacher", STUDENT="mlp-medium", EPOCHS=30,
                  TEACHER_EPOCHS=20, GRID_T=[2.0, 4.0, 8.0, 16.0], GRID_ALPHA=[0.5, 0.9], N_LABELS=500),
    ),
    "02_label_smoothing": Lesson(
        rules=dict(DATASET=Choice(*VISION_DATASETS), TEACHER=_arch, STUDENT=_arch, EPOCHS=Int(1, 1000),
                   TEACHER_EPOCHS=Int(1, 1000), DEFECTIVE_STEPS=Int(1, 10_000), LS_EPSILON=_share, KD_T=_positive,
                   KD_ALPHA=_share, TFKD_A=Float(0.1, 1), TFKD_T=_positive, TFKD_ALPHA=_share),
        quick=dict(N_SEEDS=5, DATASET="digits", TEACHER="cnn-teacher", STUDENT="mlp-medium", EPOCHS=80,
                   TEACHER_EPOCHS=40, DEFECTIVE_STEPS=2),
        full=dict(N_SEEDS=5, DATASET="fashion-mnist", TEACHER="cnn-teacher", STUDENT="mlp-medium", EPOCHS=30,
                  TEACHER_EPOCHS=20, DEFECTIVE_STEPS=3),
    ),
    "03_distilbert_losses": Lesson(
        rules=dict(TEACHER=Text(), STUDENT_LAYERS=_layers, MAX_LENGTH=Int(8, 512), BATCH_SIZE=Int(2, 4096),
                   HEAD_SENTENCES=Int(0, 10**6), HEAD_EPOCHS=Int(1, 100), DISTILL_SENTENCES=Int(1, 10**6),
                   DISTILL_LR=_rate, T=_positive, W_CE=Float(0, 100), W_MLM=Float(0, 100), W_COS=Float(0, 100),
                   FINETUNE_SENTENCES=Int(2, 10**6), FINETUNE_EPOCHS=Int(1, 100), FINETUNE_LR=_rate,
                   FREEZE_EMBEDDINGS=Flag(), WORKERS=Int(1, 64)),
        quick=dict(N_SEEDS=2, BATCH_SIZE=32, HEAD_SENTENCES=1000, HEAD_EPOCHS=3, DISTILL_SENTENCES=384,
                   FINETUNE_SENTENCES=512, FINETUNE_EPOCHS=1, FREEZE_EMBEDDINGS=True, WORKERS=1),
        full=dict(N_SEEDS=3, BATCH_SIZE=128, HEAD_SENTENCES=20000, HEAD_EPOCHS=5, DISTILL_SENTENCES=60614,
                  FINETUNE_SENTENCES=60614, FINETUNE_EPOCHS=1, FREEZE_EMBEDDINGS=False, WORKERS=8),
    ),
    "04_annealing_kd": Lesson(
        rules=dict(DATASET=Choice(*VISION_DATASETS), TEACHER=_arch, TA=_arch, STUDENT=_arch, GAP_TEACHERS=ListOf(_arch),
                   TEACHER_EPOCHS=Int(1, 1000), TAU_MAX=Int(1, 100), EPOCHS_PER_STEP=Int(1, 100),
                   STAGE2_EPOCHS=Int(0, 1000), STAGE1_LR=_rate, KD_T=_positive, KD_ALPHA=_share),
        quick=dict(N_SEEDS=5, DATASET="digits", TEACHER="cnn-teacher", TA="mlp-medium", STUDENT="mlp-tiny",
                   GAP_TEACHERS=["mlp-small", "mlp-medium", "mlp-large", "cnn-teacher"], TEACHER_EPOCHS=40,
                   TAU_MAX=10, EPOCHS_PER_STEP=4, STAGE2_EPOCHS=20),
        full=dict(N_SEEDS=5, DATASET="fashion-mnist", TEACHER="cnn-teacher", TA="mlp-medium", STUDENT="mlp-tiny",
                  GAP_TEACHERS=["mlp-small", "mlp-medium", "mlp-large", "cnn-teacher"], TEACHER_EPOCHS=20,
                  TAU_MAX=10, EPOCHS_PER_STEP=2, STAGE2_EPOCHS=10),
    ),
    "05_mate_kd": Lesson(
        rules=dict(TEACHER=Text(), STUDENT_LAYERS=_layers, GENERATOR_LAYERS=_layers, MAX_LENGTH=Int(8, 512),
                   BATCH_SIZE=Int(2, 4096), TEACHER_SENTENCES=Int(2, 10**6), STUDENT_SENTENCES=Int(2, 10**6),
                   HEAD_SENTENCES=Int(1, 10**6), HEAD_EPOCHS=Int(1, 100), LR=_rate, FORM=Choice("paper", "release"),
                   LAM=_share, TAU=_positive, P_MASK=Float(0, 1, low_open=True), N_GEN=Int(0, 1000),
                   N_STUDENT=Int(1, 10**6), GEN_LR=_share, FREEZE_EMBEDDINGS=Flag(), SWEEP=Flag(),
                   SWEEP_N_GEN=ListOf(Int(0, 1000)), WORKERS=Int(1, 64)),
        quick=dict(N_SEEDS=2, BATCH_SIZE=16, TEACHER_SENTENCES=1024, STUDENT_SENTENCES=512, HEAD_SENTENCES=1000,
                   HEAD_EPOCHS=3, N_GEN=1, N_STUDENT=10, GEN_LR=1e-3, FREEZE_EMBEDDINGS=True, SWEEP=False, WORKERS=1),
        full=dict(N_SEEDS=3, BATCH_SIZE=64, TEACHER_SENTENCES=60614, STUDENT_SENTENCES=20000, HEAD_SENTENCES=20000,
                  HEAD_EPOCHS=5, N_GEN=10, N_STUDENT=100, GEN_LR=1e-4, FREEZE_EMBEDDINGS=False, SWEEP=True,
                  WORKERS=8),
    ),
    "06_qadsm_two_tower": Lesson(
        rules=dict(TEACHER=Text(), LANG=Choice(*QADSM_LANGS), MAX_LENGTH=Int(8, 512), MAX_QUERY_LEN=Int(3, 512),
                   MAX_AD_LEN=Int(3, 512), TRAIN_PAIRS=Int(16, 10**7), TEST_PAIRS=Int(16, 10**7),
                   TRANSFER_PAIRS=Int(16, 10**8), CANDIDATES=Choice(*TRANSFER_CANDIDATES), TEACHER_EPOCHS=Int(1, 100),
                   TEACHER_LR=_rate, STUDENT_LAYERS=_layers, KD_LOSS=Choice("mse", "bce"), KD_TEMPERATURE=_positive,
                   ALPHA=_share, DISTILL_LR=_rate, DISTILL_BATCH=Int(2, 65536), DISTILL_EPOCHS=Int(1, 100),
                   STUDENT_LR=_rate, STUDENT_EPOCHS=Int(1, 100), FINETUNE_LR=_rate, FINETUNE_EPOCHS=Int(1, 100),
                   BATCH_SIZE=Int(2, 4096), SCORE_BATCH=Int(1, 65536), COMPARE_KD_LOSSES=Flag(),
                   FREEZE_EMBEDDINGS=Flag(), MLM_EPOCHS=Int(0, 100), MLM_LR=_rate, MLM_BATCH=Int(2, 4096),
                   STUDENTS=ListOf(Choice(*TWO_TOWER_STUDENTS)), MULTI_TEACHER=ListOf(Choice(*TWO_TOWER_STUDENTS), empty=True),
                   SCRATCH_LR=_rate, SCRATCH_EPOCHS=Int(1, 100), WORKERS=Int(1, 64)),
        quick=dict(N_SEEDS=2, MAX_LENGTH=32, MAX_QUERY_LEN=8, MAX_AD_LEN=24, TRAIN_PAIRS=256, TEST_PAIRS=512,
                   TRANSFER_PAIRS=384, TEACHER_EPOCHS=1, STUDENT_LAYERS=[0], DISTILL_BATCH=64, DISTILL_EPOCHS=1,
                   STUDENT_EPOCHS=1, SCRATCH_EPOCHS=1, FINETUNE_EPOCHS=1, BATCH_SIZE=16, SCORE_BATCH=128,
                   FREEZE_EMBEDDINGS=True, MLM_EPOCHS=1, MLM_BATCH=32,
                   STUDENTS=["C-DSSM", "TwinBERT-Tiny", "TwinBERT_cos", "TwinBERT_res"], MULTI_TEACHER=["C-DSSM"],
                   WORKERS=1),
        full=dict(N_SEEDS=3, MAX_LENGTH=64, MAX_QUERY_LEN=16, MAX_AD_LEN=48, TRAIN_PAIRS=9000, TEST_PAIRS=10000,
                  TRANSFER_PAIRS=1_000_000, TEACHER_EPOCHS=3, STUDENT_LAYERS=[0, 2, 4], DISTILL_BATCH=1024,
                  DISTILL_EPOCHS=1, STUDENT_EPOCHS=3, SCRATCH_EPOCHS=12, FINETUNE_EPOCHS=2, BATCH_SIZE=32,
                  SCORE_BATCH=4096, FREEZE_EMBEDDINGS=False, MLM_EPOCHS=3, MLM_BATCH=128,
                  STUDENTS=["C-DSSM", "TwinBERT-Tiny", "TwinBERT_1L", "TwinBERT_res"], MULTI_TEACHER=["C-DSSM"],
                  WORKERS=6),
        requires=(Requires(("STUDENTS",), lambda p: "TwinBERT_res" in p.STUDENTS,
                           "STUDENTS to include TwinBERT_res (the ranking and serving sections use it)"),
                  Requires(("MULTI_TEACHER", "STUDENTS"), lambda p: set(p.MULTI_TEACHER) <= set(p.STUDENTS),
                           "MULTI_TEACHER to name students of STUDENTS only"),
                  Requires(("KD_TEMPERATURE", "KD_LOSS"), lambda p: p.KD_LOSS == "bce" or p.KD_TEMPERATURE == 1.0,
                           "KD_TEMPERATURE = 1.0 unless KD_LOSS = 'bce' (the temperature applies to the bce loss only)"),),
    ),
    "07_layer_distillation": Lesson(
        rules=dict(TEACHER=Text(), TASKS=ListOf(Choice(*GLUE_TASKS)), STUDENT_SIZES=ListOf(Int(1, 48)),
                   METHODS=ListOf(Choice(*LAYER_METHODS)), INIT=Choice(*STUDENT_INITS), RANDOM_INIT_VARIANT=Flag(),
                   MAX_LENGTH=Int(8, 512), BATCH_SIZE=Int(2, 4096), SELECT_SHARE=Float(0.01, 0.5), SELECT_SENTENCES=Int(16, 10**6),
                   TEACHER_SENTENCES=Int(16, 10**6), TEACHER_EPOCHS=Int(1, 100), TEACHER_LR=_rate,
                   STUDENT_SENTENCES=Int(16, 10**6), STUDENT_EPOCHS=Int(1, 100), LR=_rate, T=_positive, ALPHA=_share,
                   BETA_PKD=Float(0, 10_000), BETA_TINYBERT=Float(0, 10_000), BETA_CKD=Float(0, 10_000),
                   BETA_ALP=Float(0, 10_000), PKD_BETAS=ListOf(Float(0, 10_000)), FREEZE_EMBEDDINGS=Flag(),
                   WORKERS=Int(1, 64)),
        quick=dict(N_SEEDS=2, TEACHER="sentence-transformers/all-MiniLM-L6-v2", TASKS=["sst2"], STUDENT_SIZES=[3, 2],
                   MAX_LENGTH=64, BATCH_SIZE=16, SELECT_SENTENCES=128, TEACHER_SENTENCES=1024, TEACHER_EPOCHS=1,
                   TEACHER_LR=1e-4, STUDENT_SENTENCES=256, STUDENT_EPOCHS=1, LR=2e-4, BETA_PKD=100.0,
                   PKD_BETAS=[10.0, 100.0, 1000.0], RANDOM_INIT_VARIANT=False,
                   FREEZE_EMBEDDINGS=True, WORKERS=1),
        full=dict(N_SEEDS=3, TEACHER="sentence-transformers/all-mpnet-base-v2", TASKS=["sst2", "rte", "mrpc"],
                  STUDENT_SIZES=[4, 2], MAX_LENGTH=128, BATCH_SIZE=64, SELECT_SENTENCES=1000, TEACHER_SENTENCES=20000,
                  TEACHER_EPOCHS=3, TEACHER_LR=3e-5, STUDENT_SENTENCES=4000, STUDENT_EPOCHS=2, LR=5e-5, BETA_PKD=10.0,
                  PKD_BETAS=[1.0, 10.0, 100.0, 500.0, 1000.0], RANDOM_INIT_VARIANT=True, FREEZE_EMBEDDINGS=False,
                  WORKERS=8),
    ),
    "08_language_model_distillation": Lesson(
        rules=dict(TEACHER=Text(), STUDENT_LAYERS=_layers, STUDENT_INIT=Choice(*LM_INITS), RANDOM_INIT_VARIANT=Flag(),
                   FREEZE_EMBEDDINGS=Flag(), METHODS=ListOf(Choice(*LM_METHODS)), PROMPT_TOKENS=Int(1, 256),
                   CONTINUATION_TOKENS=Int(1, 256), TRAIN_WINDOWS=Int(8, 10**6), HELDOUT_WINDOWS=Int(4, 10**5),
                   WIKI_WINDOWS=Int(1, 10**5), STEPS=Int(1, 10**6), BATCH_SIZE=Int(1, 4096), EVAL_BATCH=Int(1, 4096),
                   LR=_rate, T=_positive, BETA=_share, LAM=_share, TOP_K=Int(1, 10**6),
                   TOP_K_SWEEP=ListOf(Int(1, 10**6), empty=True), COST_KS=ListOf(Int(1, 10**6)), WORKERS=Int(1, 64)),
        quick=dict(N_SEEDS=2, STUDENT_LAYERS=[0, 10, 19, 29], PROMPT_TOKENS=8, CONTINUATION_TOKENS=16,
                   TRAIN_WINDOWS=128, HELDOUT_WINDOWS=32, WIKI_WINDOWS=16, STEPS=20, BATCH_SIZE=8, EVAL_BATCH=8,
                   LR=1e-3, RANDOM_INIT_VARIANT=False, TOP_K_SWEEP=[], WORKERS=1),
        # sized from benchmarks/lm_step_costs.py on one H200 (bf16 autocast, batch 64, 24-token continuations):
        # 66 ms a word-level KD step, 30 top-k, 35 sequence-level, 180 on-policy (LAM 0.5); 11 s of teacher
        # continuations per 4,096 windows; 27-34 s to load the GGUF. WORKERS 4: each student's process peaked at
        # 14-16 GB on an 80 GB H100 (49,152-wide logits) and 8 processes ran out of memory there
        full=dict(N_SEEDS=3, STUDENT_LAYERS=[0, 6, 12, 17, 23, 29], PROMPT_TOKENS=8, CONTINUATION_TOKENS=24,
                  TRAIN_WINDOWS=8000, HELDOUT_WINDOWS=1000, WIKI_WINDOWS=200, STEPS=250, BATCH_SIZE=64,
                  EVAL_BATCH=128, LR=3e-4, RANDOM_INIT_VARIANT=False, TOP_K_SWEEP=[10, 200], WORKERS=4),
    ),
    "09_knn_augmentation": Lesson(
        rules=dict(TEACHER=Text(), EMBEDDER=Text(), STUDENT_LAYERS=_layers, MAX_LENGTH=Int(8, 512),
                   TEACHER_SENTENCES=Int(16, 10**6), TEACHER_EPOCHS=Int(1, 100), TEACHER_BATCH=Int(2, 4096),
                   TEACHER_LR=_rate, STUDENT_SENTENCES=Int(16, 10**6), POOL_SENTENCES=Int(100, 10**7), RETRIEVER=Choice(*RETRIEVERS), K=Int(1, 256),
                   K1S=ListOf(Int(1, 256)), MAX_DISTANCE=_share, STEPS=Int(1, 10**6), BATCH_SIZE=Int(2, 4096),
                   LR=_rate, TAU=_positive, ALPHA=_share, FREEZE_EMBEDDINGS=Flag(), EMBED_BATCH=Int(1, 65536),
                   EVAL_BATCH=Int(1, 65536)),
        quick=dict(N_SEEDS=2, MAX_LENGTH=32, TEACHER_SENTENCES=1024, TEACHER_EPOCHS=1, TEACHER_BATCH=16,
                   TEACHER_LR=1e-4, STUDENT_SENTENCES=256,
                   POOL_SENTENCES=10000, STEPS=24, BATCH_SIZE=8, FREEZE_EMBEDDINGS=True, EMBED_BATCH=128,
                   EVAL_BATCH=128),
        # sized from a first full attempt on one H200 (stopped at the 10-minute call limit during training) and
        # benchmarks/knn_step_costs.py there: teacher 2 epochs 82 s, leakage 25 s, embedding the pool 45 s (13,000
        # sentences/s), exact search 15 s, TF-IDF 76 s; 30-80 ms a student step of 32 (+256 augmented), CPU-bound
        full=dict(N_SEEDS=3, MAX_LENGTH=64, TEACHER_SENTENCES=60614, TEACHER_EPOCHS=1, TEACHER_BATCH=64,
                  TEACHER_LR=5e-5, STUDENT_SENTENCES=3000,
                  POOL_SENTENCES=10**7, STEPS=200, BATCH_SIZE=32, FREEZE_EMBEDDINGS=False, EMBED_BATCH=1024,
                  EVAL_BATCH=1024),
        requires=(Requires(("K1S", "K"), lambda p: max(p.K1S) <= p.K,
                           "every k1 in K1S at most K (Minimax-kNN keeps k1 of the K retrieved neighbours)"),),
    ),
    "10_all_methods": Lesson(
        rules=dict(TEACHER=Text(), EMBEDDER=Text(), TASKS=ListOf(Choice(*GLUE_TASKS)),
                   METHODS=ListOf(Choice(*ALL_METHODS)), STUDENT_DEPTH=Int(1, 48), GENERATOR_LAYERS=_layers,
                   MAX_LENGTH=Int(8, 512), TEACHER_SENTENCES=Int(16, 10**6), TEACHER_EPOCHS=Int(1, 100),
                   TEACHER_BATCH=Int(2, 4096), TEACHER_LR=_rate, STUDENT_SENTENCES=Int(16, 10**6),
                   SELECT_SENTENCES=Int(16, 10**6), DEV_ROWS=Int(16, 10**6), HEAD_SENTENCES=Int(16, 10**6),
                   HEAD_EPOCHS=Int(1, 100), POOL_SENTENCES=Int(100, 10**7), PAIR_POOL_ROWS=Int(16, 10**7),
                   UPDATES=Int(1, 10**6), BATCH_SIZE=Int(2, 4096), LR=_rate, T=_positive, ALPHA=_share,
                   PKD_BETA=Float(0, 10_000), ALP_BETA=Float(0, 10_000), TAU_MAX=Int(1, 100),
                   STAGE1_SHARE=Float(0, 1, low_open=True), N_GEN=Int(0, 1000), N_STUDENT=Int(1, 10**6),
                   P_MASK=Float(0, 1, low_open=True), GEN_LR=_share, K=Int(1, 256), K1=Int(1, 256),
                   MAX_DISTANCE=_share, CHECKPOINTS=Int(1, 100), FREEZE_EMBEDDINGS=Flag(), EMBED_BATCH=Int(1, 65536),
                   EVAL_BATCH=Int(1, 65536), OPEN_TASK=Choice(*GLUE_TASKS), CKPT_SENTENCES=Int(16, 10**6),
                   CKPT_EPOCHS=Int(1, 100), CKPT_EVERY=Int(1, 10**6), NOISE=ListOf(_share), WORKERS=Int(1, 64)),
        quick=dict(N_SEEDS=2, TASKS=["sst2", "mrpc"], STUDENT_DEPTH=2, MAX_LENGTH=48, TEACHER_SENTENCES=384,
                   TEACHER_EPOCHS=1, TEACHER_BATCH=16, TEACHER_LR=1e-4, STUDENT_SENTENCES=128, SELECT_SENTENCES=64,
                   DEV_ROWS=160, HEAD_SENTENCES=384, HEAD_EPOCHS=2, POOL_SENTENCES=2000, PAIR_POOL_ROWS=256,
                   UPDATES=10, BATCH_SIZE=8, N_GEN=1, N_STUDENT=10, GEN_LR=1e-3, K=4, K1=2, CHECKPOINTS=2,
                   FREEZE_EMBEDDINGS=True, EMBED_BATCH=128, EVAL_BATCH=128, CKPT_SENTENCES=192, CKPT_EPOCHS=3,
                   CKPT_EVERY=6, NOISE=[0.3], WORKERS=1),
        full=dict(N_SEEDS=5, TASKS=["sst2", "cola", "mrpc"], STUDENT_DEPTH=3, MAX_LENGTH=64, TEACHER_SENTENCES=12000,
                  TEACHER_EPOCHS=2, TEACHER_BATCH=32, TEACHER_LR=5e-5, STUDENT_SENTENCES=3000,
                  SELECT_SENTENCES=1000, DEV_ROWS=10**6, HEAD_SENTENCES=12000, HEAD_EPOCHS=5, POOL_SENTENCES=10**7,
                  PAIR_POOL_ROWS=10**7, UPDATES=150, BATCH_SIZE=32, N_GEN=10, N_STUDENT=100, GEN_LR=1e-4, K=8,
                  K1=4, CHECKPOINTS=3, FREEZE_EMBEDDINGS=False, EMBED_BATCH=1024, EVAL_BATCH=1024,
                  CKPT_SENTENCES=3000, CKPT_EPOCHS=6, CKPT_EVERY=47, NOISE=[0.0, 0.1, 0.3], WORKERS=8),
        requires=(Requires(("K1", "K"), lambda p: p.K1 <= p.K,
                           "K1 at most K (Minimax-kNN keeps K1 of the K retrieved neighbours)"),
                  Requires(("CHECKPOINTS", "UPDATES"), lambda p: p.CHECKPOINTS <= p.UPDATES,
                           "CHECKPOINTS at most UPDATES (each checkpoint is a student update count)"),
                  Requires(("METHODS",), lambda p: "no KD" in p.METHODS,
                           "METHODS to include 'no KD' (the baseline every gain is measured from)"),
                  Requires(("OPEN_TASK", "TASKS"), lambda p: p.OPEN_TASK in p.TASKS,
                           "OPEN_TASK one of TASKS (the open problems reuse its prepared data)")),
    ),
}


def lesson(name: str) -> Lesson:
    """The declaration of lesson ``name`` (a notebook's file name without ``.ipynb``)."""
    if name not in LESSONS:
        raise ParameterError(f"no lesson named {name!r}; known: {', '.join(LESSONS)}")
    return LESSONS[name]


def settle(name: str, namespace: Mapping[str, Any]) -> SimpleNamespace:
    """Check lesson ``name``'s parameters as found in ``namespace`` (a notebook's ``globals()``) and settle them.

    Only the declared names are read (the four shared ones, ``PROFILE``, ``SEED``, ``N_SEEDS``, ``DEVICE``, then
    the lesson's own); a declared name missing from ``namespace`` is an error, so a parameters cell and its
    declaration cannot drift apart unnoticed.
    """
    declared = lesson(name)
    names = [*COMMON_RULES, *declared.rules]
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ParameterError(f"the parameters cell of {name} does not set {', '.join(missing)}")
    return declared.settle({n: namespace[n] for n in names})
