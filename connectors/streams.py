"""Byte streams of shards: fsspec opening, decompression, and SHA-256 while reading.

A shard's SHA-256 is always over the shard's own bytes as stored (for a
compressed file: the compressed bytes), so it equals ``sha256sum FILE``. For an
``hf_dataset`` directory see :func:`hash_hf_dir`.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO, Iterator

import fsspec

if TYPE_CHECKING:
    from connectors.listing import ShardRef

CHUNK = 1 << 20  # 1 MiB


class HashingReader(io.RawIOBase):
    """A read-only raw stream that feeds every byte it reads into SHA-256.

    Call :meth:`drain` once the consumer is done so the digest covers the
    whole underlying file (trailing bytes a parser did not need included).
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        if n:
            memoryview(buffer).cast("B")[:n] = data
            self._sha.update(data)
            self.bytes_read += n
        return n

    def drain(self) -> None:
        """Read (and hash) the rest of the underlying stream."""
        while True:
            data = self._raw.read(CHUNK)
            if not data:
                return
            self._sha.update(data)
            self.bytes_read += len(data)

    def hexdigest(self) -> str:
        """Hex SHA-256 of the bytes read so far."""
        return self._sha.hexdigest()


def decompressing(raw: BinaryIO, compression: str | None) -> BinaryIO:
    """A buffered binary stream of ``raw``'s content, decompressed if needed."""
    if compression is None:
        return io.BufferedReader(raw, CHUNK)  # type: ignore[arg-type]
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK, read_across_frames=True, closefd=False
        )
        return io.BufferedReader(reader, CHUNK)  # type: ignore[arg-type]
    raise ValueError(f"unknown compression {compression!r}")


def decompression_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a compressed stream is corrupt or truncated."""
    errors: list[type[BaseException]] = [EOFError, gzip.BadGzipFile]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    import zlib

    errors.append(zlib.error)
    return tuple(errors)


@contextmanager
def open_hashed(uri: str, compression: str | None, storage_options: dict | None = None
                ) -> Iterator[tuple[BinaryIO, HashingReader]]:
    """Open ``uri`` for streaming: yields (content stream, hashing raw reader)."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    with fs.open(path, "rb") as raw:
        hashing = HashingReader(raw)
        stream = decompressing(hashing, compression)
        try:
            yield stream, hashing
        finally:
            if compression is not None:
                stream.close()


def hash_file(fs: fsspec.AbstractFileSystem, path: str, sha=None) -> tuple[str, int]:
    """(hex SHA-256, bytes) of one file, streamed in 1 MiB chunks."""
    sha = sha or hashlib.sha256()
    total = 0
    with fs.open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            sha.update(data)
            total += len(data)
    return sha.hexdigest(), total


def hf_dir_files(fs: fsspec.AbstractFileSystem, dir_path: str) -> list[tuple[str, str, int]]:
    """(relative POSIX path, full path, size) of every file under ``dir_path``, sorted."""
    root = dir_path.rstrip("/")
    out = []
    for path, info in fs.find(root, detail=True).items():
        rel = path[len(root) + 1 :] if path.startswith(root + "/") else posixpath.basename(path)
        out.append((rel, path, int(info.get("size") or 0)))
    return sorted(out, key=lambda t: t[0].encode("utf-8"))


def hash_hf_dir(fs: fsspec.AbstractFileSystem, dir_path: str) -> tuple[str, int]:
    """(hex SHA-256, total bytes) of a ``datasets`` save_to_disk directory.

    The digest is :func:`connectors.storage.directory_digest`, the one definition
    of a directory shard's identity that quarantine verifies copies against.
    """
    from connectors.storage import directory_digest

    total = sum(size for _, _, size in hf_dir_files(fs, dir_path))
    return directory_digest(fs, dir_path), total


def hash_shard(ref: "ShardRef", storage_options: dict | None = None) -> str:
    """Hex SHA-256 of a shard's bytes without parsing it (streamed in 1 MiB chunks).

    For a file: the SHA-256 of its stored bytes (compressed files hash the
    compressed bytes). For an ``hf_dataset`` directory: see :func:`hash_hf_dir`.
    """
    fs, path = fsspec.core.url_to_fs(ref.uri, **(storage_options or {}))
    if ref.format == "hf_dataset":
        return hash_hf_dir(fs, path)[0]
    return hash_file(fs, path)[0]
