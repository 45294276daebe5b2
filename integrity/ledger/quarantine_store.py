"""Quarantine actions, their worker leases, release/restore decisions and releases in the ledger.

Only the bookkeeping: :mod:`integrity.engine.quarantine` moves the files and
records each step here before the next one starts.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from integrity.ledger.database import LedgerDatabase
from integrity.ledger.records import (
    ACTION_STATES,
    DEFAULT_LEASE_S,
    LIVE_STATES,
    MODES,
    RESOLUTIONS,
    LedgerError,
    QuarantineAction,
    Release,
    current_user,
    utc_now,
)
from integrity.ledger.schema import (
    _ACTION_COLS,
    _QUARANTINED_SQL,
    _RELEASE_COLS,
    _action,
    _owner_is_dead,
    _release,
)


class QuarantineStore(LedgerDatabase):
    """The ``quarantine_actions`` and ``releases`` tables (a mixin of :class:`integrity.ledger.store.Ledger`)."""

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
