"""The history index itself (see :mod:`integrity.analysis.history`): manifest, lock, lookups,
adding approved content, dropping content, and merging segments."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from integrity.analysis.history.segments import Hits, Segment, _expand, _now, take_ragged
from integrity.analysis.history.writing import joined, joined_payload, write_segment
from integrity.analysis.sorting import stable_sort_u64

log = logging.getLogger(__name__)

DIRNAME = "dedup_history"
RECORD_COL = "record_id"
MANIFEST_VERSION = 1
#: a segment is merged into its predecessor while that one holds at most this many times its records
MERGE_FACTOR = 2
#: merges stop at this many records: a merge holds its segments in memory, so this bounds
#: a night's memory whatever the size of the history (beyond it, segments just accumulate:
#: a lookup costs one binary search per segment)
MAX_MERGED_RECORDS = 1_000_000


class HistoryIndex:
    """The dedup history of one state directory."""

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / DIRNAME

    # -- manifest and locking --------------------------------------------
    def exists(self) -> bool:
        return (self.root / "manifest.json").exists()

    @contextlib.contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _manifest(self) -> dict:
        p = self.root / "manifest.json"
        if not p.exists():
            return {"version": MANIFEST_VERSION, "seq": 0, "segments": [], "dropped": {}}
        m = json.loads(p.read_text())
        if m.get("version") != MANIFEST_VERSION:
            raise RuntimeError(f"{p}: unknown dedup history version {m.get('version')!r}")
        return m

    def _write_manifest(self, m: dict) -> None:
        tmp = self.root / f".manifest.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(m, indent=1, sort_keys=True))
        os.replace(tmp, self.root / "manifest.json")

    def _segments(self, m: dict, kind: str, params: Mapping | None = None) -> list[Segment]:
        segs = [Segment(root=self.root, **{k: s[k] for k in ("id", "kind", "seq", "params", "n_records", "shards")},
                        created_at=s.get("created_at", ""))
                for s in m["segments"] if s["kind"] == kind and (params is None or s["params"] == dict(params))]
        return sorted(segs, key=lambda s: s.seq)

    # -- reading ---------------------------------------------------------
    def segments(self, kind: str, params: Mapping | None = None) -> list[Segment]:
        """Segments of ``kind`` (made with ``params`` when given), oldest first."""
        if not self.exists():
            return []
        with self._lock(False):
            return self._segments(self._manifest(), kind, params)

    def dropped(self) -> dict[str, dict]:
        """SHA-256 of dropped content -> when, why, and the segments it was dropped from."""
        return self._manifest()["dropped"] if self.exists() else {}

    def contents(self, kind: str | None = None) -> pl.DataFrame:
        """One row per (segment, shard) still live: kind, segment, sha256, shard, scan_id, added_at, records."""
        rows = []
        if self.exists():
            m = self._manifest()
            for s in m["segments"]:
                if kind is not None and s["kind"] != kind:
                    continue
                for sh in s["shards"]:
                    if s["id"] in m["dropped"].get(sh["sha256"], {}).get("segments", []):
                        continue
                    rows.append({"kind": s["kind"], "segment": s["id"], "sha256": sh["sha256"], "shard": sh["shard"],
                                 "scan_id": sh.get("scan_id"), "added_at": sh.get("added_at"),
                                 "records": sh["row1"] - sh["row0"]})
        return pl.DataFrame(rows, schema={"kind": pl.Utf8, "segment": pl.Utf8, "sha256": pl.Utf8, "shard": pl.Utf8,
                                          "scan_id": pl.Utf8, "added_at": pl.Utf8, "records": pl.Int64})

    def live_sha256(self, kind: str, params: Mapping | None = None) -> set[str]:
        """SHA-256 of the content that ``kind`` holds and that is not dropped."""
        if not self.exists():
            return set()
        m = self._manifest()
        out = set()
        for s in self._segments(m, kind, params):
            for sh in s.shards:
                if s.id not in m["dropped"].get(sh["sha256"], {}).get("segments", []):
                    out.add(sh["sha256"])
        return out

    def _excluded_for(self, m: dict, seg: Segment, exclude: set[str]) -> set[str]:
        dropped = {sha for sha, d in m["dropped"].items() if seg.id in d.get("segments", [])}
        return dropped | exclude

    def lookup(self, kind: str, params: Mapping, keys: np.ndarray, exclude: Iterable[str] = (),
               max_hits: int = 16) -> Hits:
        """History records holding each of ``keys`` (at most ``max_hits`` per key and
        segment, oldest first), skipping content whose SHA-256 is in ``exclude`` or
        was dropped."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        empty = Hits(query=np.zeros(0, np.int64), segment=np.zeros(0, np.int64), row=np.zeros(0, np.int64),
                     order=np.zeros(0, np.int64), count=np.zeros(len(keys), np.int64))
        if not self.exists() or len(keys) == 0:
            return empty
        exclude = set(exclude)
        with self._lock(False):
            m = self._manifest()
            segs = self._segments(m, kind, params)
            others = [s for s in m["segments"] if s["kind"] == kind and s["params"] != dict(params)]
            if others:
                log.warning("dedup history: %d %s segment(s) were made with other parameters and are not compared; "
                            "they are replaced as content is approved again", len(others), kind)
            out_q, out_s, out_r, out_o = [], [], [], []
            count = np.zeros(len(keys), dtype=np.int64)
            for si, seg, c0, lo, hi in self._ranges(segs, keys):
                has = np.flatnonzero(hi > lo)
                if len(has) == 0:
                    continue
                ex = self._excluded_for(m, seg, exclude)
                start, end = lo[has], hi[has]
                has = has + c0
                need = np.full(len(has), max_hits, dtype=np.int64)
                count[has] += end - start
                while len(has):
                    take = np.minimum(need, end - start)
                    owner, pos = _expand(start, take)
                    rows = np.asarray(seg.key_rows[pos], dtype=np.int64)
                    bad = seg.excluded_rows(rows, ex) if ex else np.zeros(len(rows), dtype=bool)
                    if bad.any():
                        np.subtract.at(count, has[owner[bad]], 1)
                    good = ~bad
                    out_q.append(has[owner[good]])
                    out_s.append(np.full(int(good.sum()), si, dtype=np.int64))
                    out_r.append(rows[good])
                    out_o.append(seg.seq * (1 << 40) + rows[good])
                    got = np.bincount(owner[good], minlength=len(has))
                    need = need - got
                    start = start + take
                    more = (need > 0) & (start < end)
                    has, start, end, need = has[more], start[more], end[more], need[more]
        if not out_q:
            empty.count = count
            empty.segments = segs
            return empty
        return Hits(query=np.concatenate(out_q), segment=np.concatenate(out_s), row=np.concatenate(out_r),
                    order=np.concatenate(out_o), count=count, segments=segs)

    @staticmethod
    def _ranges(segs: list[Segment], keys: np.ndarray, chunk: int = 1 << 20):
        """(segment number, segment, chunk start, lo, hi) of each query chunk: the key
        range [lo, hi) of ``keys[c0:c0+chunk]`` in the segment (binary searches in a
        memory map: only the pages on the search paths are read)."""
        for c0 in range(0, len(keys), chunk):
            part = keys[c0:c0 + chunk]
            for si, seg in enumerate(segs):
                sk = seg.keys
                if len(sk) == 0:
                    continue
                yield si, seg, c0, np.searchsorted(sk, part, side="left"), np.searchsorted(sk, part, side="right")

    @staticmethod
    def describe(hits: Hits, index: np.ndarray | None = None) -> pl.DataFrame:
        """record_id, shard, sha256, scan_id of the hits (all, or those at ``index``, in
        that order); ``hit`` is the hit's position in ``hits``."""
        idx = np.arange(len(hits)) if index is None else np.asarray(index, dtype=np.int64)
        schema = {"hit": pl.Int64, "record_id": pl.Utf8, "shard": pl.Utf8, "sha256": pl.Utf8, "scan_id": pl.Utf8}
        seg_of = hits.segment[idx]
        frames = []
        for si in np.unique(seg_of):
            seg = hits.segments[si]
            pos = np.flatnonzero(seg_of == si)
            rec = seg.records.take(pa.array(hits.row[idx[pos]]))
            shard_no = rec.column("shard_no").to_numpy()
            frames.append(pl.DataFrame({
                "_pos": pos,
                "hit": idx[pos],
                "record_id": rec.column("record_id").to_pylist(),
                "shard": [seg.shards[i]["shard"] for i in shard_no],
                "sha256": [seg.shards[i]["sha256"] for i in shard_no],
                "scan_id": [seg.shards[i].get("scan_id") for i in shard_no],
            }, schema={"_pos": pl.Int64, **schema}))
        if not frames:
            return pl.DataFrame(schema=schema)
        return pl.concat(frames).sort("_pos").drop("_pos")

    @staticmethod
    def gather(hits: Hits, name: str, index: np.ndarray | None = None):
        """Payload ``name`` of the hits' records, in the order of ``index`` (default: all
        hits): an array, or (values, offsets) for a ragged payload."""
        idx = np.arange(len(hits)) if index is None else np.asarray(index, dtype=np.int64)
        seg_of = hits.segment[idx]
        parts = []
        for si in np.unique(seg_of):
            sel = np.flatnonzero(seg_of == si)
            parts.append((sel, hits.segments[si].payload(name), hits.row[idx[sel]]))
        if not parts:
            return np.zeros(0, dtype=np.uint8)
        if isinstance(parts[0][1], tuple):
            lens = np.zeros(len(idx), dtype=np.int64)
            got = []
            for sel, (vals, offs), rows in parts:
                v, o = take_ragged(vals, offs, rows)
                lens[sel] = np.diff(o)
                got.append((sel, v, o))
            offsets = np.zeros(len(idx) + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
            values = np.empty(int(offsets[-1]), dtype=got[0][1].dtype)
            for sel, v, o in got:
                _, pos = _expand(offsets[sel], np.diff(o))
                values[pos] = v
            return values, offsets
        first = np.asarray(parts[0][1][:0])
        out = np.empty((len(idx),) + first.shape[1:], dtype=first.dtype)
        for sel, arr, rows in parts:
            out[sel] = arr[rows]
        return out

    # -- writing ----------------------------------------------------------
    def add(self, kind: str, params: Mapping, records: pl.DataFrame, keys: np.ndarray | None = None,
            key_rows: np.ndarray | None = None, payload: Mapping[str, Any] | None = None,
            scan_id: str = "", shard_sha256: Mapping[str, str] | None = None,
            keys_sorted: bool = False) -> Segment | None:
        """Add approved content as one new segment.

        ``records``: one row per record with ``shard``, ``record_id``, ``row``, and
        ``sha256`` unless ``shard_sha256`` maps each shard to it; ``keys`` /
        ``key_rows``: any number of keys per record (row index into ``records``);
        ``payload``: arrays with one row per record, or (values, offsets) pairs for
        ragged per-record data, where values may be a list of arrays in record order
        (written one after the other: never concatenated in memory). With
        ``keys_sorted``, ``keys`` are ascending and ``key_rows`` ascending within equal
        keys (:func:`~integrity.analysis.history.writing.sort_record_keys`): not sorted again. Content whose SHA-256 is
        already live in ``kind`` (or unknown) is skipped. Returns the segment, or None
        when nothing was new.
        """
        payload = dict(payload or {})
        keys = np.zeros(0, np.uint64) if keys is None else np.asarray(keys, dtype=np.uint64)
        key_rows = np.zeros(0, np.int64) if key_rows is None else np.asarray(key_rows)
        n = records.height
        # runs of equal content (records arrive shard by shard)
        col = "sha256" if shard_sha256 is None else "shard"
        runs = records.select(pl.col(col).rle()).unnest(col)
        lens = runs["len"].to_numpy().astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        run_val = runs["value"].to_list()
        run_shard = run_val if shard_sha256 is not None else \
            records["shard"].gather(pl.Series(starts)).to_list()
        run_sha = [shard_sha256.get(v) if shard_sha256 is not None else v for v in run_val]
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(True):
            m = self._manifest()
            live = set()
            for seg in self._segments(m, kind, params):
                for sh in seg.shards:
                    if seg.id not in m["dropped"].get(sh["sha256"], {}).get("segments", []):
                        live.add(sh["sha256"])
            # content kept: new, known, each once (a content split in several runs is put together)
            groups: dict[str, list[int]] = {}
            for r, sha in enumerate(run_sha):
                if sha and sha not in live:
                    groups.setdefault(sha, []).append(r)
            if not groups:
                return None
            order_runs = [r for rs in groups.values() for r in rs]
            if order_runs == list(range(len(run_sha))):
                old_index = None  # every record, in place: no copies
                m_new = n
            else:
                old_index = np.concatenate([np.arange(starts[r], starts[r] + lens[r]) for r in order_runs])
                m_new = len(old_index)
            shards: list[dict] = []
            shard_no = np.zeros(m_new, dtype=np.int32)
            now = _now()
            pos = 0
            for k, (sha, rs) in enumerate(groups.items()):
                size = int(sum(lens[r] for r in rs))
                shards.append({"sha256": sha, "shard": run_shard[rs[0]], "scan_id": scan_id, "added_at": now,
                               "row0": pos, "row1": pos + size})
                shard_no[pos:pos + size] = k
                pos += size
            if old_index is None:
                keys_k, rows_k = keys, key_rows
            else:
                new_of_old = np.full(n, -1, dtype=np.int64)
                new_of_old[old_index] = np.arange(m_new)
                kr = new_of_old[key_rows] if len(key_rows) else key_rows.astype(np.int64)
                keep = kr >= 0
                keys_k, rows_k = keys[keep], kr[keep]
            rows_k = rows_k.astype(np.uint32 if m_new < 2**32 else np.int64, copy=False)
            if not (keys_sorted and old_index is None):  # else sorted by the caller (sort_record_keys)
                if len(rows_k) and np.all(rows_k[1:] >= rows_k[:-1]):
                    # rows already ascending within equal keys: a stable sort by key suffices (compiled:
                    # NumPy's stable argsort of tens of millions of hashed keys is several CPU seconds)
                    keys_k, order = stable_sort_u64(keys_k)
                else:
                    order = np.lexsort((rows_k, keys_k))
                    keys_k = keys_k[order]
                rows_k = rows_k[order]
                del order
            ids = records[RECORD_COL].cast(pl.Utf8).to_arrow()
            rows = records["row"].to_numpy()
            if old_index is not None:
                ids = ids.take(pa.array(old_index))
                rows = rows[old_index]
            seq = m["seq"] + 1
            seg = Segment(root=self.root, id=f"{seq:08d}-{uuid.uuid4().hex[:8]}", kind=kind, seq=seq,
                          params=dict(params), n_records=m_new, shards=shards, created_at=now)
            write_segment(seg, ids, rows, shard_no, keys_k, rows_k,
                          {name: (arr if old_index is None else
                                  take_ragged(joined(arr[0]), arr[1], old_index) if isinstance(arr, tuple)
                                  else np.asarray(arr)[old_index]) for name, arr in payload.items()})
            m["seq"] = seq
            m["segments"].append(seg.to_dict())
            self._write_manifest(m)
            self._compact_locked(m, kind, dict(params))
            return seg

    def drop(self, sha256: str, reason: str = "") -> bool:
        """Stop matching (and at the next compaction remove) content by SHA-256, e.g. a
        shard approved earlier and quarantined since. True when it was in the history."""
        if not self.exists():
            return False
        with self._lock(True):
            m = self._manifest()
            segs = [s["id"] for s in m["segments"] if any(sh["sha256"] == sha256 for sh in s["shards"])]
            if not segs:
                return False
            d = m["dropped"].setdefault(sha256, {"at": _now(), "reason": reason, "segments": []})
            d["segments"] = sorted(set(d["segments"]) | set(segs))
            d["reason"] = reason or d.get("reason", "")
            self._write_manifest(m)
            return True

    def compact(self, kind: str, full: bool = False) -> None:
        """Merge segments (all of the kind's segments with the same parameters when
        ``full``) and remove dropped records."""
        if not self.exists():
            return
        with self._lock(True):
            m = self._manifest()
            for params in {json.dumps(s["params"], sort_keys=True) for s in m["segments"] if s["kind"] == kind}:
                self._compact_locked(m, kind, json.loads(params), full=full)

    def _compact_locked(self, m: dict, kind: str, params: dict, full: bool = False) -> None:
        segs = self._segments(m, kind, params)
        if not segs:
            return
        if full:
            group = segs
        else:
            group, size = [segs[-1]], segs[-1].n_records
            for prev in reversed(segs[:-1]):
                if prev.n_records > MERGE_FACTOR * size or prev.n_records + size > MAX_MERGED_RECORDS:
                    break
                group.insert(0, prev)
                size += prev.n_records
        if len(group) > 1 or self._has_dropped(m, group[0]):
            self._merge(m, group)

    def _has_dropped(self, m: dict, seg: Segment) -> bool:
        return any(seg.id in d.get("segments", []) for d in m["dropped"].values())

    def _merge(self, m: dict, group: list[Segment]) -> None:
        ids, rows, shard_nos, keys, key_rows = [], [], [], [], []
        payload: dict[str, list[np.ndarray]] = {}
        shards: list[dict] = []
        offset = 0
        for seg in group:
            dropped = {sha for sha, d in m["dropped"].items() if seg.id in d.get("segments", [])}
            rec = seg.records
            keep = np.ones(seg.n_records, dtype=bool)
            for sh in seg.shards:
                if sh["sha256"] in dropped:
                    keep[sh["row0"]:sh["row1"]] = False
            new_row = np.cumsum(keep) - 1 + offset
            kept = np.flatnonzero(keep)
            old_no = rec.column("shard_no").to_numpy()
            remap = {}
            for i, sh in enumerate(seg.shards):
                if sh["sha256"] in dropped:
                    continue
                remap[i] = len(shards)
                n = sh["row1"] - sh["row0"]
                r0 = int(new_row[sh["row0"]])
                shards.append({**sh, "row0": r0, "row1": r0 + n})
            ids.extend(pc.take(rec.column("record_id"), pa.array(kept)).to_pylist())
            rows.append(rec.column("row").to_numpy()[kept])
            shard_nos.append(np.array([remap[x] for x in old_no[kept]], dtype=np.int32) if len(kept) else
                             np.zeros(0, np.int32))
            kr = np.asarray(seg.key_rows, dtype=np.int64)
            kk = keep[kr] if len(kr) else np.zeros(0, bool)
            keys.append(np.asarray(seg.keys)[kk])
            key_rows.append(new_row[kr[kk]])
            for name in seg.payload_names():
                arr = seg.payload(name)
                payload.setdefault(name, []).append(take_ragged(arr[0], arr[1], kept) if isinstance(arr, tuple)
                                                    else np.asarray(arr)[kept])
            offset += len(kept)
        allk = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        allr = np.concatenate(key_rows) if key_rows else np.zeros(0, np.int64)
        order = np.lexsort((allr, allk))
        first = group[0]
        merged = Segment(root=self.root, id=f"{first.seq:08d}-{uuid.uuid4().hex[:8]}", kind=first.kind,
                         seq=first.seq, params=first.params, n_records=offset, shards=shards, created_at=_now())
        write_segment(merged, ids, np.concatenate(rows) if rows else np.zeros(0, np.int64),
                      np.concatenate(shard_nos) if shard_nos else np.zeros(0, np.int32), allk[order],
                      allr[order], {k: joined_payload(v) for k, v in payload.items()})
        gone = {s.id for s in group}
        m["segments"] = [s for s in m["segments"] if s["id"] not in gone] + [merged.to_dict()]
        for sha in list(m["dropped"]):
            d = m["dropped"][sha]
            d["segments"] = [s for s in d["segments"] if s not in gone]
            if not d["segments"]:
                del m["dropped"][sha]
        self._write_manifest(m)
        for seg in group:
            shutil.rmtree(seg.path, ignore_errors=True)
