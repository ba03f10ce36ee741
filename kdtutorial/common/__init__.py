"""What every lesson uses: KD losses (``losses``), Annealing KD's temperature schedule (``schedules``),
statistics over seeds (``statistics``), seeding / devices / mixed precision (``environment``), verified
downloads and the data root (``downloads``), seeded stratified splits (``splits``), parameter counts
(``modules``), shared argument checks (``checks``), the text corpora (``corpora``), seeded label noise
(``labelnoise``), the process pool for independent jobs (``workerpool``, ``processes``) and a training step replayed
from a CUDA graph (``stepgraph``). Imports nothing from the other parts."""
