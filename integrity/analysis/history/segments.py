"""Segments of the history index (see :mod:`integrity.analysis.history`): one immutable, sorted
key array with its records and payload on disk, memory-mapped on use; lookup results
(:class:`Hits`) and the ragged-array helpers they need."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from integrity.analysis.sorting import HAVE_NUMBA, njit


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Segment:
    """One immutable part of the history (one scan's approved shards, or a merge of several)."""

    root: Path
    id: str
    kind: str
    seq: int
    params: dict
    n_records: int
    shards: list[dict]  # sha256, shard, scan_id, added_at, row0, row1
    created_at: str = ""

    @property
    def path(self) -> Path:
        return self.root / "segments" / self.kind / self.id

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "seq": self.seq, "params": self.params,
                "n_records": self.n_records, "shards": self.shards, "created_at": self.created_at}

    @cached_property
    def keys(self) -> np.ndarray:
        p = self.path / "keys.npy"
        return np.load(p, mmap_mode="r") if p.exists() else np.zeros(0, dtype=np.uint64)

    @cached_property
    def key_rows(self) -> np.ndarray:
        p = self.path / "key_rows.npy"
        return np.load(p, mmap_mode="r") if p.exists() else np.zeros(0, dtype=np.int64)

    def payload(self, name: str) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """A row-aligned payload, or (values, offsets) of a ragged one (memory-mapped)."""
        flat = self.path / f"payload_{name}.npy"
        if flat.exists():
            return np.load(flat, mmap_mode="r")
        return (np.load(self.path / f"payload_{name}.values.npy", mmap_mode="r"),
                np.load(self.path / f"payload_{name}.offsets.npy", mmap_mode="r"))

    def payload_names(self) -> list[str]:
        names = set()
        for f in self.path.glob("payload_*.npy"):
            stem = f.name[len("payload_"):-len(".npy")]
            names.add(stem.rsplit(".", 1)[0] if stem.endswith((".values", ".offsets")) else stem)
        return sorted(names)

    @cached_property
    def records(self) -> pa.Table:
        """record_id, row, shard_no (memory-mapped; take() reads only what it needs)."""
        with pa.memory_map(str(self.path / "records.arrow")) as src:
            return pa.ipc.open_file(src).read_all()

    def shard_starts(self) -> np.ndarray:
        return np.array([s["row0"] for s in self.shards], dtype=np.int64)

    def excluded_rows(self, rows: np.ndarray, shas: set[str]) -> np.ndarray:
        """Which of ``rows`` belong to content whose SHA-256 is in ``shas``."""
        ranges = [(s["row0"], s["row1"]) for s in self.shards if s["sha256"] in shas]
        if not ranges or len(rows) == 0:
            return np.zeros(len(rows), dtype=bool)
        r0 = np.array([r[0] for r in ranges], dtype=np.int64)
        r1 = np.array([r[1] for r in ranges], dtype=np.int64)
        order = np.argsort(r0)
        r0, r1 = r0[order], r1[order]
        i = np.searchsorted(r0, rows, side="right") - 1
        return (i >= 0) & (rows < r1[np.maximum(i, 0)])


@dataclass
class Hits:
    """Result of a lookup: for query key ``query[k]``, history record ``row[k]`` of
    live segment ``segment[k]``; ``order`` sorts records oldest first;
    ``count[q]`` is the number of live history records holding query key ``q``
    (exact up to ``max_hits`` per segment, an upper bound beyond)."""

    query: np.ndarray
    segment: np.ndarray
    row: np.ndarray
    order: np.ndarray
    count: np.ndarray
    segments: list[Segment] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.query)


def _expand(lo: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) for ranges [lo, lo + n)."""
    total = int(n.sum())
    owner = np.repeat(np.arange(len(lo)), n)
    pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
    return owner, pos


@njit(cache=True)
def _gather_ranges(values, starts, new_off):
    out = np.empty(new_off[-1], dtype=values.dtype)
    for r in range(starts.shape[0]):
        lo = starts[r]
        at = new_off[r]
        for i in range(new_off[r + 1] - at):
            out[at + i] = values[lo + i]
    return out


def take_ragged(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of the ragged rows ``rows`` of (values, offsets)."""
    rows = np.asarray(rows, dtype=np.int64)
    offsets = np.asarray(offsets)
    starts = offsets[rows].astype(np.int64)
    lens = offsets[rows + 1].astype(np.int64) - starts
    new_off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=new_off[1:])
    if len(rows) == len(offsets) - 1 and np.array_equal(rows, np.arange(len(rows))):
        return np.asarray(values[int(offsets[0]):int(offsets[-1])]), new_off
    values = np.asarray(values)
    if HAVE_NUMBA and values.dtype.kind in "iuf" and values.ndim == 1 and len(rows) >= 1024:
        # a compiled copy of each row's slice: no index array of every gathered value
        return _gather_ranges(values, starts, new_off), new_off
    pos = np.arange(int(new_off[-1]), dtype=np.int64)
    pos += np.repeat(starts - new_off[:-1], lens)
    return np.asarray(values[pos]), new_off
