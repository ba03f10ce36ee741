"""Lessons 01, 02 and 04 (images): digits and Fashion-MNIST (``data``), MLP and CNN teachers and students
(``models``), the vision training loop and the teacher-output cache (``training``), the losses bound to
labels and cached teacher outputs (``objectives``), several models trained in one stacked pass (``seedbatch``) with
their objectives computed together (``objectivestack``) and, on a GPU, each step replayed from a CUDA graph
(``common.stepgraph``), recipes over several seeds (``experiments``).
Depends on ``common`` only."""
