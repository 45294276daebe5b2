"""``provenance.changed``: approved content that is not what was approved.

Split-view poisoning (Carlini et al., "Poisoning Web-Scale Training Datasets
is Practical", 2023) changes what a URL serves after the data was vetted. This
check keeps a manifest of what each approved shard and record held, in the
state directory (``STATE_DIR/provenance.sqlite``), and reports content that
changed since:

* shard level: a shard whose URI was approved before with another SHA-256 (the
  finding carries the old and new hashes, when and in which scan the old
  content was approved, and how many records changed, appeared or vanished);
* record level: a record whose id was approved before (in the same shard, or
  in exactly one other shard) with other content. A record's content hash is
  SHA-256 over its content fields (``text``, ``prompt``, ``response``,
  ``caption``, ``label``, ``image``), each as name, a separator and its value.
  Matching records across shards (``match_across_shards``, on by default)
  catches a URL re-crawled into a new shard with other content; turn it off
  when record ids are unique only within their shard. When a shard has no id column (record ids are row positions) record-level
  comparison is skipped for it: positions say nothing about identity.

The manifest is written after the verdicts (:meth:`after_verdicts`) for the
shards that were approved (``pass`` or ``warn``): a changed shard that is
quarantined keeps its old approved content in the manifest, so it is reported
again until someone releases the new content (which approves it). Each
approval is also appended to a history table (an audit trail of which content
a URI served when). ``integrity manifest export`` signs off a whole approved
corpus for a training job (see :mod:`integrity.ledger.manifest`).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import contextlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow as pa
from pydantic import Field

from connectors.schema import CONTENT_FIELDS, TEXT_FIELDS
from integrity.checks.base import CORPUS_FINDING_COLUMNS, Check, CheckOptions, CheckOutput, CorpusContext
from integrity.checks.options import Severity

#: the fields of a record's content hash, in this order (the hashes are stored between scans)
HASHED_FIELDS = (*TEXT_FIELDS, "label", "image")
DB_NAME = "provenance.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    uri TEXT PRIMARY KEY, shard TEXT NOT NULL, sha256 TEXT NOT NULL, rows INTEGER,
    scan_id TEXT, approved_at TEXT NOT NULL, positional_ids INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS shard_history (
    uri TEXT NOT NULL, shard TEXT NOT NULL, sha256 TEXT NOT NULL, scan_id TEXT, approved_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS shard_history_uri ON shard_history(uri);
CREATE TABLE IF NOT EXISTS records (
    uri TEXT NOT NULL, record_id TEXT NOT NULL, hash BLOB NOT NULL, scan_id TEXT,
    PRIMARY KEY (uri, record_id));
CREATE INDEX IF NOT EXISTS records_id ON records(record_id);
"""


def record_hashes(batch: pa.RecordBatch) -> list[bytes]:
    """SHA-256 of each record's content fields (see the module docstring)."""
    names = [f for f in HASHED_FIELDS if f in batch.schema.names]
    cols = [batch.column(f).to_pylist() for f in names]
    out = []
    for i in range(batch.num_rows):
        h = hashlib.sha256()
        for name, col in zip(names, cols):
            v = col[i]
            if v is None:
                continue
            if isinstance(v, dict):  # image struct {bytes, path}
                v = v.get("bytes") or (v.get("path") or "").encode()
            h.update(name.encode() + b"\x1f" + (v if isinstance(v, (bytes, bytearray)) else str(v).encode("utf-8"))
                     + b"\x1e")
        out.append(h.digest())
    return out


