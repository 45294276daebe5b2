"""WebDataset tar shards: image + caption samples, streamed member by member.

A WebDataset shard is a plain tar whose members are grouped into samples by
*key*: the member path up to the first ``.`` of its file name
(``part/000123.jpg`` and ``part/000123.txt`` are the ``jpg`` and ``txt`` of
sample ``part/000123``); members of one sample are consecutive. Each sample
becomes one record with the columns

==========  ===========================================================
``id``      the sample key (so ``record_id`` is the key)
``image``   bytes of the first image member (``jpg``, ``jpeg``, ``png``,
            ``webp``, ``gif``, ``bmp``, ``tif``, ``tiff``); null when none
``caption`` the ``txt`` / ``caption`` / ``text`` member (UTF-8, invalid bytes
            replaced), else the ``caption``/``text``/``prompt`` field of the
            ``json`` member
``json``    the ``json`` member as text, when present
==========  ===========================================================

plus, when the column mapping asks for it, a column per other extension
(``--label-column cls`` reads the ``cls`` members as text).

Safety (DESIGN.md "never execute data"): the tar is read as a stream
(``tarfile`` ``r|`` mode) and every member is read into memory and never
extracted, so nothing is written to disk at all. A member whose name is
absolute, contains ``..`` or a NUL, or that is a symbolic or hard link, a
device, a FIFO or anything but a regular file, or that is larger than
:data:`MAX_MEMBER_BYTES`, is *rejected*: it becomes its own record (``id`` =
the member name, ``image`` = :func:`connectors.images.rejected_marker` with the
reason) which ``image.decode`` reports, and the rest of the shard goes on.
A tar that cannot be parsed at all (not a tar, truncated in a header) raises
:class:`ShardReadError` naming the byte offset. Memory is bounded by the batch:
at most ``batch_size`` samples and about :data:`MAX_BATCH_BYTES` of member data.
"""
from __future__ import annotations

import json
import posixpath
import tarfile
from typing import Iterator

import pyarrow as pa

from connectors.formats import WEBDATASET
from connectors.images import rejected_marker
from connectors.registry import ReadContext, register_reader
from connectors.limits import human_bytes
from connectors.streams import decompression_errors

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
CAPTION_EXTS = ("txt", "caption", "text")
CAPTION_JSON_KEYS = ("caption", "text", "prompt", "alt")
SEMANTIC = ("id", "image", "caption", "json")
MAX_MEMBER_BYTES = 64 << 20  # one member read into memory, at most
MAX_BATCH_BYTES = 64 << 20  # member bytes held per batch (a batch is cut early past this)

_CORRUPT = "the tar is corrupt or truncated; re-create the shard or remove it from the source"


def member_problem(m: tarfile.TarInfo) -> str | None:
    """Why a tar member must not be read, or ``None`` when it is a safe regular file."""
    name = m.name
    if "\x00" in name:
        return "member name contains a NUL byte"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute member path (would escape the archive's directory)"
    if ".." in norm.split("/"):
        return "member path contains '..' (would escape the archive's directory)"
    if m.issym():
        return f"symbolic link (to {m.linkname!r}); links are never followed"
    if m.islnk():
        return f"hard link (to {m.linkname!r}); links are never followed"
    if m.ischr() or m.isblk():
        return "device file"
    if m.isfifo():
        return "FIFO (named pipe)"
    if not m.isreg():
        return f"not a regular file (tar type {m.type!r})"
    return None


def split_key(name: str) -> tuple[str, str]:
    """(sample key, extension) of a member path, WebDataset style (extension lower-cased)."""
    while name.startswith("./"):
        name = name[2:]
    directory, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    key = posixpath.join(directory, stem) if directory else stem
    return key, ext.lower() if dot else ""


class _Batch:
    """Column buffers of the samples of one batch."""

    def __init__(self, extras: list[str] | None):
        self.extras = extras
        self.ids: list[str] = []
        self.images: list[bytes | None] = []
        self.captions: list[str | None] = []
        self.jsons: list[str | None] = []
        self.other: list[dict[str, bytes]] = []
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.ids)

    def add_sample(self, key: str, members: dict[str, bytes]) -> None:
        image = next((members[e] for e in IMAGE_EXTS if e in members), None)
        caption = next((_text(members[e]) for e in CAPTION_EXTS if e in members), None)
        raw_json = members.get("json")
        json_text = _text(raw_json) if raw_json is not None else None
        if caption is None and json_text:
            caption = _json_caption(json_text)
        self.ids.append(key)
        self.images.append(image)
        self.captions.append(caption.strip() if caption is not None else None)
        self.jsons.append(json_text)
        self.other.append({e: v for e, v in members.items()
                           if e not in IMAGE_EXTS and e not in CAPTION_EXTS and e != "json"})
        self.nbytes += sum(len(v) for v in members.values())

    def add_rejected(self, name: str, reason: str, unsafe: bool = True) -> None:
        self.ids.append(name)
        self.images.append(rejected_marker(f"tar member {name!r} rejected: {reason}", unsafe))
        self.captions.append(None)
        self.jsons.append(None)
        self.other.append({})

    def to_batch(self, wanted: frozenset[str]) -> pa.RecordBatch:
        if self.extras is None:  # decided once, from the first batch (the schema stays fixed)
            seen = sorted({e for o in self.other for e in o})
            self.extras = [e for e in seen if e in wanted and e not in SEMANTIC]
        arrays = [pa.array(self.ids, pa.string()), pa.array(self.images, pa.large_binary()),
                  pa.array(self.captions, pa.large_string()), pa.array(self.jsons, pa.large_string())]
        names = list(SEMANTIC)
        for ext in self.extras:
            arrays.append(pa.array([_text(o[ext]) if ext in o else None for o in self.other], pa.large_string()))
            names.append(ext)
        return pa.RecordBatch.from_arrays(arrays, names=names)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _json_caption(text: str) -> str | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    for k in CAPTION_JSON_KEYS:
        v = obj.get(k)
        if isinstance(v, str):
            return v
    return None


