"""Domain-adaptive masked-LM pre-training of the teacher's encoder on the ads side: step (a) of the AdsBERT recipe.

The Microsoft Ads talk's recipe starts from a pre-trained BERT, trains it further with BERT's masked-LM objective
(Devlin et al., 2019, §3.1) on the text of the ads domain, and only then fine-tunes it on relevance labels.
Gururangan et al. (ACL 2020, "Don't Stop Pretraining") call this domain-adaptive pre-training. Here the domain
text is QADSM's own: every distinct query, ad title and ad description of the training split once, with every text
that also occurs in the test split left out (:func:`ads_side_texts` asserts it), so the teacher never reads a test
text before it is scored on it.

The loss is BERT's: of each text's non-special tokens 15% are chosen; a chosen token becomes ``[MASK]`` (80%), a
random token (10%) or stays (10%) (:func:`kdtutorial.text.distilbert.mask_tokens`), and the model is trained by the
cross-entropy of the original token at the chosen positions, ``L_MLM = -(1/|M|) sum_{i in M} log p(x_i | x_masked)``.
A sentence encoder such as all-MiniLM-L6-v2 ships without a trained masked-LM head: fit the head first
(:func:`kdtutorial.text.pretraining.fit_mlm_head`), then :func:`mlm_pretrain` trains every weight.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdtutorial.text.distilbert import IGNORE_INDEX, mask_tokens
from kdtutorial.text.optim import train_steps
from kdtutorial.text.pretraining import masked_lm_outputs
from kdtutorial.text.tokens import padded_batches

__all__ = ["SIDES", "texts_of", "ads_side_texts", "mlm_pretrain"]

#: the columns of a QADSM split that hold text
SIDES = ("query", "title", "description")


def texts_of(data) -> set:
    """Every non-empty text (stripped) of the ``query``, ``title`` and ``description`` columns of ``data`` (a
    Dataset or a dict of columns)."""
    found = set()
    for side in SIDES:
        found.update(t for t in (str(x).strip() for x in data[side]) if t)
    return found


def ads_side_texts(train, exclude=()) -> list:
    """The domain text: every distinct non-empty query, title and description of ``train`` once, in first-seen
    order, without any text in ``exclude`` (pass ``texts_of(test)``: no test text is pre-trained on)."""
    exclude = set(exclude)
    seen, texts = set(), []
    for side in SIDES:
        for text in (str(x).strip() for x in train[side]):
            if text and text not in seen and text not in exclude:
                seen.add(text)
                texts.append(text)
    assert not exclude.intersection(texts), "a test text reached the pre-training text"
    return texts


class _MaskedLMStep(nn.Module):
    """Runs the masked LM on a masked batch and returns vocabulary logits at the chosen positions only (projecting
    every position onto the vocabulary would cost more than the encoder); keeps their targets for the loss."""

    def __init__(self, masked_lm):
        super().__init__()
        self.masked_lm, self.targets = masked_lm, None

    def forward(self, masked_ids, attention_mask, labels):
        keep = labels != IGNORE_INDEX
        self.targets = labels[keep]
        return masked_lm_outputs(self.masked_lm, {"input_ids": masked_ids, "attention_mask": attention_mask}, keep).logits


def mlm_pretrain(masked_lm, text, *, mask_token_id: int, epochs: int = 1, lr: float = 5e-5, batch_size: int = 64,
                 seed: int = 0, device="cpu", amp: bool = False, max_steps: int | None = None, prob: float = 0.15,
                 progress: bool = True) -> list:
    """Train every weight of ``masked_lm`` (a BERT-family ``...ForMaskedLM``) with the masked-LM loss of the module
    docstring on ``text`` (a :class:`~kdtutorial.text.tokens.TokenizedText` of :func:`ads_side_texts`); returns the
    loss of every step. The masks are drawn anew every epoch from a generator seeded with ``seed``; AdamW with
    warm-up and linear decay (:func:`kdtutorial.text.optim.train_steps`), bf16 autocast on CUDA when ``amp``."""
    if len(text) == 0:
        raise ValueError("text is empty: there is nothing to pre-train on")
    step = _MaskedLMStep(masked_lm)
    generator = torch.Generator().manual_seed(int(seed))
    vocab = int(masked_lm.config.vocab_size)

    def batches(epoch):
        for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + epoch):
            masked, labels = mask_tokens(batch["input_ids"], batch["special_tokens_mask"], mask_token_id=mask_token_id,
                                         vocab_size=vocab, generator=generator, prob=prob)
            if not (labels != IGNORE_INDEX).any():  # a batch of very short texts may draw no position: keep one
                i, j = np.argwhere(~batch["special_tokens_mask"].bool().numpy())[0]
                labels[i, j] = batch["input_ids"][i, j]
            yield rows, (masked, batch["attention_mask"], labels)

    def loss_of(logits, rows):
        return F.cross_entropy(logits, step.targets.to(logits.device))

    return train_steps(step, batches, loss_of, n_rows=len(text), epochs=epochs, batch_size=batch_size, lr=lr,
                       weight_decay=0.01, warmup=0.06, device=device, amp=amp, max_steps=max_steps,
                       desc="domain MLM", progress=progress)
