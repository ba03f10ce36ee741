"""Image data sets for the course: finding, downloading, verifying, splitting and loading them.

Two data sets are used:

* **digits** (scikit-learn's 8x8 hand-written digits, 1,797 images). It ships inside scikit-learn,
  so it needs no download and no network; it is the default everywhere.
* **Fashion-MNIST** (28x28 grey images of clothes, 60,000 train + 10,000 test). Its four IDX files are
  looked for, in this order, in

  1. ``$KDTUTORIAL_DATA/fashion-mnist/`` (or an explicit ``root``),
  2. ``/usr/share/datasets/fashion-mnist/`` (Debian's ``dataset-fashion-mnist`` package),
  3. the download cache ``$KDTUTORIAL_CACHE/fashion-mnist/`` (default ``~/.cache/kdtutorial``),

  and, when none of these holds them, downloaded into the cache. Every downloaded file is checked
  against a known sha256 before it is kept, so a broken or tampered download never ends up cached.

On top of that the module offers a seeded stratified splitter, a dataset that also yields each
example's index (so cached teacher outputs can be looked up safely under a shuffled loader),
``load_vision`` which bundles train/val/test splits into a :class:`VisionData`, and a reproducible
``make_loader``. Nothing here keeps global state: every function takes what it needs as arguments
and never touches the global random number generators.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset
from kdtutorial.common.downloads import ChecksumError
from kdtutorial.common.downloads import DATA_ENV
from kdtutorial.common.downloads import DataNotFoundError
from kdtutorial.common.downloads import cache_dir
from kdtutorial.common.downloads import data_root
from kdtutorial.common.downloads import download
from kdtutorial.common.downloads import failure_reason
from kdtutorial.common.splits import stratified_split

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGITS_CLASSES = tuple("0123456789")
VISION_NAMES = ("digits", "fashion-mnist")

_IDX_DTYPES = {  # IDX type code -> big-endian numpy dtype
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}


# --------------------------------------------------------------------------- locations


# --------------------------------------------------------------------------- verified downloads


# --------------------------------------------------------------------------- IDX files


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or plain, into a numpy array.

    The header is two zero bytes, a type code (0x08 = uint8, also 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, and then each dimension as a big-endian
    uint32. Raises ``ValueError`` for a bad magic number or when the data size does not match the
    dimensions.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: IDX header is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{path}: IDX dimensions {shape} need {expected} bytes of data, found {len(raw) - header_size}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native byte order, writable copy


# --------------------------------------------------------------------------- Fashion-MNIST


def _has_all(folder: Path, names) -> bool:
    return all((folder / name).is_file() for name in names)


def _fashion_help(cache_folder: Path, searched: list[Path], root_given: bool,
                  failures: list[str]) -> str:
    """The message of the error raised when Fashion-MNIST can be found nowhere."""
    lines = [
        "Fashion-MNIST not found. Needed files: " + ", ".join(FASHION_FILES) + ".",
        "Folders searched: " + ", ".join(str(p) for p in searched)
        + ("" if root_given else f" (${DATA_ENV} is not set)") + ".",
    ]
    if failures:
        lines.append("Download failed: " + "; ".join(failures) + ".")
    lines.append(
        f"To fix: put the four files in ${DATA_ENV}/fashion-mnist/ (set {DATA_ENV} to a folder of your "
        f"choice), or install Debian's dataset-fashion-mnist package, or run online so they download "
        f"into {cache_folder}."
    )
    return "\n".join(lines)


def _download_one(name: str, folder: Path, base_urls, failures: list[str]) -> bool:
    """Try each base URL in turn for one Fashion-MNIST file; record failures; True on success."""
    for base in base_urls:
        url = base if base.endswith("/") else base + "/"
        url += name
        try:
            download(url, folder / name, FASHION_FILES[name])
            return True
        except DataNotFoundError as err:
            failures.append(f"{url}: {failure_reason(err.__cause__ or err)}")
        except ChecksumError:
            failures.append(f"{url}: wrong sha256")
    return False


def find_fashion_mnist(root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                       download_missing: bool = True, base_urls=FASHION_URLS) -> Path:
    """Return a folder that holds all four Fashion-MNIST files, downloading them if needed.

    Searched in order: ``data_root(root)/"fashion-mnist"``, :data:`DEBIAN_FASHION_DIR`, and
    ``cache_dir(cache)/"fashion-mnist"``; a folder counts when all four files are in it (local copies
    are trusted and not hashed). Otherwise, if ``download_missing``, each missing file is downloaded
    into the cache from the first of ``base_urls`` that serves it with the right sha256.
    Raises :class:`DataNotFoundError`, explaining where to put the files, when that fails.
    """
    root_folder = data_root(root)
    cache_folder = cache_dir(cache) / "fashion-mnist"
    searched = [root_folder / "fashion-mnist"] if root_folder is not None else []
    searched += [DEBIAN_FASHION_DIR, cache_folder]
    for folder in searched:
        if _has_all(folder, FASHION_FILES):
            return folder
    failures: list[str] = []
    if download_missing:
        missing = [name for name in FASHION_FILES if not (cache_folder / name).is_file()]
        if all(_download_one(name, cache_folder, base_urls, failures) for name in missing):
            return cache_folder
    raise DataNotFoundError(_fashion_help(cache_folder, searched, root_folder is not None, failures))


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None,
                       cache: str | os.PathLike | None = None,
                       download_missing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split (``"train"``: 60,000 images, ``"test"``: 10,000).

    Returns ``(X, y)``: X float32 of shape [N, 1, 28, 28] scaled to [0, 1], y int64 class ids
    (names in :data:`FASHION_CLASSES`). ``root``, ``cache`` and ``download_missing`` are passed to
    :func:`find_fashion_mnist`.
    """
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"split must be one of {tuple(prefixes)}, got {split!r}")
    folder = find_fashion_mnist(root=root, cache=cache, download_missing=download_missing)
    images = read_idx(folder / f"{prefixes[split]}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefixes[split]}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match"
        )
    x = images.astype(np.float32)[:, None]
    x /= 255.0
    return x, labels.astype(np.int64)


