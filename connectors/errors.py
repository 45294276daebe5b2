"""Errors raised by connectors.

Every error names what was given (a source or a shard URI), where the problem
is (line, row or byte offset when known) and what to do about it, so that a
scan can report the shard as unreadable and carry on with the others.
"""
from __future__ import annotations


class ConnectorError(Exception):
    """Base class of every error raised by :mod:`connectors`."""


class SourceError(ConnectorError):
    """A scan source (file, directory, glob or URL) is missing or holds no shard."""


class ShardReadError(ConnectorError):
    """One shard cannot be read: corrupt file, malformed record, missing column...

    ``str(err)`` reads like
    ``"/data/shard.jsonl line 17: malformed JSON (Expecting ',' delimiter: line 1
    column 12); fix or remove that line"``.

    Attributes:
        uri: the shard's URI (absolute local path or fsspec URL).
        message: what is wrong and what to do, without the location prefix.
        line: 1-based line number in the (decompressed) text, when known.
        row: 0-based row index within the shard, when known.
        offset: byte offset in the (decompressed) stream, when known.
    """

    def __init__(
        self,
        uri: str,
        message: str,
        line: int | None = None,
        row: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.uri = uri
        self.message = message
        self.line = line
        self.row = row
        self.offset = offset
        super().__init__(self._render())

    def _render(self) -> str:
        if self.line is not None:
            where = f" line {self.line}"
        elif self.row is not None:
            where = f" row {self.row}"
        elif self.offset is not None:
            where = f" byte {self.offset}"
        else:
            where = ""
        return f"{self.uri}{where}: {self.message}"

    def __reduce__(self):  # keep the error picklable across process pools
        return (type(self), (self.uri, self.message, self.line, self.row, self.offset))


class ColumnMappingError(ShardReadError):
    """The column mapping does not fit the shard (a mapped column is missing or has an unusable type).

    ``columns`` lists the columns the shard does have, so that a scan where no
    shard fits can say "could not run" and name them.
    """

    def __init__(self, uri: str, message: str, columns: list[str] | tuple[str, ...] = ()) -> None:
        self.columns = list(columns)
        super().__init__(uri, message)

    def __reduce__(self):
        return (type(self), (self.uri, self.message, self.columns))
