"""The ops console's users and its audit log in the ledger."""
from __future__ import annotations

from integrity.ledger.database import LedgerDatabase
from integrity.ledger.records import ROLES, ConsoleAction, ConsoleUser, LedgerError, current_user, utc_now


class ConsoleStore(LedgerDatabase):
    """The ``console_users`` and ``console_actions`` tables (a mixin of :class:`integrity.ledger.store.Ledger`)."""

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
