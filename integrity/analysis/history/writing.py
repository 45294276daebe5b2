"""Writing a history segment (see :mod:`integrity.analysis.history`): its keys sorted with their
record rows, its ragged payloads kept in chunks (never concatenated in memory), and its files."""
from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa

from integrity.analysis.history.segments import Segment
from integrity.analysis.sorting import stable_sort_u64, stable_sort_u64_parts


def sort_record_keys(keys: np.ndarray | Callable[[], Iterable[np.ndarray]], per_record: int,
                     n_records: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted keys, their record rows)`` of ``keys`` holding ``per_record`` keys per record in
    record order (record ``r``'s are ``keys[r * per_record:(r + 1) * per_record]``), rows
    ascending within equal keys: what :meth:`HistoryIndex.add` stores, ready for it with
    ``keys_sorted=True``. Rows are uint32 below 2**32 keys (no array of every key's row is
    built before the sort, and the sort's order becomes the rows in place).

    ``keys`` may instead be a function yielding them in parts (a shard at a time) with
    ``n_records`` given: the parts are read twice (:func:`stable_sort_u64_parts`) and the keys
    are never held whole besides their sorted copy."""
    if callable(keys):
        if n_records is None:
            raise ValueError("sort_record_keys: n_records is required when the keys come in parts")
        n = n_records * per_record
        sorted_keys, order = stable_sort_u64_parts(keys, n, order_dtype=np.uint32 if n < 2**32 else np.int64)
    else:
        keys = np.asarray(keys, dtype=np.uint64)
        small = len(keys) < 2**32
        sorted_keys, order = stable_sort_u64(keys, order_dtype=np.uint32 if small else np.int64)
    np.floor_divide(order, order.dtype.type(per_record), out=order)
    return sorted_keys, order


def ragged_chunks(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], np.ndarray]:
    """``(values, offsets)`` parts (offsets from 0, one part after another in record order) as
    one ragged payload: the values as the list of chunks they are, the offsets joined."""
    lens = [np.diff(np.asarray(o, dtype=np.int64)) for _, o in parts]
    offsets = np.zeros(sum(len(x) for x in lens) + 1, dtype=np.int64)
    if lens:
        np.cumsum(np.concatenate(lens), out=offsets[1:])
    return [v for v, _ in parts], offsets


def joined_payload(parts: list):
    """One payload from its parts in record order: ragged parts as :func:`ragged_chunks`,
    one row per record concatenated."""
    if parts and isinstance(parts[0], tuple):
        return ragged_chunks(parts)
    return np.concatenate(parts)


def joined(values: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """Ragged values given as arrays in record order (a list, or an iterator of them), as one array."""
    if isinstance(values, np.ndarray):
        return values
    values = list(values)
    return np.concatenate(values) if values else np.zeros(0, np.uint8)


def write_segment(seg: Segment, record_ids, rows: np.ndarray, shard_no: np.ndarray,
                  keys: np.ndarray, key_rows: np.ndarray, payload: Mapping[str, object]) -> None:
    """Write ``seg``'s files into a temporary folder and move it into place (atomic).

    ``payload``: one array per name with a row per record, or (values, offsets) for ragged data,
    the values one array, or a list or an iterator of arrays in record order (an iterator is
    read one array at a time as it is written: the values never all in memory)."""
    tmp = seg.path.parent / f".{seg.id}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        ids = record_ids if isinstance(record_ids, (pa.Array, pa.ChunkedArray)) else pa.array(record_ids, pa.string())
        table = pa.table({"record_id": ids.cast(pa.string()), "row": pa.array(rows, pa.int64()),
                          "shard_no": pa.array(shard_no, pa.int32())})
        with pa.OSFile(str(tmp / "records.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        np.save(tmp / "keys.npy", np.ascontiguousarray(keys, dtype=np.uint64))
        dtype = np.uint32 if seg.n_records < 2**32 else np.int64
        np.save(tmp / "key_rows.npy", np.ascontiguousarray(key_rows, dtype=dtype))
        for name, arr in payload.items():
            if isinstance(arr, tuple):
                values, off = arr[0], np.asarray(arr[1], dtype=np.int64)
                chunks = [values] if isinstance(values, np.ndarray) else values
                save_chunks(tmp / f"payload_{name}.values.npy", chunks, int(off[0]), int(off[-1]))
                np.save(tmp / f"payload_{name}.offsets.npy", off - off[0])
            else:
                np.save(tmp / f"payload_{name}.npy", np.ascontiguousarray(arr))
        (tmp / "meta.json").write_text(json.dumps(seg.to_dict(), indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written segment is never left behind
        raise
    os.replace(tmp, seg.path)


def save_chunks(path: Path, chunks: Iterable[np.ndarray], start: int, stop: int) -> None:
    """``np.save(path, np.concatenate(chunks)[start:stop])`` without the concatenated copy:
    the .npy header for the whole length, then each chunk's part written as it comes (chunks
    may be an iterator, read one at a time). Raises ValueError when the chunks hold fewer
    than ``stop`` values (the file is then incomplete: the caller's segment is not moved in)."""
    it = iter(chunks)
    first = next(it, None)
    dtype = np.asarray(first).dtype if first is not None else np.dtype(np.uint8)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (stop - start,)})
        pos = 0
        for c in itertools.chain([first] if first is not None else [], it):
            c = np.ascontiguousarray(c)
            if c.dtype != dtype or c.ndim != 1:
                raise ValueError(f"{path.name}: ragged values must be 1-d arrays of one type")
            lo, hi = max(start - pos, 0), min(stop - pos, len(c))
            if hi > lo:
                c[lo:hi].tofile(f)
            pos += len(c)
    if pos < stop:
        raise ValueError(f"{path.name}: {pos} values given for offsets that end at {stop}")
