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

from connectors.errors import ShardReadError
from connectors.limits import DEFAULT_LIMITS, ReadLimits, human_bytes

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


class BoundedReader(io.RawIOBase):
    """The content stream of a shard, refused once it passes a :class:`ReadLimits` limit.

    Counts the bytes it hands out (decompressed content) against
    ``max_shard_bytes`` and, for a compressed file, their ratio to the stored
    bytes read so far against ``max_expansion_ratio``: a decompression bomb
    is stopped after at most one chunk past the limit, never materialized.
    """

    def __init__(self, inner: BinaryIO, hashing: HashingReader, uri: str,
                 limits: ReadLimits, compression: str | None) -> None:
        super().__init__()
        self._inner = inner
        self._hashing = hashing
        self._uri = uri
        self._limits = limits
        self._compression = compression
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.total += n
            self._check()
        return n or 0

    def _check(self) -> None:
        lim = self._limits
        if self.total > lim.max_shard_bytes:
            what = "once decompressed " if self._compression else ""
            raise ShardReadError(
                self._uri, f"more than {human_bytes(lim.max_shard_bytes)} of content {what}"
                f"(limits.max_shard_bytes); split the shard, or raise the limit in the policy if "
                "the data is trusted", offset=self.total)
        stored = self._hashing.bytes_read
        if (self._compression and self.total > lim.ratio_grace_bytes
                and self.total > lim.max_expansion_ratio * max(stored, 1)):
            raise ShardReadError(
                self._uri, f"{self._compression} stream expands {self.total / max(stored, 1):,.0f}x "
                f"({human_bytes(stored)} stored -> more than {human_bytes(self.total)}), over "
                f"limits.max_expansion_ratio={lim.max_expansion_ratio:g}: a decompression bomb or "
                "degenerate data; remove it, or raise the limit in the policy if the data is trusted",
                offset=self.total)


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
def open_hashed(uri: str, compression: str | None, storage_options: dict | None = None,
                limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[tuple[BinaryIO, HashingReader]]:
    """Open ``uri`` for streaming: yields (content stream, hashing raw reader).

    The content stream raises :class:`ShardReadError` once it passes
    ``limits.max_shard_bytes`` or (compressed files) ``limits.max_expansion_ratio``.
    """
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    with fs.open(path, "rb") as raw:
        hashing = HashingReader(raw)
        # a plain file is read straight from the hashing reader (one buffer, not two)
        inner = hashing if compression is None else decompressing(hashing, compression)
        stream = io.BufferedReader(BoundedReader(inner, hashing, uri, limits, compression), CHUNK)
        try:
            yield stream, hashing
        finally:
            if compression is not None:
                inner.close()


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
        if info.get("type", "file") != "file":  # a FIFO or device would hang the read
            continue
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
