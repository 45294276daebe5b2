"""Mapping a source's record batches onto the normalized record schema.

A :class:`Plan` is made once per shard from the first batch's schema: which
source column feeds each normalized field, and which fields are present. Each
raw batch is then projected and cast with :func:`normalize_batch`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.errors import ShardReadError
from connectors.image_paths import holds_paths
from connectors.schema import CONTENT_FIELDS, RECORD_FIELDS, RECORD_ID, ROW, ColumnMapping


def flag(field_name: str) -> str:
    """The CLI flag that sets the source column of ``field_name``."""
    return f"--{field_name}-column"


def target_name(field_name: str) -> str:
    """Normalized column name of a :class:`ColumnMapping` field (``id`` -> ``record_id``)."""
    return RECORD_ID if field_name == "id" else field_name


@dataclass
class Plan:
    """How one shard's columns map onto the normalized schema."""

    sources: dict[str, str]  # normalized column -> source column
    columns: list[str]  # normalized columns produced, in schema order
    schema: pa.Schema
    problem: str | None = None  # raised as ShardReadError once a record is seen
    notes: list[str] = field(default_factory=list)


def _binary_like(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t))


def _image_ok(t: pa.DataType) -> bool:
    """Raw bytes, all-null, paths (strings), or a `datasets` Image struct ``{bytes, path}``."""
    if pa.types.is_null(t) or _binary_like(t) or holds_paths(t):
        return True
    if pa.types.is_struct(t):
        idx = t.get_field_index("bytes")
        return idx >= 0 and (_binary_like(t.field(idx).type) or pa.types.is_null(t.field(idx).type))
    return False


def _nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_map(t)


def make_plan(schema: pa.Schema, mapping: ColumnMapping, all_columns: list[str] | None = None) -> Plan:
    """Decide the normalized columns of a shard whose (possibly projected) schema is ``schema``.

    ``all_columns`` lists every column of the source, for error messages
    (defaults to ``schema.names``). Problems (explicit column missing, no
    content column, unusable type) are recorded in ``Plan.problem``; the
    reader raises them only when the shard has at least one record.
    """
    names = list(all_columns if all_columns is not None else schema.names)
    present = set(schema.names)
    listing = ", ".join(repr(n) for n in names) or "none"
    sources: dict[str, str] = {}
    problems: list[str] = []
    notes: list[str] = []
    claimed = {getattr(mapping, f) for f in mapping.explicit if hasattr(mapping, f)}
    for fname, col in mapping.items():
        if fname not in mapping.explicit and col in claimed:
            notes.append(f"column {col!r} is mapped explicitly elsewhere; not also used as {fname}")
            continue
        if col not in present:
            if fname in mapping.explicit:
                problems.append(f"column {col!r} (set with {flag(fname)}) is missing; "
                                f"columns present: {listing}; use {flag(fname)} to pick one")
            continue
        ctype = schema.field(col).type
        if fname == "image" and not _image_ok(ctype):
            msg = (f"column {col!r} has type {ctype}, not image bytes or paths; "
                   f"use {flag('image')} to pick a binary or path column")
            (problems if fname in mapping.explicit else notes).append(msg)
            continue
        if fname != "image" and _nested(ctype):
            problems.append(f"column {col!r} has type {ctype}, expected a scalar "
                            f"(text, number); use {flag(fname)} to pick another column")
            continue
        sources[target_name(fname)] = col
    if not problems and not any(f in sources for f in CONTENT_FIELDS):
        wanted = ", ".join(f"{f}={getattr(mapping, f)!r}" for f in CONTENT_FIELDS)
        problems.append(f"no text column: none of the mapped columns ({wanted}) exists; "
                        f"columns present: {listing}; use --text-column to pick one")
    columns = [RECORD_ID, ROW] + [f for f in RECORD_FIELDS if f in sources and f != RECORD_ID]
    out_schema = pa.schema([(c, RECORD_FIELDS[c]) for c in columns])
    return Plan(sources, columns, out_schema, "; ".join(problems) or None, notes)


def image_paths_in(batch: pa.RecordBatch, plan: Plan) -> str | None:
    """The source column of ``batch`` that holds image *paths* to resolve, else ``None``.

    Decided per batch: a JSONL chunk may type a column differently from the first.
    """
    src = plan.sources.get("image")
    idx = batch.schema.get_field_index(src) if src is not None else -1
    return src if idx >= 0 and holds_paths(batch.schema.field(idx).type) else None


def normalize_batch(batch: pa.RecordBatch, plan: Plan, first_row: int, uri: str,
                    images: pa.Array | None = None) -> pa.RecordBatch:
    """Project and cast one raw batch; ``first_row`` is its first row's index in the shard.

    ``images`` is the ``image`` column already resolved to bytes, required when
    the batch's image column holds paths (see :func:`image_paths_in`).
    """
    if images is None and image_paths_in(batch, plan):  # never pass a path's text on as image bytes
        raise ValueError("the image column holds paths: resolve them and pass images=")
    n = batch.num_rows
    rows = pa.array(np.arange(first_row, first_row + n, dtype=np.int64))
    arrays: list[pa.Array] = []
    for name in plan.columns:
        if name == ROW:
            arrays.append(rows)
        elif name == RECORD_ID and RECORD_ID not in plan.sources:
            arrays.append(pc.cast(rows, pa.string()))
        elif name == "image" and images is not None:
            arrays.append(images)
        else:
            src = plan.sources[name]
            idx = batch.schema.get_field_index(src)
            raw = batch.column(idx) if idx >= 0 else pa.nulls(n)
            converted = _convert(raw, RECORD_FIELDS[name], src, first_row, uri)
            if name == RECORD_ID and converted.null_count:
                # a record without an id is named by its row index (a null record_id means a shard-level finding)
                converted = pc.if_else(pc.is_null(converted), pc.cast(rows, pa.string()), converted)
            arrays.append(converted)
    return pa.RecordBatch.from_arrays(arrays, schema=plan.schema)


def _convert(arr: pa.Array, target: pa.DataType, src: str, first_row: int, uri: str) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_struct(arr.type) and _binary_like(target) and arr.type.get_field_index("bytes") >= 0:
        arr = pc.struct_field(arr, "bytes")
    if arr.type == target:
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target)
    if _nested(arr.type):
        raise ShardReadError(uri, f"column {src!r} has type {arr.type} in this batch, expected "
                                  f"{target}; fix the data or map another column", row=first_row)
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        bad = _first_bad_utf8(arr) if _binary_like(arr.type) else None
        if bad is not None:
            raise ShardReadError(uri, f"column {src!r} is not valid UTF-8 text; re-encode it "
                                      "as UTF-8 or fix or remove that record",
                                 row=first_row + bad) from exc
        raise ShardReadError(uri, f"column {src!r} of type {arr.type} cannot be converted to "
                                  f"{target} ({exc}); fix the data or map another column",
                             row=first_row) from exc


def _first_bad_utf8(arr: pa.Array) -> int | None:
    for i, value in enumerate(arr.to_pylist()):
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return i
    return None


def slices(batch: pa.RecordBatch, size: int):
    """``batch`` cut into batches of at most ``size`` rows (zero-copy)."""
    if batch.num_rows <= size:
        yield batch
        return
    for start in range(0, batch.num_rows, size):
        yield batch.slice(start, size)
