"""What every lesson uses: KD losses (``losses``), Annealing KD's temperature schedule (``schedules``),
statistics over seeds (``statistics``), seeding / devices / mixed precision (``environment``), verified
downloads and the data root (``downloads``), seeded stratified splits (``splits``), parameter counts
(``modules``), shared argument checks (``checks``), the text corpora (``corpora``) and seeded label noise
(``labelnoise``). Imports nothing from the other parts."""
