"""CSV shards (plain, .gz, .zst): streamed with ``pyarrow.csv.open_csv``.

The header line is read first; every column is then read as a string (no
type inference, so ``007`` stays ``007`` and a column cannot "change type"
between blocks). Empty cells are nulls. Quoted values may span lines.
When pyarrow rejects the file, a second streaming pass with the stdlib
``csv`` module finds the line to name in the error.
"""
from __future__ import annotations

import csv
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.csv as pcsv

from connectors.errors import ShardReadError
from connectors.formats import CSV
from connectors.normalize import slices
from connectors.registry import ReadContext, register_reader
from connectors.streams import CHUNK, decompression_errors, open_hashed

_FIX = "fix the quoting or the number of fields on that line, or remove it"


@register_reader(CSV)
def read_csv(ctx: ReadContext) -> Iterator[pa.RecordBatch]:
    """Yield the header's schema (0-row batch), then batches of at most ``ctx.batch_size`` rows."""
    codec = ctx.ref.compression
    with open_hashed(ctx.uri, codec, ctx.storage_options) as (stream, hashing):
        try:
            yield from _read_stream(ctx, stream)
            hashing.drain()
        except decompression_errors() as exc:
            raise ctx.error(f"corrupt {codec} stream ({exc}); the file is truncated or not "
                            f"{codec}-compressed: re-create it or remove it from the source"
                            ) from exc
    ctx.sha256, ctx.bytes = hashing.hexdigest(), hashing.bytes_read


def _read_stream(ctx: ReadContext, stream: BinaryIO) -> Iterator[pa.RecordBatch]:
    header = stream.readline()
    if not header.strip():
        return  # empty file: no records
    names = _header_names(ctx, header)
    ctx.source_columns = names
    schema = pa.schema([(n, pa.string()) for n in names])
    yield pa.RecordBatch.from_arrays([pa.array([], pa.string()) for _ in names], schema=schema)
    try:
        reader = pcsv.open_csv(stream, read_options=_read_options(names),
                               parse_options=pcsv.ParseOptions(newlines_in_values=True),
                               convert_options=_convert_options(names))
        for batch in reader:
            yield from slices(batch, ctx.batch_size)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if "Empty CSV file" in str(exc):
            return
        raise _locate(ctx, len(names), exc) from exc


def _header_names(ctx: ReadContext, header: bytes) -> list[str]:
    try:
        text = header.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ctx.error(f"invalid UTF-8 in the header (byte {exc.start}); re-encode the file "
                        "as UTF-8", line=1) from exc
    try:
        names = next(csv.reader([text]))
    except (csv.Error, StopIteration) as exc:
        raise ctx.error(f"CSV header cannot be parsed ({exc}); {_FIX}", line=1) from exc
    return [n.strip() for n in names]


def _read_options(names: list[str]) -> pcsv.ReadOptions:
    return pcsv.ReadOptions(column_names=names, block_size=CHUNK, use_threads=True)


def _convert_options(names: list[str]) -> pcsv.ConvertOptions:
    return pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                               strings_can_be_null=True, null_values=[""],
                               quoted_strings_can_be_null=True)


def _locate(ctx: ReadContext, ncols: int, exc: Exception) -> ShardReadError:
    """The error to raise for a CSV pyarrow rejected, with its line when it can be found."""
    line, why = locate_csv_problem(ctx, ncols)
    arrow_msg = str(exc).strip().splitlines()[0]
    if line is None:
        return ctx.error(f"CSV parse error ({arrow_msg}); {_FIX}")
    if "UTF-8" in why:
        return ctx.error(f"{why}; re-encode the file as UTF-8 or fix or remove that line", line=line)
    return ctx.error(f"CSV parse error ({why}; pyarrow: {arrow_msg}); {_FIX}", line=line)


def locate_csv_problem(ctx: ReadContext, ncols: int) -> tuple[int | None, str]:
    """Stream the file with the stdlib ``csv`` module; (1-based line, problem) of the first bad row."""
    state = {"line": 0}

    def decoded(stream: BinaryIO) -> Iterator[str]:
        for i, raw in enumerate(stream, 1):
            state["line"] = i
            yield raw.decode("utf-8-sig" if i == 1 else "utf-8")

    try:
        with open_hashed(ctx.uri, ctx.ref.compression, ctx.storage_options) as (stream, _):
            for record in csv.reader(decoded(stream), strict=True):
                if record and len(record) != ncols and state["line"] > 1:
                    return state["line"], f"expected {ncols} fields, got {len(record)}"
    except UnicodeDecodeError as err:
        return state["line"], f"invalid UTF-8 at byte {err.start} of the line"
    except csv.Error as err:
        return state["line"], str(err)
    except decompression_errors():
        return None, ""
    return None, ""
