"""The general-purpose stage of DistilBERT: masked-LM head fitting and distillation on unlabeled text.

* :func:`fit_mlm_head` trains only the masked-LM head of a model whose encoder stays frozen. A sentence
  encoder such as all-MiniLM-L6-v2 ships without a trained head, so its masked-token distribution would be
  noise; the soft-target term of DistilBERT's loss needs a teacher whose head is meaningful.
* :func:`masked_token_accuracy` measures how often a model predicts the original token at masked positions.
* :func:`general_distillation` trains a student on unlabeled sentences with DistilBERT's weighted loss
  (:mod:`kdtutorial.text.distilbert`), the teacher frozen.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

from kdtutorial.common.environment import release_memory
from kdtutorial.text.optim import optimiser_kernels, to_device
from kdtutorial.text.distilbert import IGNORE_INDEX, check_weights, distillation_loss, mask_tokens
from kdtutorial.text.tokens import padded_batches
from kdtutorial.common.environment import autocast

__all__ = ["autocast", "masked_lm_outputs", "masked_hidden_states", "mlm_head_parameters", "fit_mlm_head", "masked_token_accuracy", "general_distillation", "masked_positions"]


def _masking(batch, model, generator, mask_token_id):
    return mask_tokens(batch["input_ids"], batch["special_tokens_mask"], mask_token_id=mask_token_id,
                       vocab_size=model.config.vocab_size, generator=generator)


def masked_lm_outputs(model, inputs, keep, attentions: bool = False) -> SimpleNamespace:
    """Encoder outputs plus vocabulary logits at the ``keep`` positions only, as ``[n_kept, vocab]``.

    Projecting every position onto the 30k-word vocabulary would cost more than the encoder itself. ``keep``: a
    boolean ``[batch, seq]`` mask, or the same positions as flat indices into ``batch * seq`` in row-major order
    (:func:`masked_positions`: the same rows, found on the host, so the GPU need not be waited for).
    """
    base = model.base_model(**inputs, output_hidden_states=True, output_attentions=attentions)
    hidden = base.last_hidden_state
    chosen = hidden[keep] if keep.dtype == torch.bool else hidden.flatten(0, 1).index_select(0, keep)
    logits = model.cls(chosen)
    return SimpleNamespace(logits=logits, hidden_states=base.hidden_states,
                           attentions=base.attentions if attentions else None)


def masked_positions(labels: torch.Tensor, device) -> tuple:
    """``(positions, targets)`` on ``device`` for host ``labels`` ``[batch, seq]`` (``IGNORE_INDEX`` where nothing is
    predicted): the flat row-major indices of the predicted tokens and their target ids, in the order boolean-mask
    indexing gives them. Found on the host and sent without waiting: selecting with a boolean mask on the GPU makes
    the host wait for the GPU (the number of rows must be known)."""
    keep = labels != IGNORE_INDEX
    return to_device(keep.flatten().nonzero().squeeze(1), device), to_device(labels[keep], device)


def mlm_head_parameters(model) -> list:
    """The head's own parameters: transform (dense + LayerNorm) and output bias, not the tied decoder matrix."""
    tied = model.get_input_embeddings().weight
    return [p for p in model.cls.parameters() if p is not tied]


@torch.no_grad()
def masked_hidden_states(model, text, *, mask_token_id: int, batch_size: int = 64, seed: int = 0, device="cpu",
                         amp: bool = False):
    """The encoder's last hidden vectors at masked positions (one seeded masking per sentence) and their tokens.

    Returns ``(hidden [n, H] float32 on the CPU, targets [n])``: the training set of a head on a frozen encoder.
    """
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    generator = torch.Generator().manual_seed(int(seed))
    vectors, targets = [], []
    for _, batch in padded_batches(text, batch_size):
        masked, labels = _masking(batch, model, generator, mask_token_id)
        with autocast(device, amp):
            hidden = model.base_model(input_ids=masked.to(device),
                                      attention_mask=batch["attention_mask"].to(device)).last_hidden_state
        keep = labels != IGNORE_INDEX
        vectors.append(hidden[keep.to(device)].float().cpu())
        targets.append(labels[keep])
    model.train(was_training)
    vectors, targets = torch.cat(vectors), torch.cat(targets)
    release_memory()
    return vectors, targets


def fit_mlm_head(model, text, *, mask_token_id: int, epochs: int = 10, lr: float = 3e-3, batch_size: int = 256,
                 seed: int = 0, device="cpu", amp: bool = False, progress: bool = True) -> list:
    """Train the masked-LM head of ``model`` on ``text`` with everything else frozen; returns the epoch losses.

    Because the encoder is frozen, its hidden vectors at the masked positions are computed once
    (:func:`masked_hidden_states`) and the head is trained on them for ``epochs`` passes. The output matrix
    stays tied to the (frozen) input embeddings, as in BERT, so only the transform (dense + LayerNorm) and the
    per-token output bias are learned. (Not :func:`kdtutorial.text.optim.train_steps`: that loop runs the whole
    model on token batches; here the encoder never runs after the first pass, which is what makes the fit cheap.)
    """
    device = torch.device(device)
    hidden, targets = masked_hidden_states(model, text, mask_token_id=mask_token_id, seed=seed, device=device,
                                           amp=amp)
    head = mlm_head_parameters(model)
    trainable = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head:
        p.requires_grad_(True)
    model.cls.train()
    optimiser = torch.optim.Adam(head, lr=lr, **optimiser_kernels(device))
    generator = torch.Generator().manual_seed(int(seed))
    hidden, targets = hidden.to(device), targets.to(device)
    losses = []
    try:
        for _ in tqdm(range(epochs), desc="fit MLM head", leave=False, disable=not progress):
            # the epoch's order goes to the device once, and the loss is summed there in float64 (the same float64
            # additions as summing loss.item() on the host): no step waits for the GPU
            order = to_device(torch.randperm(len(hidden), generator=generator), device)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for rows in order.split(batch_size):
                loss = torch.nn.functional.cross_entropy(model.cls(hidden[rows]).float(), targets[rows])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += loss.detach().double() * len(rows)
            losses.append(total.item() / len(hidden))
    finally:
        for p, flag in trainable.items():
            p.requires_grad_(flag)
        model.eval()
        release_memory()
    return losses


