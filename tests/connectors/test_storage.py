"""connectors.storage: hashing, atomic copies, removal, on real local files and memory://."""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import fsspec
import pytest

from connectors import storage
from connectors.storage import StorageError


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _expected_dir_digest(files: dict[str, bytes]) -> str:
    """The documented definition, written out independently."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode("utf-8") + b"\0" + files[rel] + b"\0")
    return h.hexdigest()


DIR_FILES = {
    "dataset_info.json": b'{"features": {}}',
    "state.json": b"{}",
    "data-00000-of-00002.arrow": os.urandom(3000),
    "data-00001-of-00002.arrow": b"",
    "sub/dir/z.bin": b"\0\0\0",
    "sub/a.txt": b"nested",
}


def _mem(prefix: str = "t") -> str:
    return f"memory://{prefix}-{uuid.uuid4().hex}"


# -- hashing ------------------------------------------------------------------


def test_sha256_of_file_streams_multiple_chunks(tmp_path):
    data = os.urandom(storage.CHUNK_SIZE * 2 + 12345)
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    assert storage.sha256_of(p) == hashlib.sha256(data).hexdigest()
    assert storage.sha256_of(str(p)) == hashlib.sha256(data).hexdigest()


def test_sha256_of_empty_file(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    assert storage.sha256_of(p) == hashlib.sha256(b"").hexdigest()


def test_directory_digest_matches_documented_definition(tmp_path):
    d = _tree(tmp_path / "shard", DIR_FILES)
    expected = _expected_dir_digest(DIR_FILES)
    assert storage.sha256_of(d) == expected
    fs, path = storage.get_fs(str(d))
    assert storage.directory_digest(fs, path) == expected


def test_directory_digest_independent_of_location_but_not_of_names_or_bytes(tmp_path):
    a = _tree(tmp_path / "a", DIR_FILES)
    b = _tree(tmp_path / "elsewhere" / "b", DIR_FILES)
    assert storage.sha256_of(a) == storage.sha256_of(b)

    renamed = dict(DIR_FILES)
    renamed["state2.json"] = renamed.pop("state.json")
    c = _tree(tmp_path / "c", renamed)
    assert storage.sha256_of(c) != storage.sha256_of(a)

    (b / "sub" / "a.txt").write_bytes(b"nesteD")
    assert storage.sha256_of(b) != storage.sha256_of(a)


def test_directory_digest_same_on_memory_filesystem(tmp_path):
    url = _mem()
    for rel, data in DIR_FILES.items():
        with fsspec.open(f"{url}/{rel}", "wb") as f:
            f.write(data)
    assert storage.sha256_of(url) == _expected_dir_digest(DIR_FILES)
    storage.remove(url)


def test_sha256_of_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(StorageError) as ei:
        storage.sha256_of(missing)
    assert str(missing) in str(ei.value)
    assert "not found" in str(ei.value)


# -- inspection -----------------------------------------------------------------


def test_exists_size_is_dir(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"12345")
    d = _tree(tmp_path / "d", {"x": b"ab", "y/z": b"cde"})
    assert storage.exists(f) and storage.exists(d)
    assert not storage.exists(tmp_path / "nothing")
    assert storage.size(f) == 5
    assert storage.size(d) == 5
    assert storage.is_dir(d) and not storage.is_dir(f)
    with pytest.raises(StorageError):
        storage.size(tmp_path / "nothing")


def test_fingerprint_changes_with_content(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"one")
    fp1 = storage.fingerprint(f)
    assert fp1 == storage.fingerprint(f)
    f.write_bytes(b"three")
    assert storage.fingerprint(f) != fp1
    d = _tree(tmp_path / "d", {"a": b"1"})
    dfp = storage.fingerprint(d)
    (d / "b").write_bytes(b"2")
    assert storage.fingerprint(d) != dfp


# -- copy ------------------------------------------------------------------------


def test_copy_file_atomic_creates_parents(tmp_path):
    src = tmp_path / "src.jsonl"
    data = os.urandom(storage.CHUNK_SIZE + 7)
    src.write_bytes(data)
    dst = tmp_path / "q" / "deep" / "dst.jsonl"
    storage.copy(src, dst)
    assert dst.read_bytes() == data
    assert not Path(str(dst) + ".partial").exists()
    assert src.read_bytes() == data  # source untouched


def test_copy_refuses_to_overwrite_unless_asked(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"new")
    dst = tmp_path / "dst"
    dst.write_bytes(b"old")
    with pytest.raises(StorageError) as ei:
        storage.copy(src, dst)
    assert "already exists" in str(ei.value) and str(dst) in str(ei.value)
    assert dst.read_bytes() == b"old"
    storage.copy(src, dst, overwrite=True)
    assert dst.read_bytes() == b"new"


def test_copy_discards_stale_partial(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"good bytes")
    dst = tmp_path / "dst"
    Path(str(dst) + ".partial").write_bytes(b"half-writ")
    storage.copy(src, dst)
    assert dst.read_bytes() == b"good bytes"
    assert not Path(str(dst) + ".partial").exists()


def test_interrupted_copy_never_has_final_name(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.write_bytes(os.urandom(storage.CHUNK_SIZE * 3))
    dst = tmp_path / "dst"

    def boom(fin, fout):
        fout.write(fin.read(100))
        raise OSError("disk full")

    monkeypatch.setattr(storage, "_pump", boom)
    with pytest.raises(StorageError) as ei:
        storage.copy(src, dst)
    assert "disk full" in str(ei.value)
    assert not dst.exists()
    monkeypatch.undo()
    storage.copy(src, dst)  # a retry cleans up and completes
    assert dst.read_bytes() == src.read_bytes()


def test_copy_directory(tmp_path):
    src = _tree(tmp_path / "shard", DIR_FILES)
    dst = tmp_path / "q" / "shard"
    storage.copy(src, dst)
    assert storage.sha256_of(dst) == storage.sha256_of(src)
    assert not Path(str(dst) + ".partial").exists()
    for rel, data in DIR_FILES.items():
        assert (dst / rel).read_bytes() == data


def test_copy_across_filesystems(tmp_path):
    src = _tree(tmp_path / "shard", DIR_FILES)
    url = _mem() + "/q/shard"
    storage.copy(src, url)
    assert storage.sha256_of(url) == storage.sha256_of(src)
    assert not storage.exists(url + ".partial")
    back = tmp_path / "back"
    storage.copy(url, back)
    assert storage.sha256_of(back) == storage.sha256_of(src)

    f = tmp_path / "f.bin"
    f.write_bytes(b"payload")
    furl = _mem() + "/f.bin"
    storage.copy(f, furl)
    assert storage.sha256_of(furl) == hashlib.sha256(b"payload").hexdigest()
    assert storage.size(furl) == 7


def test_copy_missing_source(tmp_path):
    with pytest.raises(StorageError) as ei:
        storage.copy(tmp_path / "missing", tmp_path / "dst")
    assert "missing" in str(ei.value)
    assert not (tmp_path / "dst").exists()


# -- remove ----------------------------------------------------------------------


def test_remove_file_and_directory(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    d = _tree(tmp_path / "d", DIR_FILES)
    storage.remove(f)
    storage.remove(d)
    assert not f.exists() and not d.exists()
    with pytest.raises(StorageError) as ei:
        storage.remove(f)
    assert str(f) in str(ei.value)
    storage.remove(f, missing_ok=True)


def test_remove_memory(tmp_path):
    url = _mem() + "/x.bin"
    with fsspec.open(url, "wb") as fh:
        fh.write(b"abc")
    assert storage.exists(url)
    storage.remove(url)
    assert not storage.exists(url)


def test_join():
    assert storage.join("s3://bucket/q/", "abc", "a/b.jsonl") == "s3://bucket/q/abc/a/b.jsonl"
    assert storage.join("/tmp/q", "x") == "/tmp/q/x"
