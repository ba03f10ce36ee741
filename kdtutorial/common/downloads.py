"""Verified downloads, the data root and the download cache."""
from __future__ import annotations
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from tqdm.auto import tqdm


DATA_ENV = "KDTUTORIAL_DATA"

CACHE_ENV = "KDTUTORIAL_CACHE"

_CHUNK = 1 << 20  # bytes read at a time when hashing or downloading

class DataNotFoundError(FileNotFoundError):
    """A data set is neither on disk nor could it be downloaded; the message says how to fix that."""

class ChecksumError(ValueError):
    """A downloaded file does not have the expected sha256 (it was deleted, nothing was cached)."""

def _env_path(variable: str) -> Path | None:
    value = os.environ.get(variable, "").strip()
    return Path(value).expanduser() if value else None

def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The local data root: ``root`` if given, else ``$KDTUTORIAL_DATA``, else ``None``."""
    if root is not None:
        return Path(root).expanduser()
    return _env_path(DATA_ENV)

def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The download cache: ``cache`` if given, else ``$KDTUTORIAL_CACHE``, else ``~/.cache/kdtutorial``."""
    if cache is not None:
        return Path(cache).expanduser()
    return _env_path(CACHE_ENV) or Path.home() / ".cache" / "kdtutorial"

def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file as a hex string, read in chunks so large files need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()

def _stream_to_file(url: str, path: Path, timeout: float, progress: bool) -> str:
    """Copy ``url`` into ``path`` with a progress bar; return the sha256 of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=path.name.removesuffix(".part"), disable=not progress) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()

def download(url: str, dest: str | os.PathLike, sha256: str, *, timeout: float = 60,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and check its sha256; return ``dest``.

    A ``dest`` that already has the right sha256 is returned untouched (no network); one with a wrong
    sha256 is deleted and downloaded again. The data first goes to ``dest.name + ".part"`` in the same
    folder and is moved into place only after the check passed, so a bad file never stays on disk.

    Raises :class:`ChecksumError` when the download has the wrong sha256 and
    :class:`DataNotFoundError` when the download itself fails (no network, HTTP error, timeout).
    """
    dest = Path(dest)
    expected = sha256.lower()
    if dest.is_file():
        if sha256_file(dest) == expected:
            return dest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        actual = _stream_to_file(url, part, timeout, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:  # timeouts are OSErrors
        part.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"Download failed: {url} ({failure_reason(err)}). To provide the file by hand, put it at {dest} "
            f"(its sha256 must be {expected})."
        ) from err
    except BaseException:  # e.g. KeyboardInterrupt: leave no partial file behind
        part.unlink(missing_ok=True)
        raise
    if actual != expected:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"Checksum mismatch for {url}: expected sha256 {expected}, got {actual}. "
            f"The download was deleted; nothing was cached."
        )
    os.replace(part, dest)
    return dest

def failure_reason(err: BaseException) -> str:
    """A short human-readable cause of a failed download."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return str(err.reason)
    return str(err) or type(err).__name__


def searched_folder_text(root_folder: Path | None, sub: str) -> str:
    """The data-root folder that was searched for ``sub``, or why none was (for "not found" messages)."""
    if root_folder is None:
        return f"none (${DATA_ENV} is not set and no root was given)"
    return str(root_folder / sub)
