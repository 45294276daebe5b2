"""The ledger's SQLite file: connections, short write transactions and schema migration.

:class:`LedgerDatabase` is the base of :class:`integrity.ledger.store.Ledger`; the
record kinds (scans and verdicts, quarantine actions and releases, console users)
are methods of the mixins built on it.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from integrity.ledger.records import BUSY_TIMEOUT_S, DB_NAME, SCHEMA_VERSION, LedgerError, utc_now
from integrity.ledger.schema import _MIGRATIONS


class LedgerDatabase:
    """One SQLite file in the state directory, created and migrated on first use.

    Every method opens its own connection, so one instance may be shared between threads.
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
