"""Parquet shards: streamed with ``ParquetFile.iter_batches``, projected to mapped columns."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.formats import PARQUET
from connectors.registry import ReadContext, register_reader
from connectors.streams import hash_file

_CORRUPT = "the file is corrupt or truncated; re-export it or remove it from the source"


@contextmanager
def _open(ctx: ReadContext) -> Iterator[pq.ParquetFile]:
    fs, path = ctx.fs_path()
    local = ctx.local_path()
    handle = None if local else fs.open(path, "rb")
    try:
        try:
            pf = pq.ParquetFile(local or handle)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ctx.error(f"not a valid Parquet file ({exc}); {_CORRUPT}") from exc
        yield pf
    finally:
        if handle is not None:
            handle.close()


@register_reader(PARQUET)
def read_parquet(ctx: ReadContext) -> Iterator[pa.RecordBatch]:
    """Yield the schema (0-row batch), then row batches of the mapped columns.

    The SHA-256 is computed first, in one sequential pass over the file
    (Parquet is read by random access, so it cannot be hashed while parsing).
    """
    fs, path = ctx.fs_path()
    ctx.sha256, ctx.bytes = hash_file(fs, path)
    with _open(ctx) as pf:
        schema = pf.schema_arrow
        ctx.source_columns = list(schema.names)
        columns = [c for c in schema.names if c in ctx.wanted]
        projected = pa.schema([schema.field(c) for c in columns]) if columns else schema
        yield _empty(projected)
        rows = 0
        try:
            for batch in pf.iter_batches(batch_size=ctx.batch_size, columns=columns or None,
                                         use_threads=True):
                rows += batch.num_rows
                yield batch
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ctx.error(f"corrupt Parquet data after {rows} readable rows ({exc}); {_CORRUPT}",
                            row=rows) from exc


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
