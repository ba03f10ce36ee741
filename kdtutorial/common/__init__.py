"""What every lesson uses: KD losses (``losses``), Annealing KD's temperature schedule (``schedules``),
statistics over seeds (``statistics``), seeding / devices / mixed precision (``environment``), verified
downloads and the data root (``downloads``), seeded stratified splits (``splits``), parameter counts
(``modules``) and shared argument checks (``checks``). Imports nothing from the other parts."""