class ProvenanceStore:
    """The approved-content manifest in ``STATE_DIR/provenance.sqlite``."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / DB_NAME

    @contextlib.contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL stays consistent after any crash; a power loss can only undo the last
            # approvals, which the next scan makes again (this is derived state, not user data)
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
            if write:
                con.execute("BEGIN IMMEDIATE")
            yield con
            if write:
                con.execute("COMMIT")
        except BaseException:
            if write and con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def approved_shards(self, uris: list[str]) -> dict[str, dict]:
        if not self.path.exists() or not uris:
            return {}
        with self.connect() as con:
            con.row_factory = sqlite3.Row
            out = {}
            for i in range(0, len(uris), 500):
                part = uris[i: i + 500]
                q = f"SELECT * FROM shards WHERE uri IN ({','.join('?' * len(part))})"
                out.update({r["uri"]: dict(r) for r in con.execute(q, part)})
            return out

    def approved_records(self, uri: str, ids: list[str]) -> pl.DataFrame:
        """Approved (uri, record_id, hash) rows for these ids: under ``uri``, or under
        exactly one other uri (a record that moved between shards)."""
        schema = {"a_uri": pl.Utf8, "record_id": pl.Utf8, "a_hash": pl.Binary, "a_scan": pl.Utf8}
        if not self.path.exists() or not ids:
            return pl.DataFrame(schema=schema)
        with self.connect() as con:
            con.execute("CREATE TEMP TABLE q(record_id TEXT PRIMARY KEY)")
            con.executemany("INSERT OR IGNORE INTO q VALUES (?)", ((i,) for i in ids))
            rows = con.execute(
                "SELECT r.uri, r.record_id, r.hash, r.scan_id FROM records r JOIN q ON q.record_id = r.record_id"
            ).fetchall()
        df = pl.DataFrame(rows, schema=schema, orient="row")
        same = df.filter(pl.col("a_uri") == uri)
        other = df.filter((pl.col("a_uri") != uri) & ~pl.col("record_id").is_in(same["record_id"].implode()))
        other = other.filter(pl.len().over("record_id") == 1)
        return pl.concat([same, other])

    def approve(self, shard: str, uri: str, sha256: str, rows: int, scan_id: str, positional: bool,
                records: pl.DataFrame | None) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.connect(write=True) as con:
            cur = con.execute("SELECT sha256 FROM shards WHERE uri = ?", (uri,)).fetchone()
            if cur is not None and cur[0] == sha256:
                return
            con.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (uri, shard, sha256, rows, scan_id, now, int(positional)))
            con.execute("INSERT INTO shard_history VALUES (?, ?, ?, ?, ?)", (uri, shard, sha256, scan_id, now))
            con.execute("DELETE FROM records WHERE uri = ?", (uri,))
            if records is not None and not positional:
                con.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
                                ((uri, rid, h, scan_id) for rid, h in records.select("record_id", "h").iter_rows()))

    def history(self, uri: str) -> list[dict]:
        if not self.path.exists():
            return []
        with self.connect() as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(
                "SELECT * FROM shard_history WHERE uri = ? ORDER BY approved_at", (uri,))]


class ProvenanceCheck(Check):
    name = "provenance.changed"
    report_section = "provenance"
    description = "Shards and records approved before whose content changed since (split-view poisoning)."
    requires = CONTENT_FIELDS
    default_severity = "critical"
    corpus_level = True
    version = 1
    class Options(CheckOptions):
        shard_severity: Severity = Field("critical", description="a changed approved shard (critical fails the gate)")
        record_severity: Severity = Field("warn", description="each changed record (counts toward warn.flagged_share)")
        max_record_findings: int = Field(1000, ge=0, description="changed records reported per shard, at most")
        match_across_shards: bool = Field(True, description="a record id approved in another shard counts (ids must be global)")

    def process_batch(self, batch: pa.RecordBatch) -> CheckOutput:
        ids = batch.column("record_id").cast(pa.string())
        rows = batch.column("row")
        df = pl.DataFrame({
            "record_id": pl.from_arrow(ids).cast(pl.Utf8),
            "row": pl.from_arrow(rows).cast(pl.Int64),
            "h": pl.Series("h", record_hashes(batch), dtype=pl.Binary),
            "uri": pl.Series("uri", [self.shard.uri if self.shard else ""] * batch.num_rows, dtype=pl.Utf8),
        })
        return CheckOutput(features=df)

    @staticmethod
    def _positional(df: pl.DataFrame) -> bool:
        return bool(df.height) and bool((df["record_id"] == df["row"].cast(pl.Utf8)).all())

    def corpus_pass(self, features: pl.LazyFrame, ctx: CorpusContext) -> pl.DataFrame | None:
        store = ProvenanceStore(ctx.state_dir)
        shards = features.select("shard", "uri").unique().collect()
        approved = store.approved_shards(shards["uri"].to_list())
        rows: list[dict] = []
        for shard, uri in shards.sort("shard").iter_rows():
            old = approved.get(uri)
            new_sha = ctx.shard_sha256.get(shard)
            if old is not None and (new_sha is None or old["sha256"] == new_sha):
                continue  # unchanged since it was approved
            if old is None and not self.options["match_across_shards"]:
                continue  # a new shard, and record ids are not global
            cur = ctx.shard_frame(self.name, shard, features).select("record_id", "row", "h").collect()
            positional = self._positional(cur)
            changed = pl.DataFrame()
            n_added = n_removed = 0
            if not positional:
                prev = store.approved_records(uri, cur["record_id"].to_list())
                if not self.options["match_across_shards"]:
                    prev = prev.filter(pl.col("a_uri") == uri)
                joined = cur.unique("record_id", keep="first").join(prev, on="record_id", how="inner")
                changed = joined.filter(pl.col("h") != pl.col("a_hash"))
                if old is not None and not old.get("positional_ids"):
                    same_uri = prev.filter(pl.col("a_uri") == uri)
                    n_added = int(cur.filter(~pl.col("record_id").is_in(same_uri["record_id"].implode())).height)
                    n_removed = _count_removed(store, uri, cur["record_id"].to_list())
            if old is not None:
                detail = {"kind": "shard", "uri": uri, "old_sha256": old["sha256"], "new_sha256": new_sha,
                          "approved_at": old["approved_at"], "approved_in_scan": old["scan_id"],
                          "rows_then": old["rows"], "rows_now": cur.height,
                          "records_changed": None if positional else changed.height,
                          "records_added": None if positional else n_added,
                          "records_removed": None if positional else n_removed,
                          "note": ("record ids are row positions; records were not compared" if positional else
                                   "content differs from what was approved for this URI")}
                rows.append({"shard": shard, "record_id": None, "score": 1.0,
                             "severity": self.options["shard_severity"], "detail": json.dumps(detail)})
            for r in changed.head(int(self.options["max_record_findings"])).iter_rows(named=True):
                detail = {"kind": "record", "old_hash": r["a_hash"].hex(), "new_hash": r["h"].hex(),
                          "approved_in": r["a_uri"], "approved_in_scan": r["a_scan"], "moved": r["a_uri"] != uri}
                rows.append({"shard": shard, "record_id": r["record_id"], "score": 1.0,
                             "severity": self.options["record_severity"], "detail": json.dumps(detail)})
        return pl.DataFrame(rows, schema=CORPUS_FINDING_COLUMNS) if rows else None

    def after_verdicts(self, features: pl.LazyFrame, approved: list[str], ctx: CorpusContext) -> None:
        store = ProvenanceStore(ctx.state_dir)
        shards = features.filter(pl.col("shard").is_in(approved)).select("shard", "uri").unique().collect()
        known = store.approved_shards(shards["uri"].to_list())
        for shard, uri in shards.iter_rows():
            sha = ctx.shard_sha256.get(shard)
            if not sha or (uri in known and known[uri]["sha256"] == sha):
                continue
            recs = ctx.shard_frame(self.name, shard, features).select("record_id", "row", "h").collect()
            store.approve(shard, uri, sha, recs.height, ctx.scan_id, self._positional(recs),
                          recs.unique("record_id", keep="first"))


def _count_removed(store: ProvenanceStore, uri: str, ids_now: list[str]) -> int:
    with store.connect() as con:
        con.execute("CREATE TEMP TABLE now(record_id TEXT PRIMARY KEY)")
        con.executemany("INSERT OR IGNORE INTO now VALUES (?)", ((i,) for i in ids_now))
        return int(con.execute("SELECT COUNT(*) FROM records r WHERE r.uri = ? AND r.record_id NOT IN "
                               "(SELECT record_id FROM now)", (uri,)).fetchone()[0])
