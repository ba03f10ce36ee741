"""Tests for kdtutorial.vision.data. Offline: downloads go to a loopback HTTP server or file:// URLs.

The tests that read the real Fashion-MNIST files run only when $KDTUTORIAL_DATA holds them, e.g.
``KDTUTORIAL_DATA=/work/shared/data python -m pytest tests/test_data.py``.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from _support import sha256_bytes, unused_port
from kdtutorial.vision import data
from kdtutorial.common.downloads import ChecksumError, DataNotFoundError, download, sha256_file
from kdtutorial.vision.data import IndexedDataset, find_fashion_mnist, load_fashion_mnist, load_vision, make_loader, read_idx
from kdtutorial.common.splits import stratified_split
from kdtutorial.common import downloads

# --------------------------------------------------------------------------- helpers and fixtures


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x00 0x00 0x08 ndim, big-endian dims)."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Keep urllib from routing loopback requests through a proxy configured in the environment."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- locations


def test_data_root_and_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(downloads.DATA_ENV, raising=False)
    monkeypatch.delenv(downloads.CACHE_ENV, raising=False)
    assert downloads.data_root() is None
    assert downloads.data_root(tmp_path) == tmp_path
    assert downloads.cache_dir() == Path.home() / ".cache" / "kdtutorial"
    monkeypatch.setenv(downloads.DATA_ENV, str(tmp_path / "d"))
    monkeypatch.setenv(downloads.CACHE_ENV, str(tmp_path / "c"))
    assert downloads.data_root() == tmp_path / "d"
    assert downloads.cache_dir() == tmp_path / "c"
    assert downloads.cache_dir(tmp_path / "x") == tmp_path / "x"


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compressed", [True, False])
def test_read_idx_round_trip(tmp_path, compressed):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    payload = idx_bytes(array)
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    path.write_bytes(gzip.compress(payload) if compressed else payload)
    out = read_idx(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_read_idx_labels_one_dimensional(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.array([3, 1, 4, 1, 5]))))
    np.testing.assert_array_equal(read_idx(path), [3, 1, 4, 1, 5])


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(path)


def test_read_idx_rejects_size_mismatch(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 3), dtype=np.uint8))[:-1])
    with pytest.raises(ValueError):
        read_idx(path)


# --------------------------------------------------------------------------- download


def test_download_correct_checksum_is_cached(server, tmp_path):
    sha = server.serve("blob.bin", b"hello " * 1000)
    dest = tmp_path / "cache" / "blob.bin"
    assert download(server.url + "blob.bin", dest, sha, progress=False) == dest
    assert dest.read_bytes() == b"hello " * 1000
    assert sha256_file(dest) == sha
    assert leftovers(dest.parent) == [dest]


def test_download_wrong_checksum_leaves_nothing(server, tmp_path):
    server.serve("blob.bin", b"tampered content")
    url = server.url + "blob.bin"
    expected = "0" * 64
    dest = tmp_path / "cache" / "blob.bin"
    with pytest.raises(ChecksumError) as info:
        download(url, dest, expected, progress=False)
    message = str(info.value)
    assert url in message and expected in message
    assert sha256_bytes(b"tampered content") in message
    assert "nothing was cached" in message
    assert not dest.exists()
    assert leftovers(tmp_path / "cache") == []


def test_download_valid_cache_needs_no_server(server, tmp_path):
    sha = server.serve("blob.bin", b"payload")
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"payload")
    server.stop()
    assert download(server.url + "blob.bin", dest, sha, progress=False) == dest
    assert dest.read_bytes() == b"payload"
    assert server.requests == []


def test_download_replaces_corrupt_cache(server, tmp_path):
    sha = server.serve("blob.bin", b"the real thing")
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"corrupt")
    (tmp_path / "blob.bin.part").write_bytes(b"stale partial download")
    download(server.url + "blob.bin", dest, sha, progress=False)
    assert dest.read_bytes() == b"the real thing"
    assert server.requests == ["/blob.bin"]
    assert sorted(p for p in tmp_path.iterdir() if p.is_file()) == [dest]  # no .part left


def test_download_http_error_is_data_not_found(server, tmp_path):
    url = server.url + "missing.bin"
    dest = tmp_path / "cache" / "missing.bin"
    with pytest.raises(DataNotFoundError) as info:
        download(url, dest, "0" * 64, progress=False)
    message = str(info.value)
    assert "failed" in message and url in message and str(dest) in message
    assert leftovers(tmp_path / "cache") == []


def test_download_unreachable_is_data_not_found(tmp_path):
    url = f"http://127.0.0.1:{unused_port()}/blob.bin"
    dest = tmp_path / "blob.bin"
    with pytest.raises(DataNotFoundError, match="failed"):
        download(url, dest, "0" * 64, timeout=5, progress=False)
    assert leftovers(tmp_path) == []


def test_download_file_url(tmp_path):
    source = tmp_path / "source" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(b"local bytes")
    dest = tmp_path / "cache" / "blob.bin"
    download(source.as_uri(), dest, sha256_bytes(b"local bytes"), progress=False)
    assert dest.read_bytes() == b"local bytes"


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "no-such-debian-dir")


def fake_fashion_files(n_train=20, n_test=10, seed=0) -> dict[str, bytes]:
    """Tiny gzipped IDX files in Fashion-MNIST's layout; labels cycle through 0..9."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # make sure the full range occurs
        labels = np.arange(n, dtype=np.uint8) % 10
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
    return files


