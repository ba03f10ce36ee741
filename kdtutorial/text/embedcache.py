"""Sentence embeddings of an unlabelled pool, computed once and cached on disk under a fingerprint (lesson 09).

Lesson 09 follows Kamalloo et al., "Not Far Away, Not So Close: Sample Efficient Nearest Neighbour Data
Augmentation via MiniMax" (ACL 2021): the KD transfer set is augmented with the nearest neighbours of each
training sentence in a large pool of unlabelled sentences. With sentence embeddings as the retriever, every pool
sentence is encoded once (half a million IMDB sentences take a while on a CPU) and the vectors are reused by
every later run. :func:`cached_embeddings` keeps them in ``cache_dir(cache) / "embeddings"``:

* the file name holds the first 16 hex digits of :func:`text_fingerprint` (the pool) and of
  :func:`model_fingerprint` (the encoder's weights) and the ``max_length``, e.g.
  ``emb-1f0c2a9e3b7d4c55-9a8b7c6d5e4f3a2b-L64.npy``, so a changed pool, model or truncation looks for another file;
* a JSON sidecar beside it (same name, ``.json``) holds the full fingerprints, ``n``, ``dim``, ``max_length``,
  ``amp`` and the package version; :func:`load_embeddings` checks it and raises :class:`StaleEmbeddingsError`
  rather than serving vectors computed for something else;
* both files are written to a temporary name and moved into place (``os.replace``), the sidecar last, so an
  interrupted run never leaves a file that passes the check.

``amp`` (bfloat16 autocast, CUDA only) is recorded but not part of the key: it changes the vectors by rounding,
not their meaning, so vectors computed with or without it are served to both.

The embeddings follow the sentence-transformers recipe of all-MiniLM-L6-v2 (:func:`mean_pooled_embeddings`):
the mean of the encoder's last hidden states over the real tokens, then L2 normalisation, so that the inner
product of two vectors is their cosine similarity.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kdtutorial.common.checks import check_sentences
from kdtutorial.common.downloads import cache_dir
from kdtutorial.common.environment import autocast
from kdtutorial.text.tokens import padded_batches, tokenize

__all__ = [
    "StaleEmbeddingsError", "CachedEmbeddings", "text_fingerprint", "model_fingerprint", "mean_pooled_embeddings",
    "embeddings_path", "load_embeddings", "cached_embeddings",
]


class StaleEmbeddingsError(ValueError):
    """Cached vectors that were computed for another pool, model or ``max_length`` (or whose sidecar is missing,
    unreadable or disagrees with the array): they are never served."""


@dataclass(frozen=True, eq=False)
class CachedEmbeddings:
    """The pool's vectors (``float32 [n, dim]``, unit rows), the ``.npy`` file they live in, whether they were
    loaded from disk (``hit``) rather than computed, and the ``seconds`` it took to load or compute them."""

    vectors: np.ndarray
    path: Path
    hit: bool
    seconds: float


def text_fingerprint(sentences) -> str:
    """The sha256 (hex) of ``sentences``, each encoded as UTF-8 and followed by ``"\\n"``, in order.

    Any changed, added, removed or reordered sentence changes it (row ``i`` of the vectors is sentence ``i``).
    """
    digest = hashlib.sha256()
    for sentence in check_sentences(sentences):
        digest.update(sentence.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """The sha256 (hex) of ``model.state_dict()``: for each entry in sorted key order its name, dtype, shape and
    raw bytes. A changed weight, dtype, shape or key changes it; the device it lives on does not."""
    if not hasattr(model, "state_dict"):
        raise TypeError(f"model must be a torch.nn.Module (it has no state_dict), got a {type(model).__name__}")
    state = model.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode("utf-8"))
        # every dtype (bfloat16 included, which numpy lacks) seen as its bytes: flatten, then view as uint8
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def mean_pooled_embeddings(encoder: torch.nn.Module, tokenizer, sentences, *, max_length: int = 64,
                           batch_size: int = 256, device="cpu", amp: bool = False,
                           progress: bool = False) -> np.ndarray:
    """Sentence embeddings ``float32 [n, hidden]`` with unit rows, in the order of ``sentences``.

    The sentence-transformers recipe of all-MiniLM-L6-v2: tokenise (truncated to ``max_length`` tokens, special
    tokens included), run ``encoder`` (a BERT-family base model whose output has ``last_hidden_state``), average
    the last hidden states over the attention mask and L2-normalise. Sentences are sorted by length into batches
    of ``batch_size`` (little padding) and put back in order; the encoder is moved to ``device`` and runs in eval
    mode without gradients, and is left in the mode it was in. ``amp`` is bfloat16 autocast on CUDA (a no-op on
    the CPU).
    """
    sentences = check_sentences(sentences)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size = {batch_size!r} is not allowed: it must be a positive int")
    device = torch.device(device)
    hidden = int(encoder.config.hidden_size)
    out = np.empty((len(sentences), hidden), dtype=np.float32)
    if not sentences:
        return out
    text = tokenize(tokenizer, sentences, max_length)
    was_training = encoder.training
    encoder.to(device).eval()
    try:
        with torch.inference_mode(), tqdm(total=len(sentences), unit="sent", desc="embedding",
                                          disable=not progress) as bar:
            for rows, batch in padded_batches(text, int(batch_size), sort_by_length=True):
                mask = batch["attention_mask"].to(device)
                with autocast(device, amp):
                    states = encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
                states = states.float()
                weights = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()
                bar.update(len(rows))
    finally:
        encoder.train(was_training)
    return out


def embeddings_path(text_fingerprint: str, model_fingerprint: str, max_length: int, cache=None) -> Path:
    """Where :func:`cached_embeddings` keeps the vectors of that pool, model and ``max_length``:
    ``cache_dir(cache) / "embeddings" / "emb-<text16>-<model16>-L<max_length>.npy"``."""
    for argument, value in (("text_fingerprint", text_fingerprint), ("model_fingerprint", model_fingerprint)):
        if not isinstance(value, str) or len(value) < 16:
            raise ValueError(f"{argument} must be a hex digest of at least 16 digits, got {value!r}")
    name = f"emb-{text_fingerprint[:16]}-{model_fingerprint[:16]}-L{int(max_length)}.npy"
    return cache_dir(cache) / "embeddings" / name


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _short(digest) -> str:
    return f"{str(digest)[:12]}..."


def load_embeddings(path, *, text_fingerprint: str, model_fingerprint: str, max_length: int) -> np.ndarray:
    """The vectors at ``path`` after checking its JSON sidecar against the pool's and model's fingerprints and
    ``max_length``; the array must also have the sidecar's shape ``(n, dim)``.

    Raises :class:`StaleEmbeddingsError` naming what differs (pool, model, max_length, shape), or when the
    sidecar is missing or unreadable; ``FileNotFoundError`` when ``path`` itself does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no cached vectors at {path}")
    sidecar = _sidecar(path)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StaleEmbeddingsError(f"the cached vectors at {path} have no sidecar {sidecar.name}: nothing says "
                                   f"which pool and model they were computed for") from None
    except (OSError, ValueError) as err:
        raise StaleEmbeddingsError(f"the sidecar {sidecar} of the cached vectors cannot be read ({err})") from err
    if not isinstance(meta, dict):
        raise StaleEmbeddingsError(f"the sidecar {sidecar} does not hold a JSON object")
    problems = []
    if meta.get("text_fingerprint") != text_fingerprint:
        problems.append(f"another pool (fingerprint {_short(meta.get('text_fingerprint'))} "
                        f"not {_short(text_fingerprint)})")
    if meta.get("model_fingerprint") != model_fingerprint:
        problems.append(f"another model (fingerprint {_short(meta.get('model_fingerprint'))} "
                        f"not {_short(model_fingerprint)})")
    if meta.get("max_length") != int(max_length):
        problems.append(f"another max_length ({meta.get('max_length')} not {int(max_length)})")
    if problems:
        raise StaleEmbeddingsError(f"the cached vectors at {path} were computed for " + " and ".join(problems))
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise StaleEmbeddingsError(f"the cached vectors at {path} cannot be read ({err})") from err
    expected = (meta.get("n"), meta.get("dim"))
    if vectors.ndim != 2 or tuple(vectors.shape) != expected or vectors.dtype != np.float32:
        raise StaleEmbeddingsError(f"the cached vectors at {path} have shape {tuple(vectors.shape)} and dtype "
                                   f"{vectors.dtype}, but the sidecar says shape {expected} of float32")
    return vectors


