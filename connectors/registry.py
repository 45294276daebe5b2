"""The format reader registry: one raw reader per shard format.

A raw reader is ``reader(ctx) -> Iterator[pa.RecordBatch]``. It yields
batches in the *source's* column names, each of at most ``ctx.batch_size``
rows (it may first yield a 0-row batch carrying the schema), holds memory
bounded by the batch size, raises :class:`ShardReadError` for bad input, and
sets ``ctx.sha256`` / ``ctx.bytes`` once it has read the whole shard.
:class:`connectors.readers.ShardReader` maps its batches onto the normalized
schema. To add a format, write such a function, decorate it with
``@register_reader("myformat")``, import its module in
``connectors/readers.py`` and add its suffix to ``connectors.formats``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import fsspec
import pyarrow as pa

from connectors.errors import ShardReadError
from connectors.limits import DEFAULT_LIMITS, ReadLimits
from connectors.listing import ShardRef, is_local


@dataclass
class ReadContext:
    """What a raw reader gets, and what it reports back."""

    ref: ShardRef
    batch_size: int
    storage_options: dict = field(default_factory=dict)
    wanted: frozenset[str] = frozenset()  # source columns the mapping refers to (projection hint)
    text_columns: frozenset[str] = frozenset()  # source columns mapped to text fields (parser hint)
    source_columns: list[str] | None = None  # set by the reader: every column of the source
    sha256: str = ""  # set by the reader once the whole shard is read
    bytes: int = 0  # set with sha256: bytes hashed
    limits: ReadLimits = DEFAULT_LIMITS  # memory and time bounds on hostile input

    def open(self):
        """The shard's content stream (decompressed, bounded by :attr:`limits`) and its hashing reader."""
        from connectors.streams import open_hashed

        return open_hashed(self.ref.uri, self.ref.compression, self.storage_options, self.limits)

    @property
    def uri(self) -> str:
        """The shard's URI, for error messages."""
        return self.ref.uri

    def fs_path(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """(file system, path) of the shard."""
        return fsspec.core.url_to_fs(self.ref.uri, **self.storage_options)

    def local_path(self) -> str | None:
        """The shard's local path when it is on the local file system, else ``None``."""
        fs, path = self.fs_path()
        return path if is_local(fs) else None

    def error(self, message: str, **where) -> ShardReadError:
        """A :class:`ShardReadError` for this shard."""
        return ShardReadError(self.ref.uri, message, **where)


FormatReader = Callable[[ReadContext], Iterator[pa.RecordBatch]]
_READERS: dict[str, FormatReader] = {}


def register_reader(fmt: str) -> Callable[[FormatReader], FormatReader]:
    """Decorator registering the raw reader of format ``fmt``."""

    def decorate(fn: FormatReader) -> FormatReader:
        _READERS[fmt] = fn
        return fn

    return decorate


def reader_for(fmt: str) -> FormatReader | None:
    """The raw reader registered for ``fmt``, or ``None``."""
    return _READERS.get(fmt)


def registered_formats() -> list[str]:
    """Formats that have a reader."""
    return sorted(_READERS)
