"""Students for a causal LM: some of the teacher's decoder layers copied (DistilBERT's initialisation, Sanh et al.
2019, section 3, applied to a decoder), or the same architecture initialised at random.

Both keep the teacher's tokenizer and vocabulary, which token-level KD needs: the per-token KL compares two
distributions over one vocabulary, entry by entry. A copied student shares the teacher's embeddings and, for a
model with tied input and output embeddings such as SmolLM2, its output head too.
"""
from __future__ import annotations

import copy

import torch

__all__ = ["check_student_layers", "layer_copied_decoder", "random_decoder", "trainable_parameters",
           "lm_logits", "spread_layers"]


def check_student_layers(layers, teacher_layers: int, *, parameter: str = "STUDENT_LAYERS") -> list[int]:
    """``layers`` as a list of distinct, increasing teacher layer indices in ``[0, teacher_layers)``."""
    layers = list(layers) if isinstance(layers, (list, tuple, range)) else None
    if (not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
            or sorted(set(layers)) != layers):
        raise ValueError(f"{parameter} must be a non-empty increasing list of distinct layer indices, got {layers!r}")
    bad = [i for i in layers if not 0 <= i < teacher_layers]
    if bad:
        raise ValueError(f"{parameter}: the teacher has layers 0..{teacher_layers - 1}; it lacks {bad}")
    return layers


def spread_layers(n: int, teacher_layers: int) -> list[int]:
    """``n`` teacher layers spread evenly from the first to the last (e.g. 4 of 30: [0, 10, 19, 29])."""
    if not (isinstance(n, int) and 1 <= n <= teacher_layers):
        raise ValueError(f"the number of student layers must be in [1, {teacher_layers}], got {n!r}")
    if n == 1:
        return [teacher_layers - 1]
    return [round(i * (teacher_layers - 1) / (n - 1)) for i in range(n)]


def _student_config(teacher_config, layers: list[int]):
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in layers]
    if hasattr(config, "quantization_config"):  # a GGUF teacher's record of its file: not the student's
        del config.quantization_config
    return config


def layer_copied_decoder(teacher, layers, *, freeze_embeddings: bool = True):
    """A student with the teacher's embeddings, final norm, output head and decoder layers ``layers``.

    Student layer ``j`` gets teacher layer ``layers[j]``'s weights exactly. With ``freeze_embeddings`` the
    (tied) embedding matrix is not trained: 28 M of SmolLM2's 135 M parameters, which a few thousand training
    sequences would only disturb; the student then *shares* the teacher's embedding module (frozen in both) rather
    than holding a copy of it, 113 MB less in float32."""
    from transformers import AutoModelForCausalLM

    layers = check_student_layers(layers, teacher.config.num_hidden_layers)
    student = AutoModelForCausalLM.from_config(_student_config(teacher.config, layers), dtype=torch.float32)
    prefix = "model.layers."
    state = {}  # the teacher's own tensors: load_state_dict copies them into the student (no second copy here)
    tied = student.config.tie_word_embeddings
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in layers:
                state[f"{prefix}{layers.index(int(index))}.{rest}"] = value.detach()
        elif not (tied and key == "lm_head.weight"):
            state[key] = value.detach()
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not student.config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"copying teacher layers left missing {missing} and unexpected {unexpected} weights")
    if freeze_embeddings:  # frozen: the student uses the teacher's own embedding module (no second copy in memory)
        teacher.get_input_embeddings().weight.requires_grad_(False)
        student.set_input_embeddings(teacher.get_input_embeddings())
    student.tie_weights()
    student.copied_layers = layers
    return student


def random_decoder(teacher_config, n_layers: int, seed: int):
    """The teacher's architecture with ``n_layers`` layers, every weight (embeddings included) drawn at random
    from the model's own initialiser under ``seed``."""
    from transformers import AutoModelForCausalLM

    layers = spread_layers(n_layers, teacher_config.num_hidden_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = AutoModelForCausalLM.from_config(_student_config(teacher_config, layers), dtype=torch.float32)
    student.copied_layers = None
    return student


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lm_logits(model, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``model``'s logits for ``ids``, positions counted from each row's first real token (left padding safe)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(ids)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=attention_mask, position_ids=positions, use_cache=False).logits