def test_find_fashion_mnist_offline_nothing_anywhere(tmp_path, no_debian):
    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    cache.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        find_fashion_mnist(root=root, cache=cache, download_missing=False)
    message = str(info.value)
    assert "KDTUTORIAL_DATA" in message and "fashion-mnist" in message
    for name in data.FASHION_FILES:
        assert name in message
    assert str(root / "fashion-mnist") in message and str(cache / "fashion-mnist") in message
    assert "dataset-fashion-mnist" in message
    assert leftovers(cache) == []


def test_find_fashion_mnist_unreachable_downloads(tmp_path, no_debian):
    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    dead = f"http://127.0.0.1:{unused_port()}/"
    with pytest.raises(DataNotFoundError) as info:
        find_fashion_mnist(root=root, cache=cache, download_missing=True, base_urls=(dead, dead))
    assert "KDTUTORIAL_DATA" in str(info.value) and dead in str(info.value)
    assert not cache.exists() or leftovers(cache) == []


def test_find_and_load_fashion_mnist_via_loopback(server, tmp_path, monkeypatch, no_debian):
    files = fake_fashion_files()
    hashes = {name: server.serve(name, payload) for name, payload in files.items()}
    monkeypatch.setattr(data, "FASHION_FILES", hashes)
    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    dead = f"http://127.0.0.1:{unused_port()}/"

    folder = find_fashion_mnist(root=root, cache=cache, base_urls=(dead, server.url))
    assert folder == cache / "fashion-mnist"
    assert sorted(p.name for p in leftovers(folder)) == sorted(files)
    server.stop()  # from now on everything must come from the cache

    x, y = load_fashion_mnist("train", root=root, cache=cache, download_missing=False)
    raw = read_idx(folder / "train-images-idx3-ubyte.gz")
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (20,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x[:, 0] * 255.0, raw, atol=1e-4)
    np.testing.assert_array_equal(y, np.arange(20) % 10)
    x_test, y_test = load_fashion_mnist("test", root=root, cache=cache, download_missing=False)
    assert x_test.shape == (10, 1, 28, 28) and y_test.shape == (10,)

    vd = load_vision("fashion-mnist", n_train=10, n_val=10, n_test=5, root=root, cache=cache,
                     download_missing=False)
    assert (len(vd.train), len(vd.val), len(vd.test)) == (10, 10, 5)
    assert vd.input_shape == (1, 28, 28) and vd.n_classes == 10
    assert vd.classes == data.FASHION_CLASSES
    with pytest.raises(ValueError, match=r"n_train=55000.*at most 15"):  # default 55000 > 20 - 5
        load_vision("fashion-mnist", n_val=5, root=root, cache=cache, download_missing=False)


def test_find_fashion_mnist_prefers_data_root(tmp_path, monkeypatch, no_debian):
    root = tmp_path / "root"
    (root / "fashion-mnist").mkdir(parents=True)
    for name in data.FASHION_FILES:
        (root / "fashion-mnist" / name).write_bytes(b"")  # local copies are not hashed
    assert find_fashion_mnist(root=root, cache=tmp_path / "cache") == root / "fashion-mnist"
    monkeypatch.setenv(downloads.DATA_ENV, str(root))
    assert find_fashion_mnist(cache=tmp_path / "cache") == root / "fashion-mnist"


def test_load_fashion_mnist_rejects_bad_split():
    with pytest.raises(ValueError, match="train.*test"):
        load_fashion_mnist("validation")


def _mirror() -> Path | None:
    root = downloads.data_root()
    if root is None or not all((root / "fashion-mnist" / n).is_file() for n in data.FASHION_FILES):
        return None
    return root / "fashion-mnist"


needs_mirror = pytest.mark.skipif(_mirror() is None,
                                  reason="$KDTUTORIAL_DATA does not hold fashion-mnist")


@needs_mirror
def test_real_mirror_test_split():
    x, y = load_fashion_mnist("test", download_missing=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [1000] * 10)


@needs_mirror
def test_real_mirror_checksums():
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert sha256_file(_mirror() / name) == data.FASHION_FILES[name]


