"""The task-specific stage: fine-tuning a BERT-family encoder as a sentence classifier, and measuring it.

:class:`SentenceClassifier` puts a linear layer on the mean of the encoder's token vectors (the pooling
all-MiniLM-L6-v2 was trained with). :func:`fine_tune` trains it on labelled sentences with AdamW and a
linear warm-up/decay schedule; :func:`predict` and :func:`accuracy` evaluate it; :func:`throughput`
measures sentences per second of several models side by side, interleaved, on the same batches.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from kdtutorial.common.environment import release_memory, seed_everything
from kdtutorial.text.optim import graph_targets, to_device, train_steps
from kdtutorial.common.environment import autocast
from kdtutorial.text.tokens import padded_batches
from kdtutorial.common.statistics import accuracy

__all__ = ["SentenceClassifier", "fine_tune", "predict", "accuracy", "fine_tune_and_test", "throughput"]


class SentenceClassifier(nn.Module):
    """``Linear(dropout(mean of the token vectors of real tokens))`` on top of a BERT-family encoder."""

    def __init__(self, encoder: nn.Module, n_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def constructor_arguments(self) -> dict:
        """What rebuilds this classifier's shape (``kd.processes.portable`` sends a model to another process so)."""
        return {"encoder": self.encoder, "n_classes": self.head.out_features, "dropout": self.dropout.p}

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        """Logits ``[batch, classes]`` from ``input_ids`` or, instead, ready-made word vectors ``inputs_embeds``
        ``[batch, seq, hidden]`` (the encoder adds position embeddings and LayerNorm as usual), as MATE-KD feeds
        a generator's token distributions mixed into the embedding table. ``attention_mask`` is required."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if attention_mask is None:
            raise ValueError("attention_mask is required: mean pooling averages over the real tokens it marks")
        return self.logits_and_states(input_ids, attention_mask, inputs_embeds)[0]

    def logits_and_states(self, input_ids=None, attention_mask=None, inputs_embeds=None, hidden_states=False):
        """``(logits, states)``: the logits of :meth:`forward` and, with ``hidden_states=True``, the encoder's
        ``hidden_states`` tuple (index 0 the embeddings, ``l`` the output of layer ``l``; else ``None``)."""
        tokens = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
        out = self.encoder(**tokens, attention_mask=attention_mask, output_hidden_states=hidden_states)
        hidden = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(self.dropout(pooled)), (out.hidden_states if hidden_states else None)


def fine_tune(model: nn.Module, text, labels, *, epochs: int = 2, lr: float = 5e-5, batch_size: int = 32,
              warmup: float = 0.1, weight_decay: float = 0.01, seed: int = 0, device="cpu", amp: bool = False,
              max_steps: int | None = None, freeze_embeddings: bool = False, progress: bool = True,
              after_step=None, graphs: bool = False) -> list:
    """Train ``model`` (a :class:`SentenceClassifier`) on ``text`` / ``labels`` with cross-entropy.

    ``freeze_embeddings=True`` keeps the encoder's embedding layer fixed: on a small model such as MiniLM the
    word embeddings are more than half of the weights, so freezing them makes each CPU step much cheaper
    (and is a common choice when the labelled set is small).

    AdamW, linear warm-up over the first ``warmup`` share of the steps, then linear decay to 0, the usual
    BERT fine-tuning recipe. The batch order is seeded with ``seed`` (the model's random head and dropout
    follow torch's global seed: call ``seed_everything`` first). Returns the loss of every step. ``after_step``:
    as in :func:`~kdtutorial.text.optim.train_steps` (e.g. to keep checkpoints of a teacher).

    ``graphs=True`` (CUDA): every step after a few warm-up steps is replayed from a CUDA graph
    (``optim.train_steps``); the batches are then all padded to the longest sentence of ``text`` and the labels
    live on the device. The same training, with other dropout masks.
    """
    labels = graph_targets(torch.as_tensor(np.asarray(labels), dtype=torch.long), device, graphs)
    width = "longest" if graphs else None

    def batches(epoch):
        for rows, batch in padded_batches(text, batch_size, shuffle=True, seed=seed * 1000 + epoch, width=width):
            yield rows, (batch["input_ids"], batch["attention_mask"])

    def loss_of(logits, rows):
        return nn.functional.cross_entropy(logits, to_device(labels[rows], logits.device))

    frozen = model.encoder.embeddings.parameters() if freeze_embeddings else ()
    return train_steps(model, batches, loss_of, n_rows=len(text), epochs=epochs, batch_size=batch_size, lr=lr,
                       weight_decay=weight_decay, warmup=warmup, device=device, amp=amp, max_steps=max_steps,
                       frozen=frozen, desc="fine-tune", progress=progress, after_step=after_step, graphs=graphs)


@torch.no_grad()
def predict(model: nn.Module, text, *, batch_size: int = 128, device="cpu", amp: bool = False) -> torch.Tensor:
    """Logits for every sentence of ``text``, in order, on the CPU (eval mode, length-bucketed batches)."""
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    rows_seen, chunks = [], []
    for rows, batch in padded_batches(text, batch_size, sort_by_length=True):
        with autocast(device, amp):
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        rows_seen.append(torch.as_tensor(rows))
        chunks.append(logits.float().cpu())
    model.train(was_training)
    if not chunks:
        return torch.empty(0)
    logits = torch.cat(chunks)
    out = torch.empty_like(logits)
    out[torch.cat(rows_seen)] = logits  # back to the original order
    return out


def fine_tune_and_test(encoder: nn.Module, train_text, train_labels, test_text, test_labels, *, seed: int,
                       device="cpu", amp: bool = False, **fine_tune_kwargs):
    """Fine-tune a fresh copy of ``encoder`` as a classifier (seeded), then test it; returns ``(accuracy, model)``.

    The encoder passed in is left untouched, so one distilled encoder can be fine-tuned with several seeds.
    """
    seed_everything(seed)
    model = SentenceClassifier(copy.deepcopy(encoder), n_classes=int(np.max(train_labels)) + 1)
    fine_tune(model, train_text, train_labels, seed=seed, device=device, amp=amp, **fine_tune_kwargs)
    acc = accuracy(predict(model, test_text, device=device, amp=amp), test_labels)
    model.cpu()
    release_memory()  # the optimiser's buffers are gone now; give their memory back to the OS
    return acc, model


@torch.no_grad()
def throughput(models: dict, text, *, batch_size: int = 32, device="cpu", amp: bool = False, rounds: int = 3,
               warmup_batches: int = 2) -> dict:
    """Sentences per second of each model on the same batches, measured side by side.

    Each round times every model once over all of ``text`` (models in turn, so machine noise hits them alike);
    the best round per model is reported, the usual way to time code on a shared machine.
    """
    device = torch.device(device)
    batches = [batch for _, batch in padded_batches(text, batch_size)]
    batches = [{k: v.to(device) for k, v in b.items() if k != "special_tokens_mask"} for b in batches]
    for model in models.values():
        model.to(device).eval()
        for batch in batches[:warmup_batches]:
            with autocast(device, amp):
                model(batch["input_ids"], batch["attention_mask"])
    best = {name: float("inf") for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for batch in batches:
                with autocast(device, amp):
                    model(batch["input_ids"], batch["attention_mask"])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(text) / seconds for name, seconds in best.items()}
