"""Listing the shards of a scan source (file, directory, glob or fsspec URL)."""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fsspec

from connectors.errors import SourceError
from connectors.formats import (
    HF_DATASET,
    HF_DICT,
    FileFormat,
    detect_format,
    is_hf_dataset_dir,
    known_suffixes,
)

log = logging.getLogger(__name__)

# directory walks skip names starting with these (as pyarrow.dataset does):
# hidden files, `_SUCCESS`, `_delta_log/`, editor and notebook leftovers
IGNORED_PREFIXES = (".", "_")
_MAGIC = re.compile(r"[*?\[]")
_ETAG_KEYS = ("ETag", "etag", "md5Hash", "md5", "content_md5")
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


@dataclass(frozen=True)
class ShardRef:
    """One shard of a source.

    Attributes:
        name: stable shard name: the path relative to the source root (the
            file or directory name when the source is that one shard).
        uri: absolute local path or full fsspec URL of the file (or of the
            directory, for ``hf_dataset``).
        format: ``"parquet"``, ``"jsonl"``, ``"csv"`` or ``"hf_dataset"``.
        size: bytes of the file (for an ``hf_dataset`` directory: of all its files).
        fingerprint: cheap change detector read from the listing, without
            reading content: size plus ETag/MD5 when the store gives one, else
            size plus modification time.
    """

    name: str
    uri: str
    format: str
    size: int
    fingerprint: str

    @property
    def compression(self) -> str | None:
        """``"gzip"``, ``"zstd"`` or ``None``, from the file suffix."""
        if self.format == HF_DATASET:
            return None
        found = detect_format(self.uri)
        return found.compression if found else None


def list_shards(source: str, storage_options: dict | None = None,
                exclude: list[str] | tuple[str, ...] = (), skipped: list[str] | None = None) -> list[ShardRef]:
    """List the shards of ``source``, sorted by name.

    ``source`` is a file, a directory (walked recursively; names starting with
    ``.`` or ``_`` are skipped), a glob (``data/*.parquet``,
    ``s3://b/x/**/*.jsonl``) or an fsspec URL of any of these. Files count when
    their suffix is known (see :func:`connectors.formats.known_suffixes`); a
    directory in Hugging Face ``save_to_disk`` layout is one ``hf_dataset``
    shard, and each split of a saved ``DatasetDict`` is one shard.

    Only regular files are shards: a FIFO, socket or device (or a link to
    one) would hang or never end a read, so it is skipped with a warning.
    ``exclude`` names local directories whose content is never a shard when
    they lie inside the source (the scan's quarantine, state and run
    directories: a quarantined copy must not come back as a new shard).
    What was skipped, and why, is logged and appended to ``skipped``.

    Raises:
        SourceError: the source does not exist, cannot be opened, or holds no shard.
    """
    fs, path = _open_fs(source, storage_options)
    lister = _Lister(fs, source, exclude)
    if has_magic(path) and not _safe(fs.exists, path):
        refs = lister.from_glob(path)
    elif _safe(fs.isdir, path):
        refs = lister.from_dir(path, path)
    elif _safe(fs.isfile, path):
        refs = [lister.from_file(path)]
    elif _safe(fs.exists, path):
        raise SourceError(f"source {source!r} is not a regular file nor a directory (a FIFO, socket "
                          "or device, which would never end a read); point at the data files")
    else:
        raise SourceError(
            f"source {source!r} does not exist (looked for {path!r} on {_protocol(fs)}); "
            "check the path or URL, and the storage options for object stores"
        )
    for note in lister.skipped:
        log.warning("%s", note)
    if skipped is not None:
        skipped.extend(lister.skipped)
    if not refs:
        raise SourceError(lister.nothing_found_message(path))
    return sorted(refs, key=lambda r: r.name)