@needs_mirror
def test_real_mirror_load_vision_subset():
    vd = load_vision("fashion-mnist", n_train=1000, n_val=500, n_test=2000, seed=1,
                     download_missing=False)
    assert vd.describe() == ("fashion-mnist: train 1000, val 500, test 2000, input (1, 28, 28), "
                             "10 classes")
    np.testing.assert_array_equal(torch.bincount(vd.test.y, minlength=10).numpy(), [200] * 10)


# --------------------------------------------------------------------------- stratified_split


def test_stratified_split_properties():
    y = np.repeat(np.arange(3), [500, 300, 200])
    sizes = [400, 300, 200]
    parts = stratified_split(y, sizes, seed=0)
    assert [len(p) for p in parts] == sizes
    assert all(p.dtype == np.int64 for p in parts)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)  # disjoint
    for part, size in zip(parts, sizes):
        share = np.bincount(y[part], minlength=3) / size
        np.testing.assert_allclose(share, [0.5, 0.3, 0.2], atol=0.01)


def test_stratified_split_deterministic_and_seeded():
    y = np.random.default_rng(1).integers(0, 5, size=300)
    np.random.seed(123)
    torch.manual_seed(123)
    a = stratified_split(y, [100, 50], seed=7)
    np.random.seed(999)
    torch.manual_seed(999)
    b = stratified_split(y, [100, 50], seed=7)
    c = stratified_split(y, [100, 50], seed=8)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_stratified_split_uses_everything_when_sizes_sum_to_n():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    parts = stratified_split(y, [6, 4], seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))


def test_stratified_split_rejects_too_large():
    with pytest.raises(ValueError):
        stratified_split(np.zeros(10), [6, 5], seed=0)
    with pytest.raises(ValueError):
        stratified_split(np.zeros(10), [-1, 5], seed=0)


# --------------------------------------------------------------------------- load_vision("digits")


def test_load_vision_digits():
    vd = load_vision("digits")
    assert (len(vd.train), len(vd.val), len(vd.test)) == (1000, 297, 500)
    assert vd.input_shape == (1, 8, 8) and vd.n_classes == 10
    assert vd.classes == data.DIGITS_CLASSES
    assert vd.describe() == "digits: train 1000, val 297, test 500, input (1, 8, 8), 10 classes"
    assert repr(vd) == vd.describe()
    for split in (vd.train, vd.val, vd.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8)
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert vd.train.x.max() == 1.0
    assert set(vd.test.y.tolist()) == set(range(10))


def test_load_vision_digits_deterministic():
    a, b = load_vision("digits", seed=3), load_vision("digits", seed=3)
    c = load_vision("digits", seed=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)


def test_load_vision_digits_custom_sizes():
    vd = load_vision("digits", n_train=100, n_val=50, n_test=60)
    assert (len(vd.train), len(vd.val), len(vd.test)) == (100, 50, 60)


def test_load_vision_rejects_bad_name_and_sizes():
    with pytest.raises(ValueError, match=r"digits.*fashion-mnist"):
        load_vision("cifar10")
    with pytest.raises(ValueError, match=r"n_train.*at most 1000"):
        load_vision("digits", n_train=2000)


def test_load_digits_arrays():
    x, y = data.load_digits_arrays()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0


# --------------------------------------------------------------------------- IndexedDataset and loaders


def test_indexed_dataset_items():
    ds = IndexedDataset(torch.arange(12.0).reshape(6, 2), torch.arange(6))
    assert len(ds) == 6
    x, y, i = ds[4]
    assert torch.equal(x, torch.tensor([8.0, 9.0])) and y == 4 and i == 4
    with pytest.raises(ValueError):
        IndexedDataset(torch.zeros(3, 2), torch.zeros(4))


def order_of(loader) -> list[int]:
    return torch.cat([idx for _, _, idx in loader]).tolist()


def test_shuffled_loader_indices_map_back_and_are_reproducible():
    x = torch.randn(50, 1, 4, 4)
    ds = IndexedDataset(x, torch.arange(50) % 10)
    loader = make_loader(ds, batch_size=8, shuffle=True, seed=5)
    seen = []
    for xb, yb, idx in loader:
        assert torch.equal(ds.x[idx], xb) and torch.equal(ds.y[idx], yb)
        seen += idx.tolist()
    assert sorted(seen) == list(range(50)) and seen != list(range(50))

    torch.manual_seed(0)
    first = order_of(make_loader(ds, batch_size=8, shuffle=True, seed=5))
    torch.manual_seed(1)
    second = order_of(make_loader(ds, batch_size=8, shuffle=True, seed=5))
    assert first == second == seen
    assert order_of(make_loader(ds, batch_size=8, shuffle=True, seed=6)) != first
    assert order_of(make_loader(ds, batch_size=8, shuffle=False)) == list(range(50))