def _write_atomically(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it to ``path`` in one step."""
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def cached_embeddings(sentences, encoder: torch.nn.Module, tokenizer, *, max_length: int = 64,
                      batch_size: int = 256, device="cpu", amp: bool = False, cache=None,
                      progress: bool = False) -> CachedEmbeddings:
    """:func:`mean_pooled_embeddings` of ``sentences``, loaded from the cache when this pool, model and
    ``max_length`` were embedded before (``hit=True``), else computed and written there (``hit=False``).

    The file is :func:`embeddings_path` under ``cache_dir(cache)``. A file of that name whose sidecar does not
    check out (interrupted write, a 16-digit prefix shared by two pools) is recomputed and overwritten, never
    served.
    """
    sentences = check_sentences(sentences)
    started = time.perf_counter()
    text_fp, model_fp = text_fingerprint(sentences), model_fingerprint(encoder)
    path = embeddings_path(text_fp, model_fp, max_length, cache)
    if path.is_file():
        try:
            vectors = load_embeddings(path, text_fingerprint=text_fp, model_fingerprint=model_fp,
                                      max_length=max_length)
            return CachedEmbeddings(vectors, path, True, time.perf_counter() - started)
        except StaleEmbeddingsError:
            pass  # same name, other contents: compute afresh and replace them
    vectors = mean_pooled_embeddings(encoder, tokenizer, sentences, max_length=max_length, batch_size=batch_size,
                                     device=device, amp=amp, progress=progress)
    import kdtutorial

    meta = {"text_fingerprint": text_fp, "model_fingerprint": model_fp, "n": int(vectors.shape[0]),
            "dim": int(vectors.shape[1]), "max_length": int(max_length), "amp": bool(amp),
            "version": kdtutorial.__version__}
    path.parent.mkdir(parents=True, exist_ok=True)
    _sidecar(path).unlink(missing_ok=True)  # a sidecar never vouches for an array it was not written with
    _write_atomically(path, lambda f: np.save(f, vectors, allow_pickle=False))
    _write_atomically(_sidecar(path), lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    return CachedEmbeddings(vectors, path, False, time.perf_counter() - started)
