"""Per-record arrays stored as one binary value per record.

Features such as LSH band keys, bottom-k sketches or span fingerprints are many
small numbers per record. As Parquet list columns they cost a repetition level
per number to write and read; packed into one little-endian binary value per
record they are written and read about ten times faster, and decoded with one
``np.frombuffer`` (no Python per record). Ragged arrays use a NumPy structured
dtype to keep several per-item fields (e.g. hash, position, offsets) together.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa


def pack(values: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """One binary value per row: the items ``values[offsets[i]:offsets[i+1]]``
    (a plain or structured NumPy array) as little-endian bytes."""
    values = np.ascontiguousarray(values)
    item = values.dtype.itemsize
    byte_off = (np.asarray(offsets, dtype=np.int64) * item)
    # the arrays' own memory, not copies of it (``tobytes``): a shard's sketches are tens of MB,
    # and every fresh copy is memory the kernel must fault in; the buffers keep the arrays alive
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(byte_off) - 1,
                                            [None, pa.py_buffer(byte_off), pa.py_buffer(values.reshape(-1).view(np.uint8))])


def pack_fixed(matrix: np.ndarray) -> pa.Array:
    """One binary value per row of a 2-D array."""
    matrix = np.ascontiguousarray(matrix)
    n = matrix.shape[0]
    return pack(matrix.reshape(-1).view(matrix.dtype), np.arange(n + 1, dtype=np.int64) * matrix.shape[1])


def unpack(column: pl.Series | pa.Array | pa.ChunkedArray, dtype: np.dtype | str) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets in items) of a binary column written by :func:`pack`."""
    dtype = np.dtype(dtype)
    if isinstance(column, pl.Series):
        column = column.to_arrow(compat_level=pl.CompatLevel.oldest())
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type != pa.large_binary():
        column = column.cast(pa.large_binary())
    n = len(column)
    if column.null_count:
        column = column.fill_null(b"")
    bufs = column.buffers()
    offs = np.frombuffer(bufs[1], dtype=np.int64)[column.offset:column.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    raw = data[int(offs[0]):int(offs[-1])] if n else data[:0]
    item = dtype.itemsize
    values = np.frombuffer(raw.tobytes() if raw.ctypes.data % max(dtype.alignment, 1) else raw, dtype=dtype)
    return values, (offs - offs[0]) // item


def unpack_fixed(column: pl.Series | pa.Array | pa.ChunkedArray, dtype: np.dtype | str, width: int) -> np.ndarray:
    """(n, width) array of a binary column written by :func:`pack_fixed`."""
    values, _ = unpack(column, dtype)
    return values.reshape(-1, width)