def _check_complete(ctx: ReadContext, size: int) -> None:
    """A tar ends with two zero blocks; ``tarfile`` stops quietly at a cut between members."""
    if size % 512:
        raise tarfile.ReadError(f"its size ({size:,} bytes) is not a whole number of 512-byte tar blocks")
    fs, path = ctx.fs_path()
    with fs.open(path, "rb") as f:
        f.seek(max(0, size - 1024))
        tail = f.read(1024)
    if len(tail) < 1024 or tail.count(0) != len(tail):
        raise tarfile.ReadError("it has no end-of-archive marker (two zero blocks)")


def _check_content(ctx: ReadContext, content: int, stored: int) -> None:
    """Refuse a tar whose members add up past the shard limit or expand like a bomb."""
    lim = ctx.limits
    if content > lim.max_shard_bytes:
        raise ctx.error(f"members add up to more than {human_bytes(lim.max_shard_bytes)} "
                        "(limits.max_shard_bytes); split the shard, or raise the limit in the policy "
                        "if the data is trusted")
    if content > lim.ratio_grace_bytes and content > lim.max_expansion_ratio * max(stored, 1):
        raise ctx.error(f"members add up to {human_bytes(content)} from {human_bytes(stored)} stored, "
                        f"over limits.max_expansion_ratio={lim.max_expansion_ratio:g}: a compressed tar "
                        "bomb; remove it, or raise the limit in the policy if the data is trusted")


@register_reader(WEBDATASET)
def read_webdataset(ctx: ReadContext) -> Iterator[pa.RecordBatch]:
    """Yield batches of samples; hash the tar's bytes while streaming it."""
    max_member = min(MAX_MEMBER_BYTES, ctx.limits.max_record_bytes)
    content = 0  # member bytes announced so far (tarfile may decompress a gzipped tar itself)
    with ctx.open() as (stream, hashing):
        try:
            tar = tarfile.open(fileobj=stream, mode="r|*")
        except (tarfile.TarError, *decompression_errors()) as exc:
            raise ctx.error(f"not a readable tar archive ({exc}); {_CORRUPT}", offset=0) from exc
        extras: list[str] | None = None
        batch = _Batch(extras)
        key: str | None = None
        members: dict[str, bytes] = {}

        def flush() -> Iterator[pa.RecordBatch]:
            nonlocal batch, extras
            if len(batch):
                out = batch.to_batch(ctx.wanted)
                extras = batch.extras
                if ctx.source_columns is None:
                    ctx.source_columns = out.schema.names
                batch = _Batch(extras)
                yield out

        try:
            for member in tar:
                if member.isdir():
                    continue
                content += max(member.size, 0)
                _check_content(ctx, content, hashing.bytes_read)
                problem = member_problem(member)
                if problem is not None:
                    batch.add_rejected(member.name, problem)
                elif member.size > max_member:  # not read: memory stays bounded
                    batch.add_rejected(member.name, f"member of {member.size:,} bytes, over the limit of "
                                                    f"{max_member:,} (limits.max_record_bytes); not read",
                                       unsafe=False)
                elif (split := split_key(member.name))[1] == "":
                    batch.add_rejected(member.name, "member name has no extension, so it belongs to no "
                                                    "sample (WebDataset names are KEY.EXTENSION)", unsafe=False)
                else:
                    mkey, ext = split
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    if len(data) != member.size:
                        raise tarfile.ReadError(f"member {member.name!r} is cut short: {len(data):,} of "
                                                f"{member.size:,} bytes")
                    if mkey != key:
                        if key is not None:
                            batch.add_sample(key, members)
                        key, members = mkey, {}
                    members.setdefault(ext, data)
                if len(batch) >= ctx.batch_size or batch.nbytes >= MAX_BATCH_BYTES:
                    yield from flush()
            hashing.drain()
            _check_complete(ctx, hashing.bytes_read)  # before the last batch: a cut tar fails the shard
            if key is not None:
                batch.add_sample(key, members)
            yield from flush()
        except (tarfile.TarError, EOFError, *decompression_errors()) as exc:
            raise ctx.error(f"corrupt tar data near byte {hashing.bytes_read:,} ({type(exc).__name__}: {exc}); "
                            f"{_CORRUPT}", offset=hashing.bytes_read) from exc
    ctx.sha256, ctx.bytes = hashing.hexdigest(), hashing.bytes_read
