"""Parquet shards: streamed with ``ParquetFile.iter_batches``, projected to mapped columns."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.formats import PARQUET
from connectors.limits import human_bytes
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
        check_sizes(ctx, pf, set(columns or schema.names))
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


def check_sizes(ctx: ReadContext, pf: pq.ParquetFile, columns: set[str]) -> None:
    """Refuse, from the footer alone, a file whose columns to read decompress past the limits.

    The footer states each column chunk's compressed and uncompressed size: a
    Parquet decompression bomb is refused before a page is decompressed.
    """
    lim = ctx.limits
    meta = pf.metadata
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.path_in_schema.split(".")[0] not in columns:
                continue
            raw, stored = chunk.total_uncompressed_size, max(chunk.total_compressed_size, 1)
            total += raw
            if raw > lim.ratio_grace_bytes and raw > lim.max_expansion_ratio * stored:
                raise ctx.error(f"column {chunk.path_in_schema!r} of row group {g} expands {raw / stored:,.0f}x "
                                f"({human_bytes(stored)} -> {human_bytes(raw)}), over "
                                f"limits.max_expansion_ratio={lim.max_expansion_ratio:g}: a decompression "
                                "bomb or degenerate data; remove it, or raise the limit in the policy if "
                                "the data is trusted")
    if total > lim.max_shard_bytes:
        raise ctx.error(f"{human_bytes(total)} of column data once decompressed, over "
                        f"limits.max_shard_bytes={human_bytes(lim.max_shard_bytes)}; split the file, or "
                        "raise the limit in the policy if the data is trusted")


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
