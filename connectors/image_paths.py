"""Image columns that hold *paths*: resolving them to bytes, safely.

An ``image`` column may hold paths instead of bytes: a string column, or a
``datasets`` Image struct ``{bytes, path}`` whose ``bytes`` is null (what
``Dataset.to_parquet`` writes for images stored as files). :class:`ImageResolver`
turns such a column into image bytes while batches are normalized.

Where a path may point (DESIGN.md "never execute data"):

* a **relative** path resolves against the shard's directory: the directory
  holding the shard file, or the directory shard itself (``datasets``
  ``save_to_disk``). It must stay inside that directory (or inside the image
  root, when one is given);
* an **absolute** path or an **fsspec URL** (``s3://...``, ``file://...``) is
  read only when the user names an *image root* (``image_root``: a local
  directory or a URL prefix) and the path lies inside it.

A path that leaves its directory with ``..``, goes through a symbolic link to
somewhere outside, or names anything but a regular file (a device, a FIFO, a
socket, a directory) is never read; neither is a file over
:data:`MAX_IMAGE_BYTES`. Such a record, and one whose file is missing or
unreadable, gets :func:`connectors.images.rejected_marker` bytes in its
``image`` field (as WebDataset's rejected tar members do), which ``image.decode``
reports per record with the path and what to do; the rest of the shard goes on.

Image files read this way are *not* part of the shard's SHA-256 (a Parquet
shard is hashed by its own bytes; an ``hf_dataset`` directory by every file
below it, so images stored inside the directory are covered, others are not).
"""
from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.errors import ShardReadError
from connectors.formats import HF_DATASET
from connectors.images import DEFAULT_LIMITS, rejected_marker, rejected_reason
from connectors.listing import ShardRef, is_local

#: bytes read of one image file, at most (the decoder's own byte limit)
MAX_IMAGE_BYTES = DEFAULT_LIMITS.max_bytes
#: resolved image bytes per normalized batch: a batch is cut early past this (memory stays bounded)
MAX_BATCH_BYTES = 64 << 20
#: rows resolved together (remote files of one group are fetched with one ``cat_ranges`` call)
GROUP_ROWS = 16

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_ROOT_HINT = "pass --image-root DIR_OR_URL naming a directory or URL prefix that holds the images"


def _string_like(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t))


def holds_paths(t: pa.DataType) -> bool:
    """Whether an image column of type ``t`` holds paths: a string column, or a
    struct with a string ``path`` field (the ``datasets`` Image layout)."""
    if pa.types.is_dictionary(t):
        return _string_like(t.value_type)
    if _string_like(t):
        return True
    if pa.types.is_struct(t):
        idx = t.get_field_index("path")
        return idx >= 0 and _string_like(t.field(idx).type)
    return False


@dataclass(frozen=True)
class _Place:
    """Where one path resolved to: a real local path, or a path on an fsspec file system."""

    path: str
    fs: fsspec.AbstractFileSystem | None = None  # None: local, read with os


class _Refused(Exception):
    """A path that is not read: ``reason`` (with what to do) and whether it looks like an attack."""

    def __init__(self, reason: str, unsafe: bool) -> None:
        super().__init__(reason)
        self.reason, self.unsafe = reason, unsafe


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return root == "" or path == root or path.startswith(root + "/")


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    p = fs.protocol
    return tuple(p) if isinstance(p, (tuple, list)) else (str(p),)


