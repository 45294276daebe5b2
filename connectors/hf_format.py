"""Hugging Face ``datasets`` directories saved with ``save_to_disk``.

The directory's ``.arrow`` files (Arrow IPC streams, in the order
``state.json`` lists them) are read batch by batch, memory-mapped when local.
``datasets`` itself is not used, and nothing is unpickled: ``state.json`` is
read as plain JSON. The SHA-256 is :func:`connectors.streams.hash_hf_dir`.
"""
from __future__ import annotations

import json
import posixpath
from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa

from connectors.formats import HF_DATASET, HF_STATE
from connectors.normalize import slices
from connectors.registry import ReadContext, register_reader
from connectors.streams import hash_hf_dir

_CORRUPT = "the dataset directory is corrupt or incomplete; save it again or remove it"


@register_reader(HF_DATASET)
def read_hf_dataset(ctx: ReadContext) -> Iterator[pa.RecordBatch]:
    """Yield the schema (0-row batch) of each file, then its batches; hash the directory last."""
    fs, path = ctx.fs_path()
    for name in arrow_files(ctx):
        with _ipc_reader(ctx, posixpath.join(path, name)) as (schema, batches):
            if ctx.source_columns is None:
                ctx.source_columns = list(schema.names)
            yield pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
            for batch in batches:
                yield from slices(batch, ctx.batch_size)
    ctx.sha256, ctx.bytes = hash_hf_dir(fs, path)


def arrow_files(ctx: ReadContext) -> list[str]:
    """The directory's data files, relative names in order (``state.json``, else sorted ``*.arrow``)."""
    fs, path = ctx.fs_path()
    state_path = posixpath.join(path, HF_STATE)
    try:
        with fs.open(state_path, "rb") as f:
            state = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        state = {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ctx.error(f"{HF_STATE} is not valid JSON ({exc}); {_CORRUPT}") from exc
    if not isinstance(state, dict):
        raise ctx.error(f"{HF_STATE} holds {type(state).__name__} JSON, not an object with "
                        f"'_data_files'; {_CORRUPT}")
    files = state.get("_data_files") or []
    if not isinstance(files, list):
        raise ctx.error(f"{HF_STATE} '_data_files' is not a list; {_CORRUPT}")
    listed = [d.get("filename") for d in files if isinstance(d, dict)]
    if listed and all(isinstance(n, str) for n in listed):
        for name in listed:
            if name.startswith("/") or ".." in name.split("/"):
                raise ctx.error(f"{HF_STATE} names a data file outside the directory ({name!r}); "
                                f"{_CORRUPT}")
        return listed
    found = fs.find(path)
    return sorted(posixpath.relpath(p, path) for p in found if p.endswith(".arrow"))


@contextmanager
def _ipc_reader(ctx: ReadContext, file_path: str):
    """(schema, batch iterator) of one Arrow IPC file, stream or file format."""
    fs, _ = ctx.fs_path()
    local = ctx.local_path()
    try:
        source = pa.memory_map(file_path, "r") if local else fs.open(file_path, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise ctx.error(f"cannot open data file {posixpath.basename(file_path)!r} ({exc}); "
                        f"{_CORRUPT}") from exc
    try:
        schema, batches = _open_ipc(source)
        yield schema, _guard(ctx, file_path, batches)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise ctx.error(f"data file {posixpath.basename(file_path)!r} is not a readable Arrow "
                        f"file ({exc}); {_CORRUPT}") from exc
    finally:
        source.close()


def _open_ipc(source) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    try:
        reader = pa.ipc.open_stream(source)
        return reader.schema, iter(reader)
    except pa.ArrowInvalid:
        source.seek(0)
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))


def _guard(ctx: ReadContext, file_path: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise ctx.error(f"data file {posixpath.basename(file_path)!r} is truncated or corrupt "
                        f"({exc}); {_CORRUPT}") from exc
