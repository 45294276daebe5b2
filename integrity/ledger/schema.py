"""The ledger's SQLite schema (versioned migrations), column lists, row mappers and lease owners."""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import uuid
from typing import Sequence

from integrity.ledger.records import QuarantineAction, Release, ScanRecord, ShardVerdict

# ---------------------------------------------------------------------------
# schema

_MIGRATIONS: dict[int, Sequence[str]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS scans (
            scan_id       TEXT PRIMARY KEY,
            source        TEXT NOT NULL,
            policy        TEXT NOT NULL DEFAULT 'default',
            policy_sha256 TEXT,
            run_dir       TEXT,
            who           TEXT,
            started_at    TEXT NOT NULL,
            finished_at   TEXT,
            verdict       TEXT,
            counts_json   TEXT,
            created_at    TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS scans_started ON scans(started_at)",
        """CREATE TABLE IF NOT EXISTS shard_verdicts (
            scan_id      TEXT NOT NULL REFERENCES scans(scan_id) ON DELETE CASCADE,
            shard        TEXT NOT NULL,
            uri          TEXT NOT NULL,
            sha256       TEXT,
            verdict      TEXT NOT NULL,
            reasons_json TEXT NOT NULL DEFAULT '[]',
            created_at   TEXT NOT NULL,
            PRIMARY KEY (scan_id, shard)
        )""",
        "CREATE INDEX IF NOT EXISTS shard_verdicts_shard ON shard_verdicts(shard)",
        "CREATE INDEX IF NOT EXISTS shard_verdicts_uri ON shard_verdicts(uri)",
        "CREATE INDEX IF NOT EXISTS shard_verdicts_sha ON shard_verdicts(sha256)",
        """CREATE TABLE IF NOT EXISTS quarantine_actions (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            scan_id       TEXT,
            shard         TEXT NOT NULL,
            uri           TEXT NOT NULL,
            sha256        TEXT NOT NULL,
            mode          TEXT NOT NULL CHECK (mode IN ('move', 'copy', 'mark')),
            destination   TEXT,
            state         TEXT NOT NULL CHECK (state IN ('pending', 'copied', 'verified', 'done', 'failed')),
            error         TEXT,
            who           TEXT NOT NULL,
            resolution    TEXT CHECK (resolution IN ('released', 'restored')),
            restore_state TEXT CHECK (restore_state IN ('pending', 'copied', 'verified', 'done', 'failed')),
            resolved_by   TEXT,
            resolved_at   TEXT,
            lease_owner   TEXT,
            lease_expires TEXT,
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL
        )""",
        # at most one live action per content at a given place
        """CREATE UNIQUE INDEX IF NOT EXISTS quarantine_live ON quarantine_actions(uri, sha256)
            WHERE state <> 'failed'
              AND (resolution IS NULL OR restore_state IN ('pending', 'copied', 'verified', 'failed'))""",
        "CREATE INDEX IF NOT EXISTS quarantine_shard ON quarantine_actions(shard)",
        "CREATE INDEX IF NOT EXISTS quarantine_state ON quarantine_actions(state, restore_state)",
        """CREATE TABLE IF NOT EXISTS releases (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            action_id    INTEGER REFERENCES quarantine_actions(id),
            shard        TEXT NOT NULL,
            uri          TEXT NOT NULL,
            sha256       TEXT NOT NULL,
            findings_key TEXT NOT NULL DEFAULT '',
            who          TEXT NOT NULL,
            reason       TEXT NOT NULL CHECK (length(trim(reason)) > 0),
            released_at  TEXT NOT NULL,
            restored     INTEGER NOT NULL DEFAULT 0,
            restored_at  TEXT,
            created_at   TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS releases_sha ON releases(sha256, findings_key)",
        "CREATE INDEX IF NOT EXISTS releases_shard ON releases(shard)",
        """CREATE TABLE IF NOT EXISTS hash_memo (
            uri         TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            sha256      TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        )""",
    ),
    # the ops console: the Prefect flow run of a scan, console users and the audit log of console actions,
    # and the indexes its pages need on a ledger of 1,000 scans x 1,000 shards
    2: (
        "ALTER TABLE scans ADD COLUMN flow_run_id TEXT",
        "CREATE INDEX IF NOT EXISTS shard_verdicts_scan_verdict ON shard_verdicts(scan_id, verdict)",
        "CREATE INDEX IF NOT EXISTS quarantine_resolved ON quarantine_actions(resolved_at)",
        "CREATE INDEX IF NOT EXISTS releases_action ON releases(action_id)",
        """CREATE TABLE IF NOT EXISTS console_users (
            name          TEXT PRIMARY KEY,
            role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator')),
            password_hash TEXT NOT NULL,
            created_by    TEXT,
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS console_actions (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            at        TEXT NOT NULL,
            who       TEXT NOT NULL,
            role      TEXT,
            action    TEXT NOT NULL,
            target    TEXT,
            reason    TEXT,
            outcome   TEXT NOT NULL,
            detail    TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS console_actions_target ON console_actions(target, at)",
    ),
    # history, cache and ledger entries belong to a named corpus (--corpus); older rows stay null
    3: (
        "ALTER TABLE scans ADD COLUMN corpus TEXT",
        "ALTER TABLE quarantine_actions ADD COLUMN corpus TEXT",
        "ALTER TABLE releases ADD COLUMN corpus TEXT",
        "CREATE INDEX IF NOT EXISTS scans_corpus ON scans(corpus, started_at)",
    ),
    # the console's shard page reads a shard's verdicts over every night from the index alone
    4: (
        "CREATE INDEX IF NOT EXISTS shard_verdicts_shard_nights ON shard_verdicts(shard, scan_id, verdict, sha256)",
    ),
}

_ACTION_COLS = (
    "id, scan_id, shard, uri, sha256, mode, destination, state, error, who, created_at, updated_at, "
    "resolution, restore_state, resolved_by, resolved_at, corpus"
)
_RELEASE_COLS = ("id, action_id, shard, uri, sha256, findings_key, who, reason, released_at, restored, restored_at, "
                 "corpus")
_SCAN_COLS = ("scan_id, source, policy, policy_sha256, run_dir, who, started_at, finished_at, verdict, counts_json, "
              "created_at, flow_run_id, corpus")
_QUARANTINED_SQL = (
    "state <> 'failed' AND (resolution IS NULL OR restore_state IN ('pending', 'copied', 'verified', 'failed'))"
)


def _action(row: sqlite3.Row) -> QuarantineAction:
    return QuarantineAction(**{k: row[k] for k in row.keys() if k in QuarantineAction.__dataclass_fields__})


def _release(row: sqlite3.Row) -> Release:
    d = {k: row[k] for k in row.keys()}
    d["restored"] = bool(d["restored"])
    return Release(**d)


def _scan(row: sqlite3.Row) -> ScanRecord:
    d = {k: row[k] for k in row.keys()}
    cj = d.pop("counts_json")
    d["counts"] = json.loads(cj) if cj else None
    return ScanRecord(**d)


def _verdict(row: sqlite3.Row) -> ShardVerdict:
    return ShardVerdict(
        shard=row["shard"],
        uri=row["uri"],
        sha256=row["sha256"],
        verdict=row["verdict"],
        reasons=tuple(json.loads(row["reasons_json"] or "[]")),
        scan_id=row["scan_id"],
        created_at=row["created_at"],
    )


def new_lease_owner() -> str:
    """A unique worker identity ``host:pid:token`` for :meth:`Ledger.claim`."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str) -> bool:
    """True when ``owner`` ran on this host in a process that no longer exists."""
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


# ---------------------------------------------------------------------------
