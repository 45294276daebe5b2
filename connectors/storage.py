"""Storage operations on local paths and fsspec URLs (``memory://``, ``s3://``, ...).

This module knows storage only: it hashes, copies, removes and inspects files
and directories. It knows nothing about checks, verdicts or the ledger; the
crash-safe quarantine protocol built on top of it lives in
:mod:`integrity.engine.quarantine`.

Content hash (``sha256_of``)
----------------------------
* **file**: SHA-256 of the file's bytes, streamed in 1 MiB chunks.
* **directory** (a Hugging Face ``save_to_disk`` dataset is a directory
  shard): SHA-256 over every regular file below the directory, taken in
  ascending order of its path relative to the directory (POSIX separators,
  compared as Python strings, i.e. by code point), feeding for each file::

      relative_path.encode("utf-8") + b"\\0" + file_bytes + b"\\0"

  Directories themselves (including empty ones) contribute nothing. The
  digest therefore does not depend on the directory's own name or location,
  only on its relative layout and its bytes. :func:`directory_digest` is the
  one implementation; readers that hash directory shards must reuse it.

Atomic copies (``copy``)
------------------------
``copy(src, dst)`` writes to ``dst + ".partial"`` and renames that to ``dst``
only when every byte is written (and, on local disks, fsync'ed), so a
half-written copy never carries the final name. A stale ``.partial`` left by
a crash is discarded by the next copy. On object stores the rename is a
server-side copy + delete, so the caller must still verify the destination's
hash before trusting it (the quarantine protocol always does).

Every failure is raised as :class:`StorageError`, whose message names the
path and says what to do.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
from typing import Any, BinaryIO, Iterator, Mapping

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "CHUNK_SIZE",
    "PARTIAL_SUFFIX",
    "StorageError",
    "copy",
    "directory_digest",
    "exists",
    "fingerprint",
    "file_digest",
    "get_fs",
    "is_dir",
    "join",
    "remove",
    "upload_dir",
    "remove_empty_parents",
    "sha256_of",
    "size",
]

CHUNK_SIZE = 1 << 20  # 1 MiB
PARTIAL_SUFFIX = ".partial"


class StorageError(Exception):
    """A storage operation failed. ``uri`` is the path involved; the message says what to do."""

    def __init__(self, uri: str, message: str):
        self.uri = uri
        super().__init__(f"{uri}: {message}")


# ---------------------------------------------------------------------------
# helpers


def get_fs(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the protocol-less path for ``uri``.

    Local paths (str or ``os.PathLike``) map to the local filesystem with an
    absolute POSIX path.
    """
    uri_s = os.fspath(uri)
    with _errors(uri_s, "opening its filesystem"):
        return url_to_fs(uri_s, **dict(storage_options or {}))


def join(base: str, *parts: str) -> str:
    """Join URI/path components with ``/`` (works for local paths and URLs)."""
    out = os.fspath(base).rstrip("/")
    for p in parts:
        p = p.strip("/")
        if p:
            out = f"{out}/{p}"
    return out


@contextlib.contextmanager
def _errors(uri: str, doing: str) -> Iterator[None]:
    """Translate low-level exceptions into a :class:`StorageError` naming ``uri``."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as e:
        raise StorageError(uri, f"not found while {doing}; check that the path exists and is spelled correctly ({e})") from e
    except IsADirectoryError as e:
        raise StorageError(uri, f"is a directory where a file was expected while {doing} ({e})") from e
    except NotADirectoryError as e:
        raise StorageError(uri, f"a path component is not a directory while {doing} ({e})") from e
    except PermissionError as e:
        raise StorageError(uri, f"permission denied while {doing}; check file permissions or storage credentials ({e})") from e
    except ImportError as e:
        raise StorageError(
            uri,
            f"no fsspec backend installed for this URL's protocol while {doing}; install it (e.g. `pip install s3fs` for s3://, `gcsfs` for gs://) ({e})",
        ) from e
    except ValueError as e:
        raise StorageError(uri, f"invalid path or storage options while {doing} ({e})") from e
    except OSError as e:
        raise StorageError(uri, f"I/O error while {doing}; check the storage is reachable and has free space, then retry ({e})") from e


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _relative_files(fs: fsspec.AbstractFileSystem, path: str) -> list[tuple[str, str]]:
    """Sorted ``(relative posix path, full path)`` of every file below directory ``path``."""
    root = path.rstrip("/")
    out: list[tuple[str, str]] = []
    found = fs.find(root, withdirs=False, detail=True)
    for full in (p for p, info in found.items() if info.get("type", "file") == "file"):  # FIFOs would hang
        full_s = str(full).replace("\\", "/")
        prefix = root + "/"
        if not full_s.startswith(prefix):
            # some backends strip a leading "/" or protocol: fall back to a posix relpath
            rel = posixpath.relpath(full_s, root)
        else:
            rel = full_s[len(prefix):]
        out.append((rel, full))
    out.sort(key=lambda t: t[0])
    return out


def _update_from_file(h: "hashlib._Hash", fs: fsspec.AbstractFileSystem, path: str) -> None:
    with fs.open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK_SIZE)
            if not chunk:
                break
            h.update(chunk)


# ---------------------------------------------------------------------------
# hashing


def file_digest(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Hex SHA-256 of one file's bytes, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with _errors(path, "hashing the file"):
        _update_from_file(h, fs, path)
    return h.hexdigest()


def directory_digest(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Hex SHA-256 of a directory shard (see the module docstring for the exact definition).

    For every regular file below ``path``, sorted by its POSIX path relative to
    ``path``, the digest is fed ``rel.encode("utf-8") + b"\\0" + bytes + b"\\0"``.
    ``fs``/``path`` are what :func:`get_fs` returns (path without protocol).
    """
    h = hashlib.sha256()
    with _errors(path, "hashing the directory"):
        for rel, full in _relative_files(fs, path):
            h.update(rel.encode("utf-8"))
            h.update(b"\0")
            _update_from_file(h, fs, full)
            h.update(b"\0")
    return h.hexdigest()


