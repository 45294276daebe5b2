"""The LSH band join, partitioned: candidate pairs without holding every band key at once.

Every record contributes one entry per band: its band key. Records sharing the
key of the same band are candidates. :func:`band_join` routes each entry, one
shard at a time, to one of ``P`` partitions by a hash of (band, key) and
appends it to that partition's spill file; each partition is then loaded
alone and its buckets become star + chain pairs, one int64 code a pair
(:func:`~integrity.analysis.dedup.graph.pair_codes`), so the peak holds one
shard's bands or one partition's entries (about 16 bytes per entry,
``partition_entries`` per partition), plus the candidate pairs, which grow
with the duplicates, not with the corpus. Partitions are independent:
``run`` maps the per-partition step (in process by default; any executor's
``map`` fits, e.g. the scan's partition tasks on Dask workers).

The spill directory is a local path (one append-only file per partition) or an
fsspec URL every worker reaches (``s3://bucket/run/.work``): object stores
cannot append, so there each shard writes one object per partition under
``part-PPPPP/`` and a partition task reads its folder.

:class:`SketchSubset` then loads, shard by shard, the bottom-k sketches of
only the records that appear in a candidate pair, for verification.
"""
from __future__ import annotations

import functools
import math
import os
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from connectors.storage import get_fs, join
from integrity.analysis.dedup.graph import first_of_pairs, pair_codes, sorted_unique
from integrity.analysis.dedup.kernel import routed_entries
from integrity.analysis.history import take_ragged

ENTRY = np.dtype([("bucket", "<u8"), ("rec", "<u8")])
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def bucket_keys(bands: np.ndarray) -> np.ndarray:
    """One 64-bit bucket per (record, band): the band's key mixed with the band index, so equal
    keys of different bands never share a bucket (murmur3 finalizer)."""
    j = np.arange(bands.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = bands.astype(np.uint64) ^ ((j + np.uint64(1)) * _GOLDEN)
        x ^= x >> np.uint64(33)
        x *= _M1
        x ^= x >> np.uint64(33)
        x *= _M2
        x ^= x >> np.uint64(33)
    return x


def partition_count(n_entries: int, partition_entries: int) -> int:
    """Partitions needed to keep each near ``partition_entries`` entries."""
    return max(1, math.ceil(n_entries / max(1, partition_entries)))


def _entries_of(where: str) -> np.ndarray:
    """One partition's entries: a local spill file, or every object of a partition folder on a URL."""
    if "://" not in where:
        return np.fromfile(where, dtype=ENTRY)
    fs, root = get_fs(where)
    parts = []
    for path in sorted(fs.find(root)):
        with fs.open(path, "rb") as f:
            parts.append(np.frombuffer(f.read(), dtype=ENTRY))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=ENTRY)


def _pair_codes_of(where: str, m: int) -> np.ndarray:
    """The candidate pairs of one partition as codes ``a * m + b`` (a task: it reads only its
    own spill, and returns one int64 a pair)."""
    entries = _entries_of(where)
    # the fields as strided views of the entries (the compiled grouping reads them in place)
    return pair_codes(entries["bucket"], entries["rec"].view(np.int64), m)


