"""Records done / total and an ETA while a scan reads its shards, for every runner.

A :class:`ScanProgress` is fed two ways:

- batch by batch, by :func:`integrity.engine.shard.scan_shard` running in this process
  (inline runner, the engine's thread pool, Prefect's thread runner): it finds the tracker
  of its scan with :func:`tracker` (a registry keyed by scan id, so nothing unpicklable
  travels in the :class:`~integrity.engine.spec.ScanSpec`);
- shard by shard, by whoever collects the shard results (:meth:`ScanProgress.shard_done`):
  for Dask workers, which run in other processes, that is the only signal.

The total is estimated from the bytes of the shards still to read and the records per byte
seen so far (exact once every shard is read); the ETA from the share of bytes done.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = ["ScanProgress", "Snapshot", "ensure", "format_snapshot", "register", "tracker", "unregister"]


@dataclass(frozen=True)
class Snapshot:
    """Where a scan's shard stage is."""

    records_done: int
    records_total: int | None  # estimate until every shard is read (None: nothing to go on yet)
    exact: bool
    shards_done: int
    shards_total: int
    elapsed_s: float
    eta_s: float | None
    fraction: float  # 0..1 of the bytes to read


class ScanProgress:
    """Thread-safe progress of one scan's shard stage (see the module docstring)."""

    def __init__(self, sizes: dict[str, int] | None = None, on_update: Callable[[Snapshot], None] | None = None,
                 every_s: float = 0.5) -> None:
        self.sizes: dict[str, int] = {}
        self.total_bytes = 0
        self.on_update = on_update
        self.every_s = every_s
        self._lock = threading.Lock()
        self._reading: dict[str, int] = {}  # rows read so far of shards in progress
        self._done: dict[str, int] = {}  # rows of finished shards
        self._failed: set[str] = set()  # unreadable shards: done, but no guide to records per byte
        self._t0 = time.monotonic()
        self._last = 0.0
        if sizes is not None:
            self.start(sizes)

    def start(self, sizes: dict[str, int] | Iterable) -> None:
        """The shards to read (name -> bytes, or shard refs with ``name`` and ``size``); starts the clock."""
        if not isinstance(sizes, dict):
            sizes = {r.name: r.size for r in sizes}
        with self._lock:
            self.sizes = {name: max(int(size or 0), 0) for name, size in sizes.items()}
            self.total_bytes = sum(self.sizes.values())
            self._t0 = time.monotonic()
        self._maybe_report(force=True)

    def batch(self, shard: str, rows: int) -> None:
        """``rows`` more records of ``shard`` were read and checked."""
        with self._lock:
            if shard in self._done:
                return
            self._reading[shard] = self._reading.get(shard, 0) + int(rows)
        self._maybe_report()

    def shard_done(self, shard: str, rows: int, ok: bool = True) -> None:
        """``shard`` is finished (read or from the cache; ``ok=False``: unreadable) with ``rows`` records."""
        with self._lock:
            self._reading.pop(shard, None)
            self._done[shard] = int(rows or 0) if ok else 0
            if not ok:
                self._failed.add(shard)
        self._maybe_report(force=len(self._done) == len(self.sizes))

    def snapshot(self) -> Snapshot:
        with self._lock:
            done_rows = sum(self._done.values())
            done_bytes = sum(self.sizes.get(s, 0) for s in self._done)
            failed_bytes = sum(self.sizes.get(s, 0) for s in self._failed)
            reading = dict(self._reading)
            n_done = len(self._done)
        elapsed = time.monotonic() - self._t0
        read_bytes = done_bytes - failed_bytes
        per_byte = done_rows / read_bytes if read_bytes > 0 and done_rows else None
        read_rows = sum(reading.values())
        records = done_rows + read_rows
        # bytes done: finished shards, plus the share of each shard in progress its rows suggest
        partial = 0.0
        if per_byte:
            for shard, rows in reading.items():
                size = self.sizes.get(shard, 0)
                partial += min(rows / per_byte, 0.99 * size) if size else 0.0
        exact = n_done == len(self.sizes)
        if exact:
            total: int | None = done_rows
        elif per_byte:
            total = max(records, done_rows + int(round(per_byte * (self.total_bytes - done_bytes))))
        else:
            total = None
        fraction = 1.0 if exact or not self.total_bytes else min((done_bytes + partial) / self.total_bytes, 1.0)
        eta = None
        if not exact and fraction > 0.0:
            eta = elapsed * (1.0 - fraction) / fraction
        return Snapshot(records, total, exact, n_done, len(self.sizes), elapsed, eta, fraction)

    def _maybe_report(self, force: bool = False) -> None:
        if self.on_update is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        self.on_update(self.snapshot())


def format_snapshot(s: Snapshot) -> str:
    """``"1,234 / ~5,600 records, 3/12 shards, ETA 1m05s"``."""
    total = "?" if s.records_total is None else f"{'' if s.exact else '~'}{s.records_total:,}"
    eta = "" if s.exact else f", ETA {_duration(s.eta_s)}"
    return f"{s.records_done:,} / {total} records, {s.shards_done}/{s.shards_total} shards{eta}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


_TRACKERS: dict[str, ScanProgress] = {}
_REG_LOCK = threading.Lock()


def register(scan_id: str, progress: ScanProgress) -> None:
    """Make ``progress`` the tracker that shard passes of ``scan_id`` in this process report to."""
    with _REG_LOCK:
        _TRACKERS[scan_id] = progress


def unregister(scan_id: str) -> None:
    with _REG_LOCK:
        _TRACKERS.pop(scan_id, None)


def tracker(scan_id: str) -> ScanProgress | None:
    """The tracker of ``scan_id`` in this process, or None (e.g. in a Dask worker)."""
    return _TRACKERS.get(scan_id)


def ensure(scan_id: str) -> tuple[ScanProgress, bool]:
    """The tracker a caller registered for ``scan_id`` (e.g. the CLI, to draw it), or a new
    registered one; the flag says whether it is new (then the engine unregisters it at the end)."""
    with _REG_LOCK:
        found = _TRACKERS.get(scan_id)
        if found is not None:
            return found, False
        _TRACKERS[scan_id] = ScanProgress()
        return _TRACKERS[scan_id], True
