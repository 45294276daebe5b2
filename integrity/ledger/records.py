"""Constants, errors and the row types of the ledger."""
from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

SCHEMA_VERSION = 4
MODES = ("move", "copy", "mark")
ACTION_STATES = ("pending", "copied", "verified", "done", "failed")
LIVE_STATES = ("pending", "copied", "verified")  # started, not finished
RESOLUTIONS = ("released", "restored")
ROLES = ("viewer", "operator")
DB_NAME = "ledger.sqlite"
BUSY_TIMEOUT_S = 30.0
DEFAULT_LEASE_S = 30 * 60


class LedgerError(Exception):
    """The ledger cannot do what was asked (bad argument, unknown row, newer schema...)."""


def utc_now() -> str:
    """Now as UTC ISO-8601 with microseconds (sorts as a string)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def current_user() -> str:
    """``getpass.getuser()``, falling back to ``$USER`` or ``"unknown"`` when there is no login name."""
    try:
        return getpass.getuser()
    except Exception:  # no pwd entry in some containers
        return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def findings_key(reasons: Iterable[str]) -> str:
    """Canonical key for the findings that led to a quarantine: the sorted, de-duplicated reasons as compact JSON.

    The scan and the release must compute it the same way; this is that way.
    """
    return json.dumps(sorted({str(r) for r in reasons}), separators=(",", ":"))


def release_command(shard: str, state_dir: str | os.PathLike | None = None, corpus: str | None = None,
                    reason: str = "why this content is fine") -> str:
    """The ``integrity quarantine release`` command line for one shard, ready to paste from any
    directory: it names the state directory (absolute) and the corpus the scan used."""
    import shlex

    cmd = ["integrity", "quarantine", "release", str(shard), "--reason", reason]
    if state_dir:
        cmd += ["--state-dir", os.path.abspath(os.fspath(state_dir))]
    if corpus:
        cmd += ["--corpus", corpus]
    return shlex.join(cmd)


# ---------------------------------------------------------------------------
# row types


@dataclass(frozen=True)
class ScanRecord:
    scan_id: str
    source: str
    policy: str
    policy_sha256: str | None
    run_dir: str | None
    who: str | None
    started_at: str
    finished_at: str | None
    verdict: str | None
    counts: dict[str, Any] | None
    created_at: str
    #: the Prefect flow run that ran the scan (null for inline scans and scans recorded before it was kept)
    flow_run_id: str | None = None
    #: the corpus the scan belongs to (null for scans recorded before corpora existed)
    corpus: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShardVerdict:
    shard: str
    uri: str
    sha256: str | None
    verdict: str
    reasons: tuple[str, ...] = ()
    scan_id: str | None = None
    created_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


@dataclass(frozen=True)
class QuarantineAction:
    """One quarantine of one content (uri + sha256) and, later, how it was resolved."""

    id: int
    scan_id: str | None
    shard: str
    uri: str
    sha256: str
    mode: str
    destination: str | None
    state: str
    error: str | None
    who: str
    created_at: str
    updated_at: str
    resolution: str | None = None
    restore_state: str | None = None
    resolved_by: str | None = None
    resolved_at: str | None = None
    #: the corpus whose scan quarantined it (null: recorded before corpora existed)
    corpus: str | None = None

    @property
    def quarantine_finished(self) -> bool:
        """The quarantine protocol ended (``done`` or ``failed``)."""
        return self.state in ("done", "failed")

    @property
    def restore_in_progress(self) -> bool:
        return self.restore_state in LIVE_STATES

    @property
    def is_quarantined(self) -> bool:
        """Counts as quarantined now: not failed, and not (completely) released or restored."""
        if self.state == "failed":
            return False
        return self.resolution is None or self.restore_state in (*LIVE_STATES, "failed")

    @property
    def holds_copy(self) -> bool:
        """The quarantine area (may) still hold this action's copy."""
        return self.mode != "mark" and self.state != "failed" and self.restore_state != "done"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ConsoleUser:
    """A user of the ops console (the password or token is only ever stored hashed)."""

    name: str
    role: str
    created_by: str | None
    created_at: str


@dataclass(frozen=True)
class ConsoleAction:
    """One action taken (or refused) in the ops console: who, when, what, on what, why, and how it ended."""

    id: int
    at: str
    who: str
    role: str | None
    action: str
    target: str | None
    reason: str | None
    outcome: str
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Release:
    """A human decision that one content (sha256) is OK for the findings in ``findings_key``."""

    id: int
    action_id: int | None
    shard: str
    uri: str
    sha256: str
    findings_key: str
    who: str
    reason: str
    released_at: str
    restored: bool
    restored_at: str | None
    #: the corpus the release applies to (null: any corpus; releases recorded before corpora existed)
    corpus: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