class ImageRoot:
    """A validated image root: a local directory or a URL prefix that resolved paths must stay inside."""

    def __init__(self, root: str, storage_options: dict | None = None) -> None:
        self.text = root
        if not isinstance(root, str) or not root.strip():
            raise ValueError(f"image root {root!r} is empty; {_ROOT_HINT}")
        if "::" in root:
            raise ValueError(f"image root {root!r}: chained fsspec URLs are not supported; "
                             "name one directory or URL prefix")
        try:
            fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
        except ImportError as exc:
            raise ValueError(f"image root {root!r}: {exc}; install the fsspec backend for that protocol") from exc
        self.local = is_local(fs)
        if self.local:
            lexical = os.path.normpath(os.path.abspath(path))
            if not os.path.isdir(lexical):
                raise ValueError(f"image root {root!r} is not an existing directory; {_ROOT_HINT}")
            # both spellings: paths in the data may name the root through a link to it
            self.lexical, self.real = lexical, os.path.realpath(lexical)
            self.fs, self.path = None, lexical
        else:
            self.fs, self.path = fs, path.rstrip("/")
            self.lexical = self.real = self.path


def check_image_root(root: str | None, storage_options: dict | None = None) -> str | None:
    """Validate an image root given on the command line (fail before the scan starts).

    Returns ``root`` unchanged; raises :class:`ValueError` naming it when it is
    empty, a chained URL, or a local path that is not an existing directory.
    """
    if root is not None:
        ImageRoot(root, storage_options)
    return root