def sha256_of(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> str:
    """Hex SHA-256 of a file, or of a directory shard by :func:`directory_digest`."""
    uri_s = os.fspath(uri)
    fs, path = get_fs(uri_s, storage_options)
    with _errors(uri_s, "hashing"):
        if fs.isdir(path):
            return directory_digest(fs, path)
        if not fs.exists(path):
            raise StorageError(uri_s, "not found while hashing; check that the path exists and is spelled correctly")
        return file_digest(fs, path)


# ---------------------------------------------------------------------------
# inspection


def exists(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether a file or directory exists at ``uri``."""
    uri_s = os.fspath(uri)
    fs, path = get_fs(uri_s, storage_options)
    with _errors(uri_s, "checking whether it exists"):
        return bool(fs.exists(path))


def is_dir(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``uri`` is a directory (a prefix on object stores)."""
    uri_s = os.fspath(uri)
    fs, path = get_fs(uri_s, storage_options)
    with _errors(uri_s, "checking whether it is a directory"):
        return bool(fs.isdir(path))


def size(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> int:
    """Size in bytes of a file, or the total of all files below a directory."""
    uri_s = os.fspath(uri)
    fs, path = get_fs(uri_s, storage_options)
    with _errors(uri_s, "reading its size"):
        if fs.isdir(path):
            return sum(int(fs.size(full) or 0) for _, full in _relative_files(fs, path))
        if not fs.exists(path):
            raise StorageError(uri_s, "not found while reading its size; check that the path exists")
        return int(fs.size(path) or 0)


def _info_fingerprint(info: Mapping[str, Any]) -> str:
    parts = [f"size={info.get('size')}"]
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        if info.get(key) is not None:
            parts.append(f"{key}={info[key]}")
            break
    for key in ("ETag", "etag", "md5Hash", "md5", "generation", "version_id", "VersionId"):
        if info.get(key) is not None:
            parts.append(f"{key}={info[key]}")
            break
    return ";".join(parts)


def fingerprint(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> str:
    """A cheap change detector for ``uri``: size + modification time / ETag from the storage metadata.

    Equal fingerprints mean "very probably unchanged" (good enough to reuse a
    memoized hash); different fingerprints mean "possibly changed". For a
    directory it summarizes every file's relative path and fingerprint.
    """
    uri_s = os.fspath(uri)
    fs, path = get_fs(uri_s, storage_options)
    with _errors(uri_s, "reading its metadata"):
        if fs.isdir(path):
            h = hashlib.sha256()
            n = 0
            for rel, full in _relative_files(fs, path):
                h.update(rel.encode("utf-8") + b"\0" + _info_fingerprint(fs.info(full)).encode() + b"\0")
                n += 1
            return f"dir;files={n};digest={h.hexdigest()}"
        return _info_fingerprint(fs.info(path))


# ---------------------------------------------------------------------------
# mutation


def _fsync_dir(path: str) -> None:
    """fsync a local directory so a rename in it survives power loss (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_file(src_fs, src: str, dst_fs, dst: str) -> None:
    parent = posixpath.dirname(dst.rstrip("/"))
    if parent:
        dst_fs.makedirs(parent, exist_ok=True)
    with src_fs.open(src, "rb") as fin:
        if _is_local(dst_fs):
            with open(dst, "wb") as fout:
                _pump(fin, fout)
                fout.flush()
                os.fsync(fout.fileno())
        else:
            with dst_fs.open(dst, "wb") as fout:
                _pump(fin, fout)


def _pump(fin: BinaryIO, fout: BinaryIO) -> None:
    while True:
        chunk = fin.read(CHUNK_SIZE)
        if not chunk:
            break
        fout.write(chunk)


def _rm(fs, path: str) -> None:
    if fs.isdir(path):
        fs.rm(path, recursive=True)
    else:
        fs.rm(path)


def copy(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    dst_storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Copy a file or a directory from ``src`` to ``dst`` atomically (see module docstring).

    The bytes go to ``dst + ".partial"`` first (a stale partial from an earlier
    crash is removed) and are renamed to ``dst`` once complete. ``src`` and
    ``dst`` may live on different filesystems; ``dst_storage_options``
    defaults to ``storage_options``. If ``dst`` already exists, raises
    :class:`StorageError` unless ``overwrite`` (then the old ``dst`` is
    replaced only after the new copy is complete).
    """
    src_s, dst_s = os.fspath(src), os.fspath(dst)
    src_fs, src_path = get_fs(src_s, storage_options)
    dst_fs, dst_path = get_fs(dst_s, dst_storage_options if dst_storage_options is not None else storage_options)
    partial = dst_path.rstrip("/") + PARTIAL_SUFFIX

    with _errors(src_s, f"copying to {dst_s}"):
        if not src_fs.exists(src_path):
            raise StorageError(src_s, f"not found while copying to {dst_s}; check that the source exists")
        src_is_dir = src_fs.isdir(src_path)
    with _errors(dst_s, f"copying from {src_s}"):
        if dst_fs.exists(dst_path) and not overwrite:
            raise StorageError(dst_s, f"already exists; refusing to overwrite it while copying from {src_s} (remove it first or pass overwrite=True)")
        if dst_fs.exists(partial):
            _rm(dst_fs, partial)  # leftover of an interrupted copy
        try:
            if src_is_dir:
                for rel, full in _relative_files(src_fs, src_path):
                    _copy_file(src_fs, full, dst_fs, f"{partial}/{rel}")
                if not dst_fs.exists(partial):  # empty directory: still produce one
                    dst_fs.makedirs(partial, exist_ok=True)
            else:
                _copy_file(src_fs, src_path, dst_fs, partial)
        except OSError as e:
            # a failed copy (a full disk) leaves no partial behind to fill the disk further
            with contextlib.suppress(OSError):
                if dst_fs.exists(partial):
                    _rm(dst_fs, partial)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(dst_s, f"no space left on the device while copying from {src_s}; the partial copy "
                                          "was removed and the original is untouched; free space, then run "
                                          "`integrity quarantine resume` (or the scan again)") from e
            raise

        if dst_fs.exists(dst_path):  # overwrite=True: the new copy is complete, drop the old one
            _rm(dst_fs, dst_path)
        if _is_local(dst_fs):
            os.replace(partial, dst_path)
            _fsync_dir(os.path.dirname(dst_path.rstrip("/")) or ".")
        else:
            dst_fs.mv(partial, dst_path, recursive=src_is_dir)


def remove(uri: str | os.PathLike, *, missing_ok: bool = False, storage_options: Mapping[str, Any] | None = None) -> None:
    """Remove a file or a directory (recursively).

    Raises :class:`StorageError` when ``uri`` does not exist, unless ``missing_ok``.
    """
    uri_s = os.fspath(uri)
    fs, path = get_fs(uri_s, storage_options)
    with _errors(uri_s, "removing it"):
        if not fs.exists(path):
            if missing_ok:
                return
            raise StorageError(uri_s, "not found while removing it; nothing to remove (check the path)")
        _rm(fs, path)
        if _is_local(fs):
            _fsync_dir(os.path.dirname(path.rstrip("/")) or ".")


def remove_empty_parents(uri: str | os.PathLike, levels: int, storage_options: Mapping[str, Any] | None = None) -> None:
    """Best effort: remove up to ``levels`` now-empty parent directories of ``uri`` (local disks only;
    object stores have no empty directories). Never removes a non-empty directory; never raises."""
    try:
        fs, path = get_fs(uri, storage_options)
        if not _is_local(fs):
            return
        parent = os.path.dirname(path.rstrip("/"))
        for _ in range(max(0, int(levels))):
            os.rmdir(parent)  # fails (and stops) when not empty
            parent = os.path.dirname(parent)
    except (OSError, StorageError):
        return


def upload_dir(local: str | os.PathLike, uri: str, skip: tuple[str, ...] = ()) -> int:
    """Copy every file below the local directory ``local`` to the same relative path under
    ``uri`` (a directory or URL prefix), leaving out top-level entries named in ``skip``;
    returns the number of files copied. Credentials come from the backend's usual
    environment and configuration (``AWS_*`` variables, ``~/.aws``, ...)."""
    fs, root = get_fs(uri)
    base = os.fspath(local)
    copied = 0
    with _errors(uri, "uploading the run directory"):
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, base)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d not in skip]
                filenames = [f for f in filenames if f not in skip]
            for name in sorted(filenames):
                rel = name if rel_dir == "." else posixpath.join(rel_dir.replace(os.sep, "/"), name)
                fs.put_file(os.path.join(dirpath, name), join(root, rel))
                copied += 1
    return copied