# --------------------------------------------------------------------------- digits


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as ``(X, y)``: X float32 [1797, 1, 8, 8] in [0, 1], y int64."""
    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0
    return x, digits.target.astype(np.int64)


# --------------------------------------------------------------------------- splitting


# --------------------------------------------------------------------------- datasets and loaders


class IndexedDataset(Dataset):
    """Tensors ``x`` and ``y`` as a dataset whose items are ``(x[i], y[i], i)``.

    The index ``i`` travels with each example through a (shuffled) loader, so per-example data that
    was computed in advance, such as a teacher's logits, can be looked up as ``cached[i]``.
    """

    def __init__(self, x, y):
        self.x = torch.as_tensor(x)
        self.y = torch.as_tensor(y)
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} examples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


@dataclass(repr=False)
class VisionData:
    """An image data set split into train / val / test, with its class names and input shape."""

    name: str
    train: IndexedDataset
    val: IndexedDataset
    test: IndexedDataset
    classes: tuple
    input_shape: tuple

    @property
    def n_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    def describe(self) -> str:
        """A one-line summary, e.g. ``digits: train 1000, val 297, test 500, input (1, 8, 8), 10 classes``."""
        return (f"{self.name}: train {len(self.train)}, val {len(self.val)}, test {len(self.test)}, "
                f"input {tuple(self.input_shape)}, {self.n_classes} classes")

    def __repr__(self) -> str:
        return self.describe()


def _check_sizes(requested: dict, available: int, what: str) -> None:
    """Raise ``ValueError`` naming the parameter and its maximum when the sizes do not fit."""
    for param, value in requested.items():
        if int(value) < 0:
            raise ValueError(f"{param} must be non-negative, got {value}")
    for param, value in requested.items():
        others = sum(v for p, v in requested.items() if p != param)
        maximum = available - others
        if value > maximum:
            others_text = ", ".join(f"{p}={v}" for p, v in requested.items() if p != param)
            given = f" given {others_text}" if others_text else ""
            raise ValueError(
                f"{param}={value} is too large: at most {max(maximum, 0)}{given} "
                f"({available} examples in {what})"
            )


def _subsets(x: np.ndarray, y: np.ndarray, index_arrays) -> list[IndexedDataset]:
    return [IndexedDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx])) for idx in index_arrays]


def _load_digits_splits(n_train, n_val, n_test, seed):
    n_train = 1000 if n_train is None else n_train
    n_val = 297 if n_val is None else n_val
    n_test = 500 if n_test is None else n_test
    x, y = load_digits_arrays()
    _check_sizes({"n_train": n_train, "n_val": n_val, "n_test": n_test}, len(y), "digits")
    return _subsets(x, y, stratified_split(y, [n_train, n_val, n_test], seed)), DIGITS_CLASSES


def _load_fashion_splits(n_train, n_val, n_test, seed, root, cache, download_missing):
    n_train = 55000 if n_train is None else n_train
    n_val = 5000 if n_val is None else n_val
    where = dict(root=root, cache=cache, download_missing=download_missing)
    x, y = load_fashion_mnist("train", **where)
    _check_sizes({"n_train": n_train, "n_val": n_val}, len(y), "the Fashion-MNIST training file")
    train, val = _subsets(x, y, stratified_split(y, [n_train, n_val], seed))
    del x, y
    x, y = load_fashion_mnist("test", **where)
    n_test = len(y) if n_test is None else n_test
    _check_sizes({"n_test": n_test}, len(y), "the Fashion-MNIST test file")
    if n_test == len(y):
        test = IndexedDataset(torch.from_numpy(x), torch.from_numpy(y))
    else:
        (test,) = _subsets(x, y, stratified_split(y, [n_test], seed))
    return [train, val, test], FASHION_CLASSES


def load_vision(name: str, n_train: int | None = None, n_val: int | None = None,
                n_test: int | None = None, seed: int = 0, root: str | os.PathLike | None = None,
                cache: str | os.PathLike | None = None, download_missing: bool = True) -> VisionData:
    """Load an image data set as seeded, stratified train / val / test splits.

    * ``"digits"``: the 1,797 scikit-learn digits split 1000 / 297 / 500 by default.
    * ``"fashion-mnist"``: train and val (default 55,000 / 5,000) from the 60,000 training images,
      test from the 10,000 test images (all by default, else a stratified subset).

    ``None`` sizes take these defaults. ``root``, ``cache`` and ``download_missing`` say where
    Fashion-MNIST is found (see :func:`find_fashion_mnist`). Raises ``ValueError`` for an unknown
    name or sizes larger than the data allow.
    """
    if name == "digits":
        splits, classes = _load_digits_splits(n_train, n_val, n_test, seed)
    elif name == "fashion-mnist":
        splits, classes = _load_fashion_splits(n_train, n_val, n_test, seed, root, cache,
                                               download_missing)
    else:
        raise ValueError(f"unknown data set {name!r}; allowed values: {VISION_NAMES}")
    train, val, test = splits
    return VisionData(name=name, train=train, val=val, test=test, classes=classes,
                      input_shape=tuple(train.x.shape[1:]))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A single-process ``DataLoader``; when shuffling, its order comes from a generator seeded with
    ``seed``, so it is reproducible and independent of the global random state."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=0)