class ImageResolver:
    """Resolve the path-valued ``image`` column of one shard's batches into bytes.

    ``image_root`` (optional) allows absolute paths and URLs inside it and
    relative paths that resolve inside it; see the module docstring for the rules.
    """

    def __init__(self, ref: ShardRef, storage_options: dict | None = None, image_root: str | None = None,
                 max_bytes: int | None = None, batch_bytes: int | None = None) -> None:
        self.uri = ref.uri
        # module constants read at call time (tests and callers may lower them)
        self.max_bytes = int(max_bytes if max_bytes is not None else MAX_IMAGE_BYTES)
        self.batch_bytes = int(batch_bytes if batch_bytes is not None else MAX_BATCH_BYTES)
        fs, path = fsspec.core.url_to_fs(ref.uri, **(storage_options or {}))
        base = path if ref.format == HF_DATASET else posixpath.dirname(path.rstrip("/"))
        self._base_fs = None if is_local(fs) else fs
        self.base = os.path.realpath(base) if self._base_fs is None else base.rstrip("/")
        try:
            self.root = ImageRoot(image_root, storage_options) if image_root is not None else None
        except (ValueError, ImportError, OSError) as exc:
            raise ShardReadError(ref.uri, f"cannot use the image root: {exc}") from exc

    # ------------------------------------------------------------------ batches

    def resolve(self, column: pa.Array | pa.ChunkedArray) -> Iterator[tuple[int, pa.Array]]:
        """Image bytes for ``column``, as consecutive pieces ``(rows, large_binary array)``.

        The pieces cover the column in order; a new piece starts once a piece
        holds :attr:`batch_bytes` of image data, so a batch of large images is
        cut into smaller batches.
        """
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        embedded, paths = _split(column)
        n = len(column)
        need = np.zeros(n, dtype=bool) if paths is None else ~np.asarray(pc.is_null(paths), dtype=bool)
        if embedded is not None:
            need &= np.asarray(pc.is_null(embedded), dtype=bool)
        if not need.any():  # every image is embedded (or null): nothing to read
            yield n, (embedded if embedded is not None else pa.nulls(n, pa.large_binary()))
            return
        values: list[bytes | None] = embedded.to_pylist() if embedded is not None else [None] * n
        path_list = paths.to_pylist()
        start, held, cache = 0, 0, {}
        for lo in range(0, n, GROUP_ROWS):
            hi = min(n, lo + GROUP_ROWS)
            rows = [i for i in range(lo, hi) if need[i]]
            for i, data in zip(rows, self._read_group([path_list[i] for i in rows], cache)):
                values[i] = data
            held += sum(len(v) for v in values[lo:hi] if v is not None)
            if held >= self.batch_bytes and hi < n:
                yield hi - start, pa.array(values[start:hi], pa.large_binary())
                start, held, cache = hi, 0, {}
        yield n - start, pa.array(values[start:], pa.large_binary())

    def _read_group(self, paths: list[str], cache: dict[tuple[int, str], bytes]) -> list[bytes]:
        """Bytes (or a rejection marker) for each path; one ``cat_ranges`` per remote file system."""
        out: list[bytes | None] = [None] * len(paths)
        remote: dict[int, list[tuple[int, _Place]]] = {}
        for k, p in enumerate(paths):
            try:
                place = self.locate(p)
            except _Refused as r:
                out[k] = _marker(p, r)
                continue
            except (OSError, ValueError) as exc:  # an odd path fails its record, never the shard
                out[k] = _marker(p, _Refused(f"cannot resolve it ({type(exc).__name__}: {exc}); fix the path", False))
                continue
            key = (id(place.fs), place.path)
            if key in cache:  # the same file named twice: read once
                out[k] = cache[key]
            elif place.fs is None:
                out[k] = self._read_local(p, place.path)
                if rejected_reason(out[k]) is None:  # a marker names this row's spelling of the path
                    cache[key] = out[k]
            else:
                remote.setdefault(id(place.fs), []).append((k, place))
        for items in remote.values():
            fs = items[0][1].fs
            wanted = list(dict.fromkeys(pl.path for _, pl in items))
            try:
                got = fs.cat_ranges(wanted, [0] * len(wanted), [self.max_bytes + 1] * len(wanted), on_error="return")
            except (OSError, ValueError) as exc:  # the whole call failed: every file of it is unread
                got = [exc] * len(wanted)
            by_path = dict(zip(wanted, got))
            for k, place in items:
                out[k] = self._checked_remote(paths[k], by_path[place.path])
                if rejected_reason(out[k]) is None:
                    cache[(id(fs), place.path)] = out[k]
        return out

    # ------------------------------------------------------------------ one path

    def locate(self, p: str) -> _Place:
        """Where path ``p`` from the data may be read, or raise ``_Refused`` with the reason."""
        if "\x00" in p:
            raise _Refused("the path contains a NUL byte", True)
        if not p.strip():
            raise _Refused("the path is empty; fix the record or remove it", False)
        if _URL.match(p) or p.startswith("/"):
            return self._locate_absolute(p)
        rel = p
        while rel.startswith("./"):
            rel = rel[2:]
        if self._base_fs is not None:
            allowed = [self.base]
            if self.root is not None and self.root.fs is not None and type(self.root.fs) is type(self._base_fs):
                allowed.append(self.root.path)
            return self._remote_place(self._base_fs, posixpath.join(self.base, rel), allowed, "the shard's directory")
        allowed = [(self.base, self.base)]
        if self.root is not None and self.root.fs is None:
            allowed.append((self.root.lexical, self.root.real))
        where = "the shard's directory" + (" or the image root" if len(allowed) > 1 else "")
        return self._local_place(os.path.join(self.base, rel), allowed, where)

    def _locate_absolute(self, p: str) -> _Place:
        if self.root is None:
            raise _Refused(f"absolute paths and URLs are not read without an image root; {_ROOT_HINT}", False)
        if "::" in p:
            raise _Refused("chained fsspec URLs are never read; store a plain path or URL", True)
        proto, rest = fsspec.core.split_protocol(p)
        if proto in (None, "file", "local"):
            if self.root.fs is not None:
                raise _Refused(f"a local path, but the image root {self.root.text!r} is not local; "
                               f"fix the path or {_ROOT_HINT}", True)
            return self._local_place(rest, [(self.root.lexical, self.root.real)], "the image root")
        if self.root.fs is None or proto not in _protocols(self.root.fs):
            raise _Refused(f"a {proto}:// URL outside the image root {self.root.text!r}; "
                           f"fix the path or {_ROOT_HINT}", True)
        return self._remote_place(self.root.fs, self.root.fs._strip_protocol(p), [self.root.path], "the image root")

    def _local_place(self, joined: str, allowed: list[tuple[str, str]], where: str) -> _Place:
        lexical = os.path.normpath(joined)
        if not any(_inside(lexical, lex) or _inside(lexical, real) for lex, real in allowed):
            why = "'..' leads" if ".." in joined.split("/") else "it lies"
            raise _Refused(f"{why} outside {where} ({lexical!r}); paths never leave it "
                           f"(fix the path, or {_ROOT_HINT})", True)
        real = os.path.realpath(joined)
        if not any(_inside(real, r) for _, r in allowed):  # a symbolic link on the way
            raise _Refused(f"a symbolic link leads outside {where} (to {real!r}); links out of it are never "
                           "followed", True)
        return _Place(real)

    def _remote_place(self, fs: fsspec.AbstractFileSystem, path: str, allowed: list[str], where: str) -> _Place:
        # no normalization on object stores ("a/../b" could be a real key): any '..' is refused
        if ".." in path.split("/"):
            raise _Refused(f"the path contains '..'; paths never leave {where}", True)
        if not any(_inside(path, a) for a in allowed):
            raise _Refused(f"it lies outside {where}; fix the path or {_ROOT_HINT}", True)
        return _Place(path, fs)

    def _read_local(self, p: str, real: str) -> bytes:
        try:
            st = os.stat(real)
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(st.st_mode)
            if st.st_size > self.max_bytes:
                raise _Refused(f"file of {st.st_size:,} bytes, over the limit of {self.max_bytes:,}; not read", False)
            # O_NOFOLLOW / O_NONBLOCK: a file swapped for a link or a FIFO since the checks
            # above is neither followed nor waited on (fstat below checks again)
            flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
            with os.fdopen(os.open(real, flags), "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                if not stat.S_ISREG(mode):
                    raise _not_regular(mode)
                data = f.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise _Refused(f"file grew past the limit of {self.max_bytes:,} bytes while read; not read", False)
            return data
        except _Refused as r:
            return _marker(p, r)
        except FileNotFoundError:
            return _marker(p, _Refused(f"file not found ({real!r}); restore the file or fix the path", False))
        except OSError as exc:
            return _marker(p, _Refused(f"cannot read {real!r} ({type(exc).__name__}: {exc}); "
                                       "check that it exists and is readable", False))

    def _checked_remote(self, p: str, got: bytes | BaseException) -> bytes:
        if isinstance(got, (FileNotFoundError, IsADirectoryError)):
            return _marker(p, _Refused("no such file; restore the file or fix the path", False))
        if isinstance(got, BaseException):
            return _marker(p, _Refused(f"cannot read it ({type(got).__name__}: {got}); check the URL and the "
                                       "storage options", False))
        if len(got) > self.max_bytes:
            return _marker(p, _Refused(f"file over the limit of {self.max_bytes:,} bytes; not read", False))
        return bytes(got)


def _split(column: pa.Array) -> tuple[pa.Array | None, pa.Array | None]:
    """(embedded bytes, paths) of an image column (string, or struct with ``bytes``/``path``)."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not pa.types.is_struct(column.type):
        return None, pc.cast(column, pa.large_string())
    # a null struct has null children only after flattening with its validity
    fields = {column.type.field(i).name: f for i, f in enumerate(column.flatten())}
    embedded = fields.get("bytes")
    if embedded is not None:
        embedded = pa.nulls(len(column), pa.large_binary()) if pa.types.is_null(embedded.type) \
            else pc.cast(embedded, pa.large_binary())
    path = fields.get("path")
    return embedded, (pc.cast(path, pa.large_string()) if path is not None else None)


def _not_regular(mode: int) -> _Refused:
    if stat.S_ISDIR(mode):
        return _Refused("a directory, not an image file; fix the path", False)
    kind = ("FIFO (named pipe)" if stat.S_ISFIFO(mode) else "device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return _Refused(f"{kind}; only regular files are read", True)


def _marker(p: str, refused: _Refused) -> bytes:
    shown = p if len(p) <= 300 else p[:300] + "..."
    return rejected_marker(f"image path {shown!r} not read: {refused.reason}", refused.unsafe)
