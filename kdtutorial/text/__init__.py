"""Lessons 03 and 05 (text): finding a pretrained encoder (``hub``), tokenised padded batches (``tokens``),
AdamW with warm-up and the text training loop ``train_steps`` (``optim``), layer-copied students
(``students``), DistilBERT's losses (``distilbert``), masked-LM head fitting and general distillation
(``pretraining``), the sentence classifier (``finetuning``), MATE-KD (``matekd``) and SST-2 (``sst2``).
Depends on ``common`` only."""
