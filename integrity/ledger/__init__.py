"""The ledger: the durable record of scans, shard verdicts, quarantine actions and releases.

One SQLite database at ``STATE_DIR/ledger.sqlite`` (WAL mode, 30 s busy
timeout, short ``BEGIN IMMEDIATE`` write transactions). Every public method
opens its own connection, so one :class:`Ledger` may be shared by the threads
of a process, and several processes may use the same file.

Tables (schema version :data:`SCHEMA_VERSION`, recorded in ``schema_version``;
every timestamp is UTC ISO-8601 with microseconds, e.g.
``2025-01-31T02:00:00.000000+00:00``, so timestamps sort as strings):

``scans``
    one row per scan: ``scan_id``, ``source``, ``policy`` (a path or
    ``"default"``), ``policy_sha256``, ``run_dir``, ``who``, ``started_at``,
    ``finished_at``, ``verdict`` (overall), ``counts_json``, ``created_at``,
    ``flow_run_id`` (schema 2: the Prefect flow run, null for inline scans).
``shard_verdicts``
    one row per (scan, shard): ``uri``, ``sha256``, ``verdict``,
    ``reasons_json`` (JSON list of strings), ``created_at``; indexed by
    ``(scan_id, verdict)`` and (schema 4) covering ``(shard, scan_id, verdict,
    sha256)`` for the console's pages.
``quarantine_actions``
    one row per quarantine of one content (uri + sha256): ``mode``
    (``move``/``copy``/``mark``), ``destination``, ``state`` (``pending`` ->
    ``copied`` -> ``verified`` -> ``done``, or ``failed`` with ``error``),
    ``who``, then how it ended: ``resolution`` (``released``/``restored``,
    null while quarantined), ``restore_state`` (the same state machine for
    putting the file back; null when nothing is to be put back),
    ``resolved_by``, ``resolved_at``; a worker lease (``lease_owner``,
    ``lease_expires``) so two workers never drive the same action at once;
    ``created_at``/``updated_at``. A partial unique index allows at most one
    live action per (uri, sha256).
``releases``
    one row per release ("this content is OK"): ``action_id``, ``shard``,
    ``uri``, ``sha256``, ``findings_key``, ``who``, ``reason``,
    ``released_at``, ``restored`` (0/1) and ``restored_at``.
``console_users`` (schema 2)
    the ops console's users: ``name``, ``role`` (``viewer``/``operator``),
    ``password_hash`` (argon2; the secret itself is never stored).
``console_actions`` (schema 2)
    the console's audit log: ``at``, ``who``, ``role``, ``action``, ``target``,
    ``reason``, ``outcome`` (``done``/``refused``/``failed``), ``detail``.
``hash_memo``
    ``uri`` -> (``fingerprint``, ``sha256``): the last hash of a shard and the
    storage fingerprint (size + mtime/ETag) it was computed for.

The file-moving protocol itself lives in :mod:`integrity.engine.quarantine`; this
module only records. It is plain Python (no Prefect).
"""
from integrity.ledger.records import (  # noqa: F401
    ACTION_STATES,
    BUSY_TIMEOUT_S,
    DB_NAME,
    DEFAULT_LEASE_S,
    LIVE_STATES,
    MODES,
    RESOLUTIONS,
    ROLES,
    SCHEMA_VERSION,
    ConsoleAction,
    ConsoleUser,
    LedgerError,
    QuarantineAction,
    Release,
    ScanRecord,
    ShardVerdict,
    current_user,
    findings_key,
    release_command,
    utc_now,
)
from integrity.ledger.schema import new_lease_owner  # noqa: F401
from integrity.ledger.store import Ledger  # noqa: F401

__all__ = [
    "ACTION_STATES",
    "LIVE_STATES",
    "MODES",
    "ROLES",
    "SCHEMA_VERSION",
    "ConsoleAction",
    "ConsoleUser",
    "Ledger",
    "LedgerError",
    "QuarantineAction",
    "Release",
    "ScanRecord",
    "ShardVerdict",
    "current_user",
    "findings_key",
    "release_command",
    "utc_now",
]
