"""The :class:`Ledger`: one SQLite file in the state directory."""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from integrity.ledger.records import (
    ACTION_STATES,
    BUSY_TIMEOUT_S,
    ROLES,
    ConsoleAction,
    ConsoleUser,
    DB_NAME,
    DEFAULT_LEASE_S,
    LIVE_STATES,
    MODES,
    RESOLUTIONS,
    SCHEMA_VERSION,
    LedgerError,
    QuarantineAction,
    Release,
    ScanRecord,
    ShardVerdict,
    current_user,
    utc_now,
)
from integrity.ledger.schema import (
    _ACTION_COLS,
    _MIGRATIONS,
    _QUARANTINED_SQL,
    _RELEASE_COLS,
    _SCAN_COLS,
    _action,
    _owner_is_dead,
    _release,
    _scan,
    _verdict,
)


class Ledger:
    """The scanner's durable record (see the module docstring for the tables).

    ``Ledger(state_dir)`` creates ``state_dir`` and ``state_dir/ledger.sqlite``
    as needed and migrates the schema. Safe to share between threads.
    """

    def __init__(self, state_dir: str | os.PathLike):
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LedgerError(f"{self.state_dir}: cannot create the ledger's state directory ({e}); choose a writable --state-dir") from e
        self.path = self.state_dir / DB_NAME
        self._init_lock = threading.Lock()
        self._migrate()

    def __repr__(self) -> str:
        return f"Ledger({str(self.state_dir)!r})"

    # -- connections -------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise LedgerError(f"{self.path}: cannot open the ledger database ({e})") from e
        try:
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("PRAGMA synchronous = FULL")
            yield con
        except sqlite3.DatabaseError as e:
            if type(e) is not sqlite3.DatabaseError:  # integrity/operational errors are the callers' business
                raise
            # "file is not a database", "database disk image is malformed": say which file and what to do
            raise LedgerError(
                f"{self.path}: not a readable ledger database ({e}); it may be corrupt or not a ledger: move it "
                "aside (a new one is created; quarantined files stay where they are) or restore it from a backup"
            ) from None
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction, taking the write lock up front (no lock-upgrade deadlocks)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _migrate(self) -> None:
        with self._init_lock, self._connect() as con:
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self.journal_mode = str(mode).lower()
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                current = con.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
                if current > SCHEMA_VERSION:
                    raise LedgerError(
                        f"{self.path}: ledger schema version {current} is newer than this program supports "
                        f"({SCHEMA_VERSION}); upgrade corpus-integrity"
                    )
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for stmt in _MIGRATIONS[version]:
                        con.execute(stmt)
                    con.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, utc_now()))
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A connection for read-only queries (rows are :class:`sqlite3.Row`); closed on exit."""
        with self._connect() as con:
            yield con

    def schema_version(self) -> int:
        """The schema version of the database file."""
        with self._connect() as con:
            return int(con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

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

    # -- quarantine actions --------------------------------------------------

    def begin_action(
        self,
        *,
        scan_id: str | None,
        shard: str,
        uri: str,
        sha256: str,
        mode: str,
        destination: str | None,
        who: str | None = None,
        corpus: str | None = None,
    ) -> tuple[QuarantineAction, bool]:
        """Record a quarantine action in state ``pending``, idempotently (``corpus``: whose scan it was).

        Returns ``(action, created)``. When a live action for the same
        ``uri`` + ``sha256`` exists (unfinished, or done and not released),
        that one is returned with ``created=False`` and nothing is written, so
        a re-run resumes instead of duplicating.
        """
        if mode not in MODES:
            raise LedgerError(f"unknown quarantine mode {mode!r}; use one of {', '.join(MODES)}")
        now = utc_now()
        with self._write() as con:
            row = con.execute(
                f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE uri = ? AND sha256 = ? AND {_QUARANTINED_SQL}",
                (uri, sha256),
            ).fetchone()
            if row is not None:
                return _action(row), False
            cur = con.execute(
                """INSERT INTO quarantine_actions
                   (scan_id, shard, uri, sha256, mode, destination, state, who, created_at, updated_at, corpus)
                   VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)""",
                (scan_id, shard, uri, sha256, mode, destination, who or current_user(), now, now, corpus),
            )
            row = con.execute(f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _action(row), True

    def action(self, action_id: int) -> QuarantineAction:
        """One action by id (raises :class:`LedgerError` when unknown)."""
        with self._connect() as con:
            row = con.execute(f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE id = ?", (int(action_id),)).fetchone()
        if row is None:
            raise LedgerError(f"no quarantine action #{action_id}")
        return _action(row)

    def actions(self, *, shard_or_uri: str | None = None, state: str | None = None) -> list[QuarantineAction]:
        """All actions (optionally of one shard name / original uri, or in one state), oldest first."""
        where, args = [], []
        if shard_or_uri is not None:
            where.append("(shard = ? OR uri = ?)")
            args += [shard_or_uri, shard_or_uri]
        if state is not None:
            where.append("state = ?")
            args.append(state)
        sql = f"SELECT {_ACTION_COLS} FROM quarantine_actions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [_action(r) for r in rows]

    def quarantined(self, corpus: str | None = None) -> list[QuarantineAction]:
        """Shards quarantined now (of one corpus when given): actions done or in progress, not failed
        and not released/restored.

        A release or restore whose file move has not completed (or failed)
        still counts as quarantined until the file is back.
        """
        where, args = (" AND corpus = ?", (corpus,)) if corpus is not None else ("", ())
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE {_QUARANTINED_SQL}{where} ORDER BY shard, id",
                args,
            ).fetchall()
        return [_action(r) for r in rows]

    def resolved(self, *, limit: int = 50, offset: int = 0) -> tuple[int, list[QuarantineAction]]:
        """Actions that ended (released or restored with the file back, or a failed quarantine), most
        recently resolved first: ``(how many in all, one page of them)``."""
        where = ("WHERE state = 'failed' OR (resolution IS NOT NULL AND "
                 "(restore_state IS NULL OR restore_state = 'done'))")
        with self._connect() as con:
            total = con.execute(f"SELECT COUNT(*) FROM quarantine_actions {where}").fetchone()[0]
            rows = con.execute(f"SELECT {_ACTION_COLS} FROM quarantine_actions {where} "
                               "ORDER BY COALESCE(resolved_at, updated_at) DESC, id DESC LIMIT ? OFFSET ?",
                               (int(limit), int(offset))).fetchall()
        return int(total), [_action(r) for r in rows]

    def held_copies(self) -> list[QuarantineAction]:
        """Actions whose copy is (or may be) still in the quarantine area, including released-but-not-restored ones."""
        with self._connect() as con:
            rows = con.execute(
                f"""SELECT {_ACTION_COLS} FROM quarantine_actions
                    WHERE mode <> 'mark' AND state <> 'failed' AND (restore_state IS NULL OR restore_state <> 'done')
                    ORDER BY shard, id"""
            ).fetchall()
        return [_action(r) for r in rows]

    def unfinished(self) -> list[QuarantineAction]:
        """Actions whose quarantine or restore protocol has started and not finished (what a crash leaves)."""
        with self._connect() as con:
            rows = con.execute(
                f"""SELECT {_ACTION_COLS} FROM quarantine_actions
                    WHERE state IN ('pending', 'copied', 'verified') OR restore_state IN ('pending', 'copied', 'verified')
                    ORDER BY id"""
            ).fetchall()
        return [_action(r) for r in rows]

    def destination_in_use(self, destination: str, *, except_id: int) -> bool:
        """Whether another action still relies on the copy at ``destination``."""
        with self._connect() as con:
            row = con.execute(
                """SELECT 1 FROM quarantine_actions WHERE destination = ? AND id <> ? AND mode <> 'mark'
                   AND state <> 'failed' AND (restore_state IS NULL OR restore_state <> 'done') LIMIT 1""",
                (destination, int(except_id)),
            ).fetchone()
        return row is not None

    def set_state(self, action_id: int, state: str, *, error: str | None = None) -> QuarantineAction:
        """Move an action's quarantine protocol to ``state`` (clears ``error`` unless given)."""
        if state not in ACTION_STATES:
            raise LedgerError(f"unknown action state {state!r}")
        return self._update(action_id, "state = ?, error = ?", (state, error))

    def set_restore_state(self, action_id: int, state: str, *, error: str | None = None) -> QuarantineAction:
        """Move an action's restore protocol to ``state``."""
        if state not in ACTION_STATES:
            raise LedgerError(f"unknown restore state {state!r}")
        return self._update(action_id, "restore_state = ?, error = ?", (state, error))

    def note_error(self, action_id: int, error: str) -> QuarantineAction:
        """Record a transient error (e.g. storage unreachable) without changing the state; a re-run retries."""
        return self._update(action_id, "error = ?", (error,))

    def _update(self, action_id: int, assignments: str, args: tuple) -> QuarantineAction:
        with self._write() as con:
            cur = con.execute(
                f"UPDATE quarantine_actions SET {assignments}, updated_at = ? WHERE id = ?", (*args, utc_now(), int(action_id))
            )
            if cur.rowcount == 0:
                raise LedgerError(f"no quarantine action #{action_id}")
            row = con.execute(f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE id = ?", (int(action_id),)).fetchone()
        return _action(row)

    def claim(self, action_id: int, owner: str, *, lease_s: float = DEFAULT_LEASE_S) -> str | None:
        """Take (or renew) the worker lease on an action. Returns None on success, else the current holder.

        A lease can be taken when free, expired, already ours, or held by a
        dead process on this host.
        """
        now = datetime.now(timezone.utc)
        with self._write() as con:
            row = con.execute(
                "SELECT lease_owner, lease_expires FROM quarantine_actions WHERE id = ?", (int(action_id),)
            ).fetchone()
            if row is None:
                raise LedgerError(f"no quarantine action #{action_id}")
            holder, expires = row["lease_owner"], row["lease_expires"]
            if holder and holder != owner and expires and expires > now.isoformat(timespec="microseconds"):
                if not _owner_is_dead(holder):
                    return holder
            con.execute(
                "UPDATE quarantine_actions SET lease_owner = ?, lease_expires = ? WHERE id = ?",
                (owner, (now + timedelta(seconds=lease_s)).isoformat(timespec="microseconds"), int(action_id)),
            )
        return None

    def unclaim(self, action_id: int, owner: str) -> None:
        """Give the lease back (only if ``owner`` still holds it)."""
        with self._write() as con:
            con.execute(
                "UPDATE quarantine_actions SET lease_owner = NULL, lease_expires = NULL WHERE id = ? AND lease_owner = ?",
                (int(action_id), owner),
            )

    def begin_resolution(
        self,
        action_id: int,
        *,
        resolution: str,
        restore: bool,
        who: str | None = None,
        reason: str | None = None,
        findings_key: str = "",
    ) -> tuple[QuarantineAction, Release | None]:
        """Record a release or restore decision for an action, in one transaction.

        ``resolution`` is ``"released"`` (records a :class:`Release` row unless
        this action already has one) or ``"restored"``; an action that is
        already released keeps ``released``. ``restore`` starts the restore
        protocol (``restore_state = 'pending'``; a failed restore is retried).
        Returns the action and its release row (None for a plain restore).
        """
        if resolution not in RESOLUTIONS:
            raise LedgerError(f"unknown resolution {resolution!r}; use one of {', '.join(RESOLUTIONS)}")
        who = who or current_user()
        now = utc_now()
        with self._write() as con:
            row = con.execute(f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE id = ?", (int(action_id),)).fetchone()
            if row is None:
                raise LedgerError(f"no quarantine action #{action_id}")
            a = _action(row)
            rel_row = con.execute(
                f"SELECT {_RELEASE_COLS} FROM releases WHERE action_id = ? ORDER BY id DESC LIMIT 1", (a.id,)
            ).fetchone()
            if resolution == "released" and rel_row is None:
                if not reason or not str(reason).strip():
                    raise LedgerError("a release needs a non-empty reason (why this content is OK)")
                cur = con.execute(
                    """INSERT INTO releases (action_id, shard, uri, sha256, findings_key, who, reason, released_at, restored,
                                             created_at, corpus)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)""",
                    (a.id, a.shard, a.uri, a.sha256, findings_key, who, str(reason).strip(), now, now, a.corpus),
                )
                rel_row = con.execute(f"SELECT {_RELEASE_COLS} FROM releases WHERE id = ?", (cur.lastrowid,)).fetchone()
            new_resolution = "released" if (a.resolution == "released" or resolution == "released") else "restored"
            if restore and a.restore_state not in LIVE_STATES and a.restore_state != "done":
                restore_state = "pending"
            else:
                restore_state = a.restore_state
            con.execute(
                """UPDATE quarantine_actions SET resolution = ?, restore_state = ?, resolved_by = COALESCE(resolved_by, ?),
                   resolved_at = COALESCE(resolved_at, ?), error = NULL, updated_at = ? WHERE id = ?""",
                (new_resolution, restore_state, who, now, now, a.id),
            )
            row = con.execute(f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE id = ?", (a.id,)).fetchone()
        return _action(row), (_release(rel_row) if rel_row else None)

    def finish_restore(self, action_id: int) -> QuarantineAction:
        """Mark a restore complete (``restore_state = 'done'``) and its release, if any, as restored."""
        now = utc_now()
        with self._write() as con:
            con.execute(
                "UPDATE quarantine_actions SET restore_state = 'done', error = NULL, updated_at = ? WHERE id = ?",
                (now, int(action_id)),
            )
            con.execute(
                "UPDATE releases SET restored = 1, restored_at = ? WHERE action_id = ? AND restored = 0",
                (now, int(action_id)),
            )
            row = con.execute(f"SELECT {_ACTION_COLS} FROM quarantine_actions WHERE id = ?", (int(action_id),)).fetchone()
        if row is None:
            raise LedgerError(f"no quarantine action #{action_id}")
        return _action(row)

    # -- releases ----------------------------------------------------------

    def release(
        self,
        *,
        shard: str,
        uri: str,
        sha256: str,
        reason: str,
        who: str | None = None,
        findings_key: str = "",
        action_id: int | None = None,
        restored: bool = False,
        corpus: str | None = None,
    ) -> Release:
        """Record a release of one content directly (no file operation).

        Use :func:`integrity.engine.quarantine.release` to release a quarantined
        shard; this records a release for content that was never moved (e.g.
        to pre-approve a shard that only warned).
        """
        if not reason or not str(reason).strip():
            raise LedgerError("a release needs a non-empty reason (why this content is OK)")
        now = utc_now()
        with self._write() as con:
            cur = con.execute(
                """INSERT INTO releases (action_id, shard, uri, sha256, findings_key, who, reason, released_at, restored,
                                         restored_at, created_at, corpus)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (action_id, shard, uri, sha256, findings_key, who or current_user(), str(reason).strip(), now,
                 int(bool(restored)), now if restored else None, now, corpus),
            )
            row = con.execute(f"SELECT {_RELEASE_COLS} FROM releases WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _release(row)

    def release_for(self, sha256: str, findings_key: str | None = None, corpus: str | None = None) -> Release | None:
        """The most recent release of this exact content (sha256), or None.

        With ``findings_key``, only a release made for those same findings
        counts (new findings on released content are not covered). With
        ``corpus``, only a release made in that corpus (or one recorded
        before corpora existed) counts: approving a shard of one corpus does
        not approve it in another. A scan downgrades a repeat quarantine of
        released content to a warning; different content (another sha256) is
        quarantined again.
        """
        sql = f"SELECT {_RELEASE_COLS} FROM releases WHERE sha256 = ?"
        args: list[Any] = [sha256]
        if corpus is not None:
            sql += " AND (corpus = ? OR corpus IS NULL)"
            args.append(corpus)
        if findings_key is not None:
            sql += " AND findings_key = ?"
            args.append(findings_key)
        with self._connect() as con:
            row = con.execute(sql + " ORDER BY released_at DESC, id DESC LIMIT 1", args).fetchone()
        return _release(row) if row else None

    def releases(self, shard_or_uri: str | None = None) -> list[Release]:
        """All releases (optionally of one shard name or uri), oldest first."""
        sql = f"SELECT {_RELEASE_COLS} FROM releases"
        args: tuple = ()
        if shard_or_uri is not None:
            sql += " WHERE shard = ? OR uri = ?"
            args = (shard_or_uri, shard_or_uri)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [_release(r) for r in rows]

    def release_of_action(self, action_id: int) -> Release | None:
        """The release recorded for one quarantine action, or None."""
        with self._connect() as con:
            row = con.execute(
                f"SELECT {_RELEASE_COLS} FROM releases WHERE action_id = ? ORDER BY id DESC LIMIT 1", (int(action_id),)
            ).fetchone()
        return _release(row) if row else None

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

    # -- console users and the console's audit log -------------------------

    def put_user(self, name: str, *, role: str, password_hash: str, created_by: str | None = None) -> ConsoleUser:
        """Create or replace a console user (``password_hash`` is a hash, never the secret itself)."""
        if role not in ROLES:
            raise LedgerError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        name = str(name).strip()
        if not name:
            raise LedgerError("a console user needs a non-empty name")
        now = utc_now()
        with self._write() as con:
            con.execute(
                """INSERT INTO console_users (name, role, password_hash, created_by, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash,
                       updated_at = excluded.updated_at""",
                (name, role, password_hash, created_by or current_user(), now, now),
            )
        return ConsoleUser(name=name, role=role, created_by=created_by or current_user(), created_at=now)

    def user_hash(self, name: str) -> tuple[str, str] | None:
        """``(role, password_hash)`` of a console user, or None."""
        with self._connect() as con:
            row = con.execute("SELECT role, password_hash FROM console_users WHERE name = ?", (name,)).fetchone()
        return (row["role"], row["password_hash"]) if row else None

    def users(self) -> list[ConsoleUser]:
        """All console users, by name."""
        with self._connect() as con:
            rows = con.execute("SELECT name, role, created_by, created_at FROM console_users ORDER BY name").fetchall()
        return [ConsoleUser(**{k: r[k] for k in r.keys()}) for r in rows]

    def remove_user(self, name: str) -> bool:
        """Delete a console user; returns whether one was deleted."""
        with self._write() as con:
            return con.execute("DELETE FROM console_users WHERE name = ?", (name,)).rowcount > 0

    def record_console_action(self, *, who: str, role: str | None, action: str, target: str | None,
                              reason: str | None, outcome: str, detail: str | None = None) -> ConsoleAction:
        """Write one console action (done, refused or failed) to the audit log."""
        now = utc_now()
        with self._write() as con:
            cur = con.execute(
                """INSERT INTO console_actions (at, who, role, action, target, reason, outcome, detail)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (now, who, role, action, target, reason, outcome, detail),
            )
            row = con.execute("SELECT * FROM console_actions WHERE id = ?", (cur.lastrowid,)).fetchone()
        return ConsoleAction(**{k: row[k] for k in row.keys()})

    def console_actions(self, target: str | None = None, limit: int = 100) -> list[ConsoleAction]:
        """The console's audit log, newest first (of one target, e.g. a shard name, when given)."""
        sql, args = "SELECT * FROM console_actions", []
        if target is not None:
            sql += " WHERE target = ?"
            args.append(target)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [ConsoleAction(**{k: r[k] for k in r.keys()}) for r in rows]