@torch.no_grad()
def masked_token_accuracy(model, text, *, mask_token_id: int, batch_size: int = 64, seed: int = 0,
                          device="cpu", amp: bool = False) -> float:
    """Percent of masked positions where the model's top token is the original one (fixed, seeded masking)."""
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    generator = torch.Generator().manual_seed(int(seed))
    hits, count = 0, 0
    for _, batch in padded_batches(text, batch_size):
        masked, labels = _masking(batch, model, generator, mask_token_id)
        labels = labels.to(device)
        keep = labels != IGNORE_INDEX
        inputs = {"input_ids": masked.to(device), "attention_mask": batch["attention_mask"].to(device)}
        with autocast(device, amp):
            logits = masked_lm_outputs(model, inputs, keep).logits
        hits += (logits.argmax(-1) == labels[keep]).sum().item()
        count += keep.sum().item()
    model.train(was_training)
    return 100.0 * hits / max(count, 1)


def general_distillation(teacher, student, text, *, mask_token_id: int, weights=None, T: float = 2.0,
                         epochs: int = 1, lr: float = 5e-4, batch_size: int = 32, seed: int = 0, device="cpu",
                         amp: bool = False, max_steps: int | None = None, progress: bool = True) -> list:
    """Distil ``teacher`` into ``student`` on unlabeled ``text`` (DistilBERT's general-purpose stage).

    Each batch is masked once (15%, 80/10/10); the teacher (frozen, eval mode, no gradients) and the student
    see the same masked input; the student minimises :func:`kdtutorial.text.distilbert.distillation_loss` with the
    given ``weights`` (the release's 5/2/1 by default). Student layer ``i`` is mapped to teacher layer
    ``student.teacher_layers[i]`` for the attention term. Returns one dict of loss terms per step. (Not
    :func:`kdtutorial.text.optim.train_steps`: each step masks the batch once and runs two models on it, and the
    per-step record holds every term of the triple loss, not one loss.)
    """
    weights = check_weights({"ce": 5.0, "mlm": 2.0, "cos": 1.0} if weights is None else weights)
    device = torch.device(device)
    teacher.to(device).eval()
    teacher_trainable = {p: p.requires_grad for p in teacher.parameters()}
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.to(device).train()
    layers = getattr(student, "teacher_layers", None)
    need_attn = weights["attn"] > 0
    if need_attn and (teacher.config._attn_implementation != "eager" or student.config._attn_implementation != "eager"):
        raise ValueError("the attention term needs attention maps: call set_attn_implementation(\"eager\") on "
                         "teacher and student (transformers 5 returns attentions only with eager attention)")
    if need_attn and layers is None:
        raise ValueError("the attention term needs student.teacher_layers (build the student with copy_layers_student)")
    optimiser = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01, **optimiser_kernels(device))
    generator = torch.Generator().manual_seed(int(seed))
    per_epoch = -(-len(text) // batch_size)
    steps = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    log = []
    with tqdm(total=steps, desc="distil", leave=False, disable=not progress) as bar:
        for epoch in range(epochs):
            for _, batch in padded_batches(text, batch_size, shuffle=True, seed=seed + epoch):
                if len(log) >= steps:
                    break
                masked, labels = _masking(batch, student, generator, mask_token_id)
                inputs = {"input_ids": to_device(masked, device),
                          "attention_mask": to_device(batch["attention_mask"], device)}
                keep, targets = masked_positions(labels, device)
                with torch.no_grad(), autocast(device, amp):
                    t_out = masked_lm_outputs(teacher, inputs, keep, need_attn)
                with autocast(device, amp):
                    s_out = masked_lm_outputs(student, inputs, keep, need_attn)
                result = distillation_loss(s_out, t_out, targets, inputs["attention_mask"],
                                           weights=weights, T=T, layers=layers)
                optimiser.zero_grad(set_to_none=True)
                result.total.backward()
                optimiser.step()
                log.append((result.total.detach(), result.terms))  # read after the loop: no wait per step
                bar.update(1)
    log = [{"step": i + 1, "loss": total.item(), **{k: v.item() for k, v in terms.items()}}
           for i, (total, terms) in enumerate(log)]
    for p, flag in teacher_trainable.items():
        p.requires_grad_(flag)
    student.eval()
    del optimiser
    release_memory()  # many students in one process: hand the optimiser's freed buffers back to the OS
    return log
