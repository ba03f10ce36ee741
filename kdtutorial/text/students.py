"""Building a shallower student from a BERT-family teacher, the DistilBERT way (Sanh et al., 2019, section 3).

DistilBERT keeps the teacher's width (hidden size, heads, vocabulary), halves the number of layers and
initialises the student "from the teacher by taking one layer out of two". The released training code
(``extract_distilbert.py``) actually copies teacher layers ``[0, 2, 4, 7, 9, 11]`` of 12, which is not
strictly every other layer; :data:`DISTILBERT_RELEASE_LAYERS` records that list.

:func:`copy_layers_student` copies the embeddings, the chosen transformer layers (in the given order) and,
when both models have one, the masked-LM head. :func:`random_student` builds the same architecture with
random weights, the ablation DistilBERT reports as "random weights initialization".
"""
from __future__ import annotations

import copy

from torch import nn

__all__ = ["DISTILBERT_RELEASE_LAYERS", "every_other_layer", "student_config", "copy_layers_student", "copy_layers_encoder",
           "random_student", "small_encoder", "encoder_layers"]

DISTILBERT_RELEASE_LAYERS = (0, 2, 4, 7, 9, 11)


def every_other_layer(n_teacher_layers: int) -> list[int]:
    """``[0, 2, 4, ...]``: the paper's "one layer out of two" (3 of 6 layers, 6 of 12)."""
    if n_teacher_layers < 1:
        raise ValueError(f"a teacher needs at least one layer, got {n_teacher_layers}")
    return list(range(0, n_teacher_layers, 2))


def encoder_layers(model) -> nn.ModuleList:
    """The list of transformer layers of a BERT-family model (bare encoder or a model with a head)."""
    base = getattr(model, "base_model", model)
    try:
        return base.encoder.layer
    except AttributeError as err:
        raise TypeError(f"{type(model).__name__} has no encoder.layer list: not a BERT-family model") from err


def _check_layers(layers, n_teacher: int) -> list[int]:
    layers = [int(i) for i in layers]
    if not layers:
        raise ValueError("layers must name at least one teacher layer")
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if bad:
        raise ValueError(f"layers {bad} do not exist in a teacher with {n_teacher} layers (allowed 0..{n_teacher - 1})")
    return layers


def student_config(teacher_config, n_layers: int):
    """The teacher's config with ``num_hidden_layers = n_layers``: same width, heads and vocabulary."""
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = int(n_layers)
    return config


def random_student(teacher, n_layers: int):
    """A student of the teacher's class and width with ``n_layers`` layers and random weights."""
    config = student_config(teacher.config, n_layers)
    return type(teacher)(config)


def small_encoder(teacher, *, layers: int = 2, hidden: int = 128, heads: int = 2, intermediate: int = 512):
    """A narrow encoder of the teacher's class with random weights and the teacher's vocabulary and positions:
    by default BERT-Tiny's shape (2 layers, 128 wide, 2 heads, feed-forward 512; Turc et al., 2019), the small
    towers of the KDD'22 tutorial on distilling rankers. Nothing is copied: it cannot start from the teacher's
    weights, which are wider. ``hidden`` must divide by ``heads``."""
    for name, value in (("layers", layers), ("hidden", hidden), ("heads", heads), ("intermediate", intermediate)):
        if int(value) < 1:
            raise ValueError(f"{name} = {value} is not allowed: expected a positive integer")
    if hidden % heads:
        raise ValueError(f"hidden = {hidden} is not allowed with heads = {heads}: the width must divide by the heads")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers, config.hidden_size = int(layers), int(hidden)
    config.num_attention_heads, config.intermediate_size = int(heads), int(intermediate)
    return type(teacher)(config)


def copy_layers_student(teacher, layers=None):
    """A student of the teacher's class whose layer ``i`` is a copy of teacher layer ``layers[i]``.

    ``layers`` defaults to :func:`every_other_layer`. Embeddings are copied, and so is every other weight the
    two models share by name outside the encoder layers (e.g. the masked-LM head); the teacher is untouched.
    """
    teacher_layers = encoder_layers(teacher)
    layers = _check_layers(every_other_layer(len(teacher_layers)) if layers is None else layers,
                           len(teacher_layers))
    student = random_student(teacher, len(layers))
    teacher_state = teacher.state_dict()
    prefix = encoder_layers_prefix(teacher)
    new_state = {}
    for key, value in student.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            source = f"{prefix}{layers[int(index)]}.{rest}"
        else:
            source = key
        if source not in teacher_state:
            raise KeyError(f"student weight {key} has no counterpart {source} in the teacher")
        new_state[key] = teacher_state[source].detach().clone()
    student.load_state_dict(new_state)
    student.teacher_layers = list(layers)
    return student


def copy_layers_encoder(encoder: nn.Module, layers) -> nn.Module:
    """A deep copy of a BERT-family ``encoder`` that keeps only the transformer layers ``layers``, in that order.

    Works on any module :func:`encoder_layers` understands, with or without a head or pooler, e.g. the fine-tuned
    encoder inside lesson 06's cross-encoder, from which the two-tower students start. The config's
    ``num_hidden_layers`` follows; the original is untouched.
    """
    layers = _check_layers(layers, len(encoder_layers(encoder)))
    student = copy.deepcopy(encoder)
    base = getattr(student, "base_model", student)
    base.encoder.layer = nn.ModuleList([copy.deepcopy(encoder_layers(encoder)[i]) for i in layers])
    for i, layer in enumerate(base.encoder.layer):  # attention modules that record their index (cache lookups)
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = i
    student.config.num_hidden_layers = len(layers)
    student.teacher_layers = list(layers)
    return student


def encoder_layers_prefix(model) -> str:
    """The state-dict prefix of the transformer layers, e.g. ``"bert.encoder.layer."``."""
    layer_list = encoder_layers(model)
    for name, module in model.named_modules():
        if module is layer_list:
            return f"{name}." if name else ""
    raise TypeError("could not locate the encoder layers in the model's modules")
