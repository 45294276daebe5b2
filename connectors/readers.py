"""Reading one shard as record batches in the normalized schema.

:class:`ShardReader` picks the raw reader registered for the shard's format
(see :mod:`connectors.registry`), maps its batches onto
:data:`connectors.schema.RECORD_FIELDS` with the :class:`ColumnMapping`, and
records rows, bytes and the SHA-256 of the shard's bytes as it goes.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

# importing the format modules registers their readers
from connectors import csv_format, hf_format, jsonl_format, parquet_format  # noqa: F401
from connectors import webdataset_format  # noqa: F401
from connectors.errors import ColumnMappingError, ShardReadError
from connectors.image_paths import ImageResolver
from connectors.limits import DEFAULT_LIMITS, ReadLimits, human_bytes
from connectors.listing import ShardRef
from connectors.normalize import Plan, image_paths_in, make_plan, normalize_batch
from connectors.registry import ReadContext, reader_for, registered_formats
from connectors.schema import RECORD_FIELDS, RECORD_ID, ROW, TEXT_FIELDS, ColumnMapping
from connectors.streams import hash_shard

__all__ = ["ShardReader", "hash_shard", "read_rows", "read_shard"]


class ShardReader:
    """Iterate a shard as normalized :class:`pyarrow.RecordBatch` objects.

    Batches hold at most ``batch_size`` rows and have the columns
    ``record_id`` (string: the id column's value, or the row index when the
    source has no id column), ``row`` (int64, 0-based row index in the shard),
    and each other :class:`ColumnMapping` field the source has (``text``,
    ``label``, ``prompt``, ``response``, ``caption``, ``image``) with its type
    from :data:`connectors.schema.RECORD_FIELDS`. Nulls stay nulls.

    An ``image`` column of paths (strings, or a ``datasets`` Image struct whose
    ``bytes`` is null) is read into bytes as batches go (see
    :mod:`connectors.image_paths`): relative paths against the shard's
    directory; absolute paths and URLs only inside ``image_root`` (this
    argument, else the mapping's ``image_root`` attribute when it has one).
    A path that is missing or refused gives that record a rejection marker
    that ``image.decode`` reports; batches of large images may be cut below
    ``batch_size`` rows. Image files are not part of :attr:`sha256`.

    Attributes:
        columns: normalized columns present; set once the shard's schema is
            known (after the first batch; ``[]`` for a shard without records
            and without a schema, like an empty JSONL file).
        rows: rows read so far.
        bytes: bytes of the shard (from the listing; exact once iteration is complete).
        sha256: hex SHA-256 of the shard's bytes; ``""`` until iteration is complete.
        complete: whether the last iteration read the whole shard.
        notes: non-fatal remarks (e.g. an ``image`` column that is not bytes was ignored).

    ``limits`` bound what a hostile or broken shard may cost (decompressed
    bytes, record size, expansion ratio, JSON nesting; see
    :mod:`connectors.limits`): a shard past one is refused with the limit named.

    Raises (while iterating):
        ShardReadError: the shard is corrupt, malformed, over a read limit,
            lacks an explicitly mapped column or has no content column at
            all; any other error a parser raises on the shard's bytes is
            turned into one too (with its type), so that one bad shard never
            stops a scan. An empty shard (no records) is not an error: it
            yields no batch.
    """

    def __init__(self, ref: ShardRef, mapping: ColumnMapping, batch_size: int = 8192,
                 storage_options: dict | None = None, image_root: str | None = None,
                 limits: ReadLimits = DEFAULT_LIMITS) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.ref = ref
        self.mapping = mapping
        self.batch_size = batch_size
        self.storage_options = dict(storage_options or {})
        # the mapping may carry the root (so the CLI's --image-root reaches every reader and the cache key)
        self.image_root = image_root if image_root is not None else getattr(mapping, "image_root", None)
        self.columns: list[str] = []
        self.rows = 0
        self.bytes = ref.size
        self.sha256 = ""
        self.complete = False
        self.notes: list[str] = []
        self.limits = limits

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        reader = reader_for(self.ref.format)
        if reader is None:
            raise ShardReadError(self.ref.uri, f"no reader for format {self.ref.format!r} "
                                               f"(readable: {', '.join(registered_formats())})")
        ctx = ReadContext(self.ref, self.batch_size, self.storage_options, self._wanted(), limits=self.limits,
                          text_columns=frozenset(col for f, col in self.mapping.items() if f in TEXT_FIELDS))
        self.rows, self.sha256, self.complete = 0, "", False
        plan: Plan | None = None
        resolver: ImageResolver | None = None
        try:
            for raw in reader(ctx):
                if plan is None:
                    plan = self._plan(raw.schema, ctx)
                if raw.num_rows == 0:
                    continue
                if plan.problem:
                    raise ColumnMappingError(self.ref.uri, plan.problem,
                                             list(ctx.source_columns or raw.schema.names))
                check_cells(raw, plan, self.rows, self.ref.uri, self.limits)
                src = image_paths_in(raw, plan)
                if src is None:
                    batch = normalize_batch(raw, plan, self.rows, self.ref.uri)
                    self.rows += batch.num_rows
                    yield batch
                    continue
                if resolver is None:
                    resolver = ImageResolver(self.ref, self.storage_options, self.image_root)
                offset = 0
                for n, images in resolver.resolve(raw.column(src)):
                    batch = normalize_batch(raw.slice(offset, n), plan, self.rows, self.ref.uri, images)
                    offset += n
                    self.rows += n
                    yield batch
        except ShardReadError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise ShardReadError(self.ref.uri, f"cannot read the shard ({type(exc).__name__}: "
                                               f"{exc}); check that it exists and is readable",
                                 row=self.rows if self.rows else None) from exc
        except Exception as exc:  # hostile bytes may trip any parser: this shard's error, not the scan's
            raise ShardReadError(self.ref.uri, f"cannot parse the shard ({type(exc).__name__}: "
                                               f"{_short(exc)}); it is malformed: re-create it or remove "
                                               "it from the source",
                                 row=self.rows if self.rows else None) from exc
        self.sha256, self.bytes, self.complete = ctx.sha256, ctx.bytes, True

    def _wanted(self) -> frozenset[str]:
        return frozenset(col for _, col in self.mapping.items())

    def _plan(self, schema: pa.Schema, ctx: ReadContext) -> Plan:
        plan = make_plan(schema, self.mapping, ctx.source_columns)
        self.columns = list(plan.columns)
        self.notes = list(plan.notes)
        return plan


def check_cells(raw: pa.RecordBatch, plan: Plan, first_row: int, uri: str, limits: ReadLimits) -> None:
    """Refuse a batch holding a mapped cell larger than ``limits.max_record_bytes``.

    Columnar formats (Parquet, Arrow) hold no "line" to bound while reading, so
    their records are bounded here, one vectorized length per mapped column.
    """
    for name, src in plan.sources.items():
        idx = raw.schema.get_field_index(src)
        if idx < 0:
            continue
        col = raw.column(idx)
        if pa.types.is_struct(col.type) and col.type.get_field_index("bytes") >= 0:
            col = pc.struct_field(col, "bytes")
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                or pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
            continue
        lengths = pc.binary_length(col)
        biggest = pc.max(lengths).as_py()
        if biggest is not None and biggest > limits.max_record_bytes:
            row = int(pc.index(lengths, biggest).as_py())
            raise ShardReadError(uri, f"column {src!r} holds a value of {human_bytes(biggest)}, over "
                                      f"limits.max_record_bytes={human_bytes(limits.max_record_bytes)}; "
                                      "remove that record, or raise the limit in the policy if the data "
                                      "is trusted", row=first_row + row)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc) or "no message"
    return text if len(text) <= limit else text[:limit] + "..."


def read_shard(ref: ShardRef, mapping: ColumnMapping | None = None, batch_size: int = 8192,
               storage_options: dict | None = None, image_root: str | None = None) -> pa.Table:
    """Read a whole shard into one normalized table (for tests and small shards only)."""
    reader = ShardReader(ref, mapping or ColumnMapping(), batch_size, storage_options, image_root)
    batches = list(reader)
    names = reader.columns or [RECORD_ID, ROW]
    return pa.Table.from_batches(batches, schema=pa.schema([(c, RECORD_FIELDS[c]) for c in names]))


def read_rows(uri: str, rows: Iterable[int], mapping: ColumnMapping | None = None,
              storage_options: dict | None = None, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """The records at ``rows`` (0-based, the :data:`~connectors.schema.ROW` column) of the shard at
    ``uri``, normalized with ``mapping``, a batch at a time: streaming, and the shard is left once
    its last wanted row is read. For re-reading records kept by row (a sample, candidates); raises
    what :class:`ShardReader` raises when the shard cannot be read any more."""
    from connectors.formats import detect_format

    want = pa.array(sorted({int(r) for r in rows}), type=pa.int64())
    if len(want) == 0:
        return
    last = want[-1].as_py()
    found = detect_format(uri)
    ref = ShardRef(name=uri, uri=uri, format=found.format if found else "hf_dataset", size=0, fingerprint="")
    for batch in ShardReader(ref, mapping or ColumnMapping(), batch_size=batch_size, storage_options=storage_options):
        brows = batch.column(ROW).cast(pa.int64())
        hit = pc.is_in(brows, value_set=want)
        if pc.any(hit).as_py():
            yield batch.filter(hit)
        if len(brows) and pc.max(brows).as_py() >= last:
            return