def _open_fs(source: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    if not isinstance(source, (str, os.PathLike)):
        kind = f"{type(source).__module__.split('.')[0]}.{type(source).__name__}"
        raise SourceError(f"the source is a {kind} object, not a path: pass it to integrity.scan() in Python "
                          f"(it takes datasets and data frames), or write it to disk and give the path")
    source = os.fspath(source)
    if not source.strip():
        raise SourceError("the source is an empty string; give a file, directory, glob or URL")
    try:
        return fsspec.core.url_to_fs(source, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise SourceError(
            f"cannot open source {source!r}: {exc}; install the fsspec backend for "
            "that protocol (e.g. s3fs, gcsfs) or fix the URL"
        ) from exc


def _safe(check, path: str) -> bool:
    try:
        return bool(check(path))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return False


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else str(proto)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local file system (URIs are then plain absolute paths)."""
    return _protocol(fs) in ("file", "local")


def fingerprint(info: dict[str, Any]) -> str:
    """Cheap change detector from an fsspec ``info`` dict: size + ETag/MD5, else size + mtime."""
    size = info.get("size")
    for key in _ETAG_KEYS:
        value = info.get(key)
        if value:
            return f"size={size};etag={str(value).strip(chr(34))}"
    for key in _MTIME_KEYS:
        value = info.get(key)
        if value is not None:
            if isinstance(value, datetime):
                value = value.timestamp()
            return f"size={size};mtime={value}"
    return f"size={size}"


def has_magic(text: str) -> bool:
    """Whether ``text`` holds a glob wildcard (``*``, ``?`` or ``[``)."""
    return _MAGIC.search(text) is not None


def _relative(path: str, root: str) -> str:
    root = root.rstrip("/")
    if path == root:
        return ""
    if root and path.startswith(root + "/"):
        return path[len(root) + 1 :]
    if not root:
        return path.lstrip("/")
    raise ValueError(f"{path!r} is not under {root!r}")


def _ignored(rel: str) -> bool:
    return any(part.startswith(IGNORED_PREFIXES) for part in rel.split("/") if part)


def _parent_text(text: str) -> str:
    """``text`` (a path or URL) without its last component."""
    return text.rstrip("/").rsplit("/", 1)[0] if "/" in text.rstrip("/") else ""


def _glob_root(text: str) -> str:
    """The part of a path or URL before its first component holding a wildcard."""
    parts = text.split("/")
    for i, part in enumerate(parts):
        if has_magic(part):
            return "/".join(parts[:i])
    return text


class _Lister:
    """Turns fsspec listings into :class:`ShardRef` objects for one source."""

    def __init__(self, fs: fsspec.AbstractFileSystem, source: str, exclude=()) -> None:
        self.fs = fs
        self.source = source
        self.local = is_local(fs)
        self.seen_files: list[str] = []
        self.skipped: list[str] = []
        # exclusions are local directories; object-store sources cannot hold them
        self.exclude = [os.path.abspath(os.fspath(d)).replace(os.sep, "/").rstrip("/")
                        for d in exclude] if self.local else []

    def _regular(self, files: dict[str, dict]) -> dict[str, dict]:
        """``files`` without entries that are not regular files (FIFOs, devices, sockets), noted."""
        odd = sorted(p for p, i in files.items() if i.get("type") not in ("file", "directory"))
        if odd:
            self.skipped.append(f"skipped {len(odd)} entr{'y' if len(odd) == 1 else 'ies'} that "
                                f"{'is' if len(odd) == 1 else 'are'} not a regular file (a FIFO, socket or "
                                f"device, or a link to one): {', '.join(odd[:10])}"
                                + (" ..." if len(odd) > 10 else ""))
        drop = set(odd)
        return {p: i for p, i in files.items() if p not in drop}

    def _without_excluded(self, files: dict[str, dict], dir_path: str) -> dict[str, dict]:
        """``files`` without those inside an excluded directory that lies inside ``dir_path``."""
        inside = [d for d in self.exclude if d.startswith(dir_path.rstrip("/") + "/")]
        if not inside:
            return files
        kept = {p: i for p, i in files.items() if not _inside(p, inside)}
        if len(kept) < len(files):
            self.skipped.append(f"skipped {len(files) - len(kept)} file(s) in the scan's own directories "
                                f"inside the source ({', '.join(inside)}): quarantined copies, state and "
                                "run outputs are not shards")
        return kept

    # -- naming -------------------------------------------------------------
    def _uri(self, path: str, root_path: str, root_text: str) -> str:
        if self.local:
            return path
        rel = _relative(path, root_path)
        return root_text.rstrip("/") + "/" + rel if rel else root_text

    # -- sources ------------------------------------------------------------
    def from_file(self, path: str) -> ShardRef:
        """The shard for one file given directly as the source."""
        found = detect_format(path)
        if found is None:
            raise SourceError(
                f"source {self.source!r} is a file without a known shard suffix; "
                f"known suffixes: {', '.join(known_suffixes())}; rename the file or "
                "point at a directory of shards"
            )
        root = posixpath.dirname(path)
        return self._file_ref(path, self.fs.info(path), found, root, _parent_text(self.source))

    def from_dir(self, dir_path: str, root_path: str, root_text: str | None = None) -> list[ShardRef]:
        """Shards under ``dir_path``, named relative to ``root_path``."""
        root_text = self.source if root_text is None else root_text
        files = self._without_excluded(self._regular(self.fs.find(dir_path, detail=True)), dir_path)
        self.seen_files.extend(files)
        hf_dirs = _hf_dirs(files)
        refs = [self._hf_ref(d, files, root_path, root_text) for d in hf_dirs
                if not _ignored(_relative(d, dir_path))]
        for path in files:
            rel = _relative(path, dir_path)
            if _ignored(rel) or _inside(path, hf_dirs) or _is_dict_metadata(path, hf_dirs):
                continue
            found = detect_format(path)
            if found is not None:
                refs.append(self._file_ref(path, files[path], found, root_path, root_text))
        return refs

    def from_glob(self, pattern: str) -> list[ShardRef]:
        """Shards matched by a glob; matched directories are walked."""
        root_path = _glob_root(pattern)
        root_text = _glob_root(self.source)
        matches = self._without_excluded(self._regular(self.fs.glob(pattern, detail=True)), root_path)
        self.seen_files.extend(p for p, i in matches.items() if i.get("type") != "directory")
        refs: list[ShardRef] = []
        for path, info in sorted(matches.items()):
            if info.get("type") == "directory":
                refs.extend(self.from_dir(path, root_path, root_text))
                continue
            if _is_hf_file(self.fs, path):
                continue
            found = detect_format(path)
            if found is not None:
                refs.append(self._file_ref(path, info, found, root_path, root_text))
        unique = {r.uri: r for r in refs}
        return list(unique.values())

    # -- helpers ------------------------------------------------------------
    def _file_ref(self, path: str, info: dict, found: FileFormat, root_path: str, root_text: str) -> ShardRef:
        name = _relative(path, root_path) or posixpath.basename(path)
        return ShardRef(name, self._uri(path, root_path, root_text), found.format,
                        int(info.get("size") or 0), fingerprint(info))

    def _hf_ref(self, hf_dir: str, files: dict[str, dict], root_path: str, root_text: str) -> ShardRef:
        members = {p: i for p, i in files.items() if p.startswith(hf_dir.rstrip("/") + "/")}
        size = sum(int(i.get("size") or 0) for i in members.values())
        lines = "\n".join(f"{_relative(p, hf_dir)}\t{fingerprint(members[p])}" for p in sorted(members))
        digest = hashlib.sha256(lines.encode()).hexdigest()[:32]
        name = _relative(hf_dir, root_path) or posixpath.basename(hf_dir.rstrip("/"))
        fp = f"size={size};files={len(members)};listing={digest}"
        return ShardRef(name, self._uri(hf_dir, root_path, root_text), HF_DATASET, size, fp)

    def nothing_found_message(self, path: str) -> str:
        """The SourceError message for a source that exists (or globs) but holds no shard."""
        sample = ", ".join(repr(posixpath.basename(p)) for p in self.seen_files[:5])
        found = f"found {len(self.seen_files)} file(s)" + (f" (e.g. {sample})" if sample else "")
        return (
            f"source {self.source!r} holds no shard: {found}, none with a known suffix "
            f"({', '.join(known_suffixes())}) and no Hugging Face save_to_disk directory "
            "(state.json + dataset_info.json/*.arrow); point at the data files, fix the "
            "glob, or rename the files"
        )


def _hf_dirs(files: dict[str, dict]) -> list[str]:
    """Outermost directories among ``files``' parents that are save_to_disk layouts."""
    names_by_dir: dict[str, set[str]] = {}
    for path in files:
        names_by_dir.setdefault(posixpath.dirname(path), set()).add(posixpath.basename(path))
    found = sorted(d for d, names in names_by_dir.items() if is_hf_dataset_dir(names))
    outer: list[str] = []
    for d in found:
        if not _inside(d, outer):
            outer.append(d)
    return outer


def _inside(path: str, dirs: list[str]) -> bool:
    return any(path.startswith(d.rstrip("/") + "/") for d in dirs)


def _is_dict_metadata(path: str, hf_dirs: list[str]) -> bool:
    """``dataset_dict.json`` next to split directories is metadata, not a shard."""
    if posixpath.basename(path) != HF_DICT:
        return False
    parent = posixpath.dirname(path)
    return any(posixpath.dirname(d) == parent for d in hf_dirs)


def _is_hf_file(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether a glob-matched file is save_to_disk metadata (or lies in such a directory)."""
    parent = posixpath.dirname(path)
    names = _names(fs, parent)
    if is_hf_dataset_dir(names):
        return True
    if posixpath.basename(path) != HF_DICT:
        return False
    return any(is_hf_dataset_dir(_names(fs, posixpath.join(parent, n))) for n in names)


def _names(fs: fsspec.AbstractFileSystem, dir_path: str) -> set[str]:
    try:
        return {posixpath.basename(p.rstrip("/")) for p in fs.ls(dir_path, detail=False)}
    except (FileNotFoundError, NotADirectoryError):
        return set()
