"""The :class:`Ledger`: one SQLite file in the state directory.

Scans, shard verdicts, shard history and the hash memo are here; quarantine
actions and releases are in :mod:`integrity.ledger.quarantine_store`, the
console's users and audit log in :mod:`integrity.ledger.console_store`, the
connections and migrations in :mod:`integrity.ledger.database`.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Any, Iterable, Mapping

from integrity.ledger.console_store import ConsoleStore
from integrity.ledger.quarantine_store import QuarantineStore
from integrity.ledger.records import LedgerError, ScanRecord, ShardVerdict, current_user, utc_now
from integrity.ledger.schema import _ACTION_COLS, _RELEASE_COLS, _SCAN_COLS, _action, _release, _scan, _verdict


class Ledger(QuarantineStore, ConsoleStore):
    """The scanner's durable record (see :mod:`integrity.ledger` for the tables).

    ``Ledger(state_dir)`` creates ``state_dir`` and ``state_dir/ledger.sqlite``
    as needed and migrates the schema. Safe to share between threads.
    """

    def __repr__(self) -> str:
        return f"Ledger({str(self.state_dir)!r})"


    # -- scans -------------------------------------------------------------

    def record_scan_start(
        self,
        *,
        source: str,
        policy: str = "default",
        policy_sha256: str | None = None,
        run_dir: str | os.PathLike | None = None,
        scan_id: str | None = None,
        who: str | None = None,
        flow_run_id: str | None = None,
        corpus: str | None = None,
    ) -> str:
        """Record that a scan started; returns its ``scan_id`` (a new UUID hex unless given).

        ``flow_run_id`` is the Prefect flow run that runs it (the console links to it);
        ``corpus`` names the corpus the scan belongs to (see ``--corpus``).
        Re-recording the start of an existing ``scan_id`` updates its
        source/policy/run_dir/corpus and keeps its original start time.
        """
        scan_id = scan_id or uuid.uuid4().hex
        now = utc_now()
        with self._write() as con:
            con.execute(
                f"""INSERT INTO scans ({_SCAN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?, ?)
                    ON CONFLICT(scan_id) DO UPDATE SET source = excluded.source, policy = excluded.policy,
                        policy_sha256 = excluded.policy_sha256, run_dir = excluded.run_dir,
                        flow_run_id = COALESCE(excluded.flow_run_id, flow_run_id), corpus = excluded.corpus""",
                (scan_id, str(source), str(policy), policy_sha256,
                 None if run_dir is None else os.fspath(run_dir), who or current_user(), now, now, flow_run_id, corpus),
            )
        return scan_id

    def record_scan_end(self, scan_id: str, *, verdict: str, counts: Mapping[str, Any] | None = None) -> None:
        """Record a scan's end: its overall verdict and counts (any JSON-serializable mapping)."""
        with self._write() as con:
            cur = con.execute(
                "UPDATE scans SET finished_at = ?, verdict = ?, counts_json = ? WHERE scan_id = ?",
                (utc_now(), verdict, json.dumps(dict(counts or {}), sort_keys=True, default=str), scan_id),
            )
            if cur.rowcount == 0:
                raise LedgerError(f"unknown scan {scan_id!r}: call record_scan_start first")

    def scan(self, scan_id: str) -> ScanRecord | None:
        """One scan, or None."""
        with self._connect() as con:
            row = con.execute(f"SELECT {_SCAN_COLS} FROM scans WHERE scan_id = ?", (scan_id,)).fetchone()
        return _scan(row) if row else None

    def scans(self, limit: int = 50, corpus: str | None = None) -> list[ScanRecord]:
        """The most recent scans (of one corpus when given), newest first."""
        where, args = ("WHERE corpus = ?", [corpus]) if corpus is not None else ("", [])
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {_SCAN_COLS} FROM scans {where} ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (*args, int(limit)),
            ).fetchall()
        return [_scan(r) for r in rows]

    # -- verdicts ----------------------------------------------------------

    def record_verdicts(self, scan_id: str, verdicts: Iterable[ShardVerdict | Mapping[str, Any]]) -> int:
        """Record shard verdicts of a scan in one transaction; returns how many.

        Each item is a :class:`ShardVerdict` or a mapping with ``shard``,
        ``uri``, ``sha256``, ``verdict`` and ``reasons`` (list of strings).
        Recording a shard twice for the same scan replaces the earlier row.
        """
        now = utc_now()
        rows = []
        for v in verdicts:
            d = v.to_dict() if isinstance(v, ShardVerdict) else dict(v)
            try:
                rows.append((scan_id, str(d["shard"]), str(d.get("uri") or d["shard"]), d.get("sha256"),
                             str(d["verdict"]), json.dumps([str(r) for r in (d.get("reasons") or [])]), now))
            except KeyError as e:
                raise LedgerError(f"shard verdict {d!r} lacks {e.args[0]!r}") from e
        if not rows:
            return 0
        with self._write() as con:
            if con.execute("SELECT 1 FROM scans WHERE scan_id = ?", (scan_id,)).fetchone() is None:
                raise LedgerError(f"unknown scan {scan_id!r}: call record_scan_start first")
            con.executemany(
                """INSERT OR REPLACE INTO shard_verdicts (scan_id, shard, uri, sha256, verdict, reasons_json, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                rows,
            )
        return len(rows)

    def verdicts(self, scan_id: str) -> list[ShardVerdict]:
        """All shard verdicts of one scan, by shard name."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM shard_verdicts WHERE scan_id = ? ORDER BY shard", (scan_id,)).fetchall()
        return [_verdict(r) for r in rows]

    def verdict(self, scan_id: str, shard: str) -> ShardVerdict | None:
        """One shard's verdict in one scan, or None."""
        with self._connect() as con:
            row = con.execute("SELECT * FROM shard_verdicts WHERE scan_id = ? AND shard = ?", (scan_id, shard)).fetchone()
        return _verdict(row) if row else None

    # -- history -----------------------------------------------------------

    def history(self, shard_or_uri: str) -> list[dict[str, Any]]:
        """Everything the ledger knows about one shard (by name or uri), oldest first.

        Each event is a dict with ``at`` (timestamp), ``event`` (``verdict``,
        ``quarantine``, ``release`` or ``restore``) and the event's fields.
        """
        key = (shard_or_uri, shard_or_uri)
        events: list[dict[str, Any]] = []
        with self._connect() as con:
            for r in con.execute(
                """SELECT v.*, s.started_at FROM shard_verdicts v LEFT JOIN scans s ON s.scan_id = v.scan_id
                   WHERE v.shard = ? OR v.uri = ?""",
                key,
            ):
                events.append({"at": r["started_at"] or r["created_at"], "event": "verdict", **_verdict(r).to_dict()})
            for r in con.execute(f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE shard = ? OR uri = ?", key):
                a = _action(r)
                events.append({"at": a.created_at, "event": "quarantine", **a.to_dict()})
                if a.resolution == "restored" and a.resolved_at:
                    events.append({"at": a.resolved_at, "event": "restore", "action_id": a.id, "who": a.resolved_by,
                                   "shard": a.shard, "uri": a.uri, "sha256": a.sha256, "restore_state": a.restore_state})
            for r in con.execute(f"SELECT {_RELEASE_COLS} FROM releases WHERE shard = ? OR uri = ?", key):
                rel = _release(r)
                events.append({"at": rel.released_at, "event": "release", **rel.to_dict()})
        events.sort(key=lambda e: (e["at"] or "", e["event"]))
        return events

    # -- hash memo ---------------------------------------------------------

    def memo_sha256(self, uri: str, fingerprint: str) -> str | None:
        """The remembered sha256 of ``uri`` if it was computed for this same ``fingerprint``, else None."""
        with self._connect() as con:
            row = con.execute("SELECT fingerprint, sha256 FROM hash_memo WHERE uri = ?", (uri,)).fetchone()
        if row is None or row["fingerprint"] != fingerprint:
            return None
        return row["sha256"]

    def remember_sha256(self, uri: str, fingerprint: str, sha256: str) -> None:
        """Remember that ``uri`` with storage ``fingerprint`` (size + mtime/ETag) has ``sha256``."""
        now = utc_now()
        with self._write() as con:
            con.execute(
                """INSERT INTO hash_memo (uri, fingerprint, sha256, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(uri) DO UPDATE SET fingerprint = excluded.fingerprint, sha256 = excluded.sha256,
                       updated_at = excluded.updated_at""",
                (uri, fingerprint, sha256, now, now),
            )
