"""CSV shards (plain, .gz, .zst): streamed with ``pyarrow.csv.open_csv``.

The header line is read first; every column is then read as a string (no
type inference, so ``007`` stays ``007`` and a column cannot "change type"
between blocks). Empty cells are nulls. Quoted values may span lines.
When pyarrow rejects the file, a second streaming pass with the stdlib
``csv`` module finds the line to name in the error.

pyarrow is lenient where a silent merge of records would follow: a quote left
open runs to the end of the file, taking every later line into one value. So
the bytes pyarrow reads are watched (:class:`_Watch`, C-speed counts): an odd
number of ``"`` overall (a valid CSV has an even number: ``""`` escapes) or a
NUL byte (binary data, not text) makes the shard an error at the line the
stdlib pass finds.
"""
from __future__ import annotations

import csv
import io
from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.csv as pcsv

from connectors.errors import ShardReadError
from connectors.formats import CSV
from connectors.normalize import slices
from connectors.limits import human_bytes
from connectors.registry import ReadContext, register_reader
from connectors.streams import CHUNK, decompression_errors

_FIX = "fix the quoting or the number of fields on that line, or remove it"


@register_reader(CSV)
def read_csv(ctx: ReadContext) -> Iterator[pa.RecordBatch]:
    """Yield the header's schema (0-row batch), then batches of at most ``ctx.batch_size`` rows."""
    codec = ctx.ref.compression
    with ctx.open() as (stream, hashing):
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
    watch = _Watch(stream)
    try:
        reader = pcsv.open_csv(watch, read_options=_read_options(names),
                               parse_options=pcsv.ParseOptions(newlines_in_values=True),
                               convert_options=_convert_options(names))
        for batch in reader:
            if watch.nul:
                break
            yield from slices(batch, ctx.batch_size)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if "Empty CSV file" in str(exc):
            return
        raise _locate(ctx, len(names), exc) from exc
    if watch.nul or watch.quotes % 2:
        raise _locate(ctx, len(names), None)


class _Watch(io.RawIOBase):
    """A pass-through stream that counts ``"`` bytes and notes NUL bytes in what is read."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self.quotes = 0
        self.nul = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        if n:
            memoryview(buffer).cast("B")[:n] = data
            self.quotes += data.count(b'"')
            self.nul = self.nul or b"\0" in data
        return n


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


def _locate(ctx: ReadContext, ncols: int, exc: Exception | None) -> ShardReadError:
    """The error to raise for a CSV pyarrow rejected (or read leniently), with its line when found."""
    line, why = locate_csv_problem(ctx, ncols)
    arrow_msg = str(exc).strip().splitlines()[0] if exc is not None else "read leniently"
    if exc is None and line is not None:
        return ctx.error(f"CSV parse error ({why}); {_FIX}", line=line)
    if "straddl" in arrow_msg:  # pyarrow reads CSV in blocks; one row must fit in a block
        return ctx.error(f"a CSV row longer than the {human_bytes(CHUNK)} read block (the longest CSV "
                         "record this reader takes); split that record, or store the shard as JSONL or "
                         "Parquet", line=line)
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
            if b"\0" in raw:
                raise csv.Error(f"NUL byte at byte {raw.index(0)} of the line (binary data, not CSV text)")
            yield raw.decode("utf-8-sig" if i == 1 else "utf-8")

    start = 1  # line on which the record being parsed started
    csv.field_size_limit(max(csv.field_size_limit(), ctx.limits.max_record_bytes))  # default is 128 KiB
    try:
        with ctx.open() as (stream, _):
            for record in csv.reader(decoded(stream), strict=True):
                if record and len(record) != ncols and state["line"] > 1:
                    return state["line"], f"expected {ncols} fields, got {len(record)}"
                start = state["line"] + 1
    except UnicodeDecodeError as err:
        return state["line"], f"invalid UTF-8 at byte {err.start} of the line"
    except csv.Error as err:
        if "unexpected end of data" in str(err):  # name the line where the open quote started
            return start, (f"a quoted value opened on line {start} is never closed: every later line "
                           f"would merge into it (line {state['line']} is the last)")
        return state["line"], str(err)
    except decompression_errors():
        return None, ""
    return None, ""