def _route(out: np.ndarray, partitions: int) -> Iterator[tuple[int, np.ndarray]]:
    """(partition, entries) of one shard's entries, by a hash of their bucket."""
    if partitions == 1:
        yield 0, out
        return
    # uint16 partition numbers (the usual case) sort stably by NumPy's radix sort
    part = (out["bucket"] % np.uint64(partitions)).astype(np.uint16 if partitions <= 65536 else np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    for p in range(partitions):
        if bounds[p + 1] > bounds[p]:
            yield p, out[order[bounds[p]:bounds[p + 1]]]


def _entries(first: int, bands: np.ndarray) -> np.ndarray:
    keys = bucket_keys(bands)
    out = np.empty(keys.size, dtype=ENTRY)
    out["bucket"] = keys.ravel()
    out["rec"] = np.repeat(np.arange(first, first + bands.shape[0], dtype=np.uint64), bands.shape[1])
    return out


#: what is spilled at a time: an ``ENTRY`` array, or ``(entries, bounds)`` grouped by partition
Piece = np.ndarray | tuple[np.ndarray, np.ndarray]


def _routed(piece: Piece, partitions: int) -> Iterator[tuple[int, np.ndarray]]:
    """(partition, entries) of a piece: an ``ENTRY`` array, routed here, or ``(entries,
    bounds)`` already grouped by partition (:func:`_band_pieces`' compiled path)."""
    if isinstance(piece, tuple):
        out, bounds = piece
        for p in range(partitions):
            if bounds[p + 1] > bounds[p]:
                yield p, out[bounds[p]:bounds[p + 1]]
        return
    yield from _route(piece, partitions)


def _size(piece: Piece) -> int:
    return len(piece[0]) if isinstance(piece, tuple) else piece.size


def _spill_local(pieces: Iterable[Piece], partitions: int, tmp: str) -> tuple[list[str], int]:
    paths = [os.path.join(tmp, f"part-{p:05d}.bin") for p in range(partitions)]
    files = [open(p, "ab") for p in paths]
    entries = 0
    try:
        for out in pieces:
            entries += _size(out)
            for p, piece in _routed(out, partitions):
                piece.tofile(files[p])
    finally:
        for f in files:
            f.close()
    return paths, entries


def _spill_url(pieces: Iterable[Piece], partitions: int, root: str) -> tuple[list[str], int]:
    fs, base = get_fs(root)
    entries = 0
    for k, out in enumerate(pieces):
        entries += _size(out)
        for p, piece in _routed(out, partitions):
            with fs.open(join(base, f"part-{p:05d}", f"{k:06d}.bin"), "wb") as f:
                f.write(piece.tobytes())
    return [join(root, f"part-{p:05d}") for p in range(partitions)], entries


def _band_pieces(shards: Iterable[tuple[int, np.ndarray]], partitions: int) -> Iterator[Piece]:
    """Each shard's entries, routed in one compiled pass where numba is installed (the same
    entries in the same order as :func:`_entries` then :func:`_route`)."""
    for first, bands in shards:
        if not bands.size:
            continue
        got = routed_entries(first, bands, partitions)
        if got is None:
            yield _entries(first, bands)
        else:
            flat, bounds = got
            yield flat.astype("<u8", copy=False).view(ENTRY), bounds


def map_spilled(pieces: Iterable[Piece], partitions: int, step: Callable[[str], object],
                spill_dir: str | Path | None = None, run: Callable[[Callable, list], Iterable] = map
                ) -> tuple[list, int]:
    """Route ``ENTRY`` arrays (one piece at a time; a piece may come grouped by partition
    already, as ``(entries, bounds)``) into ``partitions`` hash partitions of their
    ``bucket`` spilled under ``spill_dir`` (a local directory or an fsspec URL, see the module's
    docstring), run ``step(partition)`` on each through ``run`` and remove the spill; returns the
    steps' results, in partition order, and the number of entries."""
    pieces = (p for p in pieces if _size(p))
    if spill_dir is not None and "://" in str(spill_dir):
        root = join(str(spill_dir), f"lsh-{uuid.uuid4().hex[:12]}")
        fs, base = get_fs(root)
        try:
            paths, entries = _spill_url(pieces, partitions, root)
            return list(run(step, paths)), entries
        finally:
            if fs.exists(base):
                fs.rm(base, recursive=True)
    with tempfile.TemporaryDirectory(prefix="lsh-", dir=spill_dir) as tmp:
        paths, entries = _spill_local(pieces, partitions, tmp)
        return list(run(step, paths)), entries


def band_join(shards: Iterable[tuple[int, np.ndarray]], partitions: int, spill_dir: str | Path | None = None,
              run: Callable[[Callable, list], Iterable] = map, n_records: int | None = None
              ) -> tuple[np.ndarray, int, int]:
    """Candidate pairs (a < b, global record indexes, unique) of records sharing a band key, as
    ascending codes ``a * m + b`` (8 bytes a pair, half of two arrays of ends).

    ``shards`` yields ``(first_record_index, bands)`` one shard at a time, ``bands`` an
    ``(n, B)`` uint64 matrix; ``spill_dir`` a local directory or an fsspec URL (see the
    module's docstring); ``run(step, partitions)`` maps the per-partition step;
    ``n_records`` bounds the record indexes and is ``m`` (2**31 when not given).
    Returns ``(codes, m, entries)``.
    """
    m = int(n_records) if n_records else 2**31
    found, entries = map_spilled(_band_pieces(shards, partitions), partitions,
                                 functools.partial(_pair_codes_of, m=m), spill_dir, run)
    # the partitions' codes (a pair found in several bands may come from several partitions)
    # are gathered into one array, each partition's let go as it is copied: 8 bytes a pair
    codes = np.empty(sum(len(c) for c in found), dtype=np.int64)
    pos = 0
    for i, c in enumerate(found):
        codes[pos:pos + len(c)] = c
        pos += len(c)
        found[i] = None
    return sorted_unique(codes), m, entries


def pair_members(codes: np.ndarray, m: int, n: int, also: np.ndarray | None = None,
                 chunk: int = 1 << 20) -> np.ndarray:
    """The records (ascending, distinct) that are one end of a pair of ``codes`` (``a * m + b``,
    every record below ``n``) or in ``also``, decoded ``chunk`` codes at a time into a mark per
    record: no array of every pair's ends (16 bytes a pair) is built to find them."""
    mark = np.zeros(n, dtype=bool)
    if also is not None:
        mark[also] = True
    for lo in range(0, len(codes), chunk):
        c = codes[lo:lo + chunk]
        mark[c // m] = True
        mark[c % m] = True
    return np.flatnonzero(mark)


def _distinct_counts(where: str) -> tuple[np.ndarray, np.ndarray]:
    """One partition's keys and, for each, how many distinct records hold it."""
    e = _entries_of(where)
    first = first_of_pairs(e["bucket"], e["rec"])
    return np.unique(e["bucket"][first], return_counts=True)


def key_counts(pieces: Iterable[tuple[np.ndarray, np.ndarray]], partitions: int,
               spill_dir: str | Path | None = None, run: Callable[[Callable, list], Iterable] = map
               ) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct key (sorted) and the number of distinct records holding it.

    ``pieces`` yields ``(keys, records)`` (uint64 keys, record indexes) a piece at a time; each
    hash partition of the keys is counted alone by ``run``'s tasks, so no process sorts every
    key at once; a key lives in one partition only, so the partitions' answers just concatenate.
    """
    def entries():
        for keys, recs in pieces:
            out = np.empty(len(keys), dtype=ENTRY)
            out["bucket"] = keys
            out["rec"] = recs
            yield out

    found, _ = map_spilled(entries(), partitions, _distinct_counts, spill_dir, run)
    keys = np.concatenate([k for k, _ in found]) if found else np.zeros(0, np.uint64)
    counts = np.concatenate([c for _, c in found]) if found else np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    return keys[order], counts[order]


class SketchSubset:
    """Bottom-k sketches of a sorted subset of records (``wanted``, global indexes), gathered
    shard by shard; :meth:`index` maps global indexes of the subset to rows of it."""

    def __init__(self, wanted: np.ndarray, shards: Iterator[tuple[int, tuple[np.ndarray, np.ndarray], np.ndarray]],
                 max_len: int):
        """``max_len``: the longest a sketch can be (the sketch size). The values are copied into
        one array as each shard comes (gathered and concatenated, they were held twice: ~230 MB
        more at a million records)."""
        self.wanted = np.asarray(wanted, dtype=np.int64)
        self._lut: np.ndarray | None = None  # record -> row, built on the first index()
        # room for every wanted sketch at its longest; the pages of an empty array are backed by
        # memory only once written, so this costs what is filled
        buf = np.empty(len(self.wanted) * int(max_len), dtype=np.uint32)
        lens, nsh, pos = [], [], 0
        for first, (v, o), counts in shards:
            n = len(o) - 1
            lo, hi = np.searchsorted(self.wanted, [first, first + n])
            if hi == lo:
                continue
            rows = self.wanted[lo:hi] - first
            tv, to = take_ragged(v, o, rows)
            if pos + len(tv) > len(buf) or (len(to) > 1 and int(np.diff(to).max()) > max_len):
                raise ValueError(f"a sketch longer than max_len={max_len} in the shard at record {first}")
            buf[pos:pos + len(tv)] = tv
            pos += len(tv)
            lens.append(np.diff(to))
            nsh.append(np.asarray(counts)[rows])
        self.values = buf[:pos]
        offsets = np.zeros(sum(len(x) for x in lens) + 1, dtype=np.int64)
        if lens:
            np.cumsum(np.concatenate(lens), out=offsets[1:])
        self.offsets = offsets
        self.nsh = np.concatenate(nsh) if nsh else np.zeros(0, np.int64)
        if len(self.nsh) != len(self.wanted):
            raise ValueError(f"sketches of {len(self.nsh)} records found for {len(self.wanted)} wanted")

    def index(self, records: np.ndarray) -> np.ndarray:
        """Rows of ``records`` in the subset (``np.searchsorted(wanted, records)``): a gather
        from a table over the wanted range when every record is wanted (a binary search per
        candidate pair was 0.7 s of a million-record scan), else the search itself."""
        records = np.asarray(records)
        if len(records) and len(self.wanted):
            lut = self._table()
            if int(records.min()) >= 0 and int(records.max()) < len(lut):
                rows = lut[records]
                if int(rows.min()) >= 0:
                    return rows.astype(np.int64)
        return np.searchsorted(self.wanted, records)

    def _table(self) -> np.ndarray:
        """Record index -> row of the subset (-1 for records not wanted), over 0..max(wanted)."""
        if self._lut is None:
            width = np.int32 if len(self.wanted) < 2**31 else np.int64
            lut = np.full(int(self.wanted[-1]) + 1, -1, dtype=width)
            lut[self.wanted] = np.arange(len(self.wanted), dtype=width)
            self._lut = lut
        return self._lut

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.values, self.offsets, self.nsh
