"""Crash-safe quarantine, release and restore of shards.

The protocol ("Never lose data", DESIGN.md): a quarantine is copy, verify
hash, record in the ledger, then remove. Every step is recorded in the
:class:`~integrity.ledger.Ledger` before the next one starts, so a crash at
any point leaves either the original or a verified copy, and a re-run (or
:func:`resume_pending`) finishes the job from whatever state it finds.

Quarantine (``mode="move"``)::

    pending   the action is recorded (idempotent per uri + sha256)
    copied    the source was re-hashed (must still match the scanned sha256,
              else the action fails: "content changed since it was scanned")
              and copied to DEST via ``DEST.partial`` + rename
    verified  DEST was hashed and matches (else the bad copy is deleted, the
              action fails, the original is untouched)
    removed   the original is removed (move mode only; only if it is still the
              content that was copied)
    done

``mode="copy"`` stops after ``verified`` (the original stays). ``mode="mark"``
only records the action. DEST is ``{quarantine_root}/{sha256[:16]}/{shard}``.

Release / restore put the file back with the same order: copy DEST back to
the original uri, verify, then remove the quarantined copy. A *release*
additionally records "this content is OK" (who, why, when, for which
findings), so a later scan of the same content with the same findings only
warns; a *restore* puts the file back without approving it.

Tests inject crashes through ``fault``: a callable invoked with the step name
(``"pending"``, ``"copied"``, ``"verified"``, ``"removed"``, ``"done"``) just
after each step this call performs.

This module finds the actions and records the decisions (quarantine, release,
restore, resume); the copying, verifying and removing of files, under each
action's worker lease, is in :mod:`integrity.engine.quarantine_moves`.

Typical CLI use::

    integrity quarantine list                      -> list_quarantined(ledger)
    integrity quarantine release SHARD --reason R  -> release(ledger, SHARD, reason=R)
    integrity quarantine restore SHARD             -> restore(ledger, SHARD)
    integrity quarantine resume                    -> resume_pending(ledger)
"""
from __future__ import annotations

import logging
import os
import re

from connectors import storage
from connectors.storage import StorageError

from integrity.engine.quarantine_moves import (
    STEPS,
    ActionBusyError,
    Fault,
    QuarantineError,
    StorageOptions,
    check_original_slot,
    destination_for,
    remove_reappeared,
    run_quarantine,
    run_restore,
    step_done,
)
from integrity.ledger import (
    LIVE_STATES,
    MODES,
    Ledger,
    LedgerError,
    QuarantineAction,
    Release,
    findings_key as make_findings_key,
    release_command,
)

__all__ = [
    "STEPS",
    "ActionBusyError",
    "AmbiguousShardError",
    "Fault",
    "QuarantineAction",
    "QuarantineError",
    "Release",
    "UnknownShardError",
    "describe",
    "destination_for",
    "find_action",
    "list_quarantined",
    "quarantine",
    "release",
    "release_command",
    "restore",
    "resume_pending",
]

log = logging.getLogger(__name__)
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class UnknownShardError(QuarantineError, LookupError):
    """The shard named is not quarantined; the message lists what is."""


class AmbiguousShardError(QuarantineError, LookupError):
    """The name matches several quarantined shards; the message lists them."""


# ---------------------------------------------------------------------------
# finding an action


def _describe(a: QuarantineAction) -> str:
    extra = f", {a.resolution} (restore {a.restore_state})" if a.resolution else ""
    corpus = f" corpus {a.corpus}" if a.corpus else ""
    return f"#{a.id} {a.shard} [{a.mode}, {a.state}{extra}]{corpus} {a.uri} sha256={a.sha256[:16]}"


def _basename(name: str) -> str:
    return str(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _listing(actions: list[QuarantineAction]) -> str:
    if not actions:
        return "nothing is quarantined"
    return "currently quarantined:\n  " + "\n  ".join(_describe(a) for a in actions)


def _same_local_path(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return False
    try:
        return os.path.abspath(a) == os.path.abspath(b)
    except (TypeError, ValueError):
        return False


def find_action(ledger: Ledger, shard_or_uri: str, *, candidates: list[QuarantineAction] | None = None,
                corpus: str | None = None) -> QuarantineAction:
    """The one action among ``candidates`` (default: :meth:`Ledger.quarantined`) named by ``shard_or_uri``.

    Matches the shard name (``web/web-0003.parquet``), the original uri, the
    quarantine destination, an action id written ``#ID`` (or bare digits), or,
    when nothing else matches, the file name alone (``web-0003.parquet``).
    With ``corpus``, only that corpus's actions are considered. Raises
    :class:`UnknownShardError` / :class:`AmbiguousShardError` listing the
    quarantined shards.
    """
    pool = ledger.quarantined() if candidates is None else candidates
    if corpus is not None:
        pool = [a for a in pool if a.corpus == corpus]
    key = os.fspath(shard_or_uri).strip()
    matches = [a for a in pool if key in (a.shard, a.uri, a.destination) or _same_local_path(key, a.uri)]
    if not matches and key.lstrip("#").isdigit():
        matches = [a for a in pool if a.id == int(key.lstrip("#"))]
    if not matches and "/" not in key and "\\" not in key:  # a bare file name, as people say it
        matches = [a for a in pool if _basename(a.shard) == key]
    if not matches:
        where = f" in corpus {corpus!r}" if corpus is not None else ""
        raise UnknownShardError(f"{key!r} is not quarantined{where}; {_listing(ledger.quarantined())}")
    if len(matches) > 1:
        raise AmbiguousShardError(
            f"{key!r} matches {len(matches)} quarantined shards; name one by its original uri, its id (#ID) "
            f"or add --corpus NAME:\n  "
            + "\n  ".join(_describe(a) for a in matches)
        )
    return matches[0]


def list_quarantined(ledger: Ledger) -> list[QuarantineAction]:
    """What ``integrity quarantine list`` shows: :meth:`Ledger.quarantined`."""
    return ledger.quarantined()


# ---------------------------------------------------------------------------
# quarantine


def quarantine(
    ledger: Ledger,
    *,
    scan_id: str | None,
    shard: str,
    uri: str,
    sha256: str,
    mode: str = "move",
    quarantine_root: str | os.PathLike | None = None,
    who: str | None = None,
    storage_options: StorageOptions = None,
    fault: Fault | None = None,
    corpus: str | None = None,
) -> QuarantineAction:
    """Quarantine one shard (file or directory) crash-safely; returns the action as it ends.

    ``corpus`` records which corpus's scan quarantined it (``quarantine list --corpus``).

    Idempotent: an unfinished action for the same ``uri`` + ``sha256`` is
    resumed (not duplicated) and a finished one is returned as is. When the
    source no longer has ``sha256`` the action ends ``failed`` ("content
    changed since it was scanned; re-scan") and nothing is touched. Storage
    errors are recorded on the action and re-raised; the action stays in its
    state and a re-run (or :func:`resume_pending`) continues it.
    ``quarantine_root`` is required for ``move`` and ``copy``.
    """
    if mode not in MODES:
        raise QuarantineError(f"unknown quarantine mode {mode!r}; use one of {', '.join(MODES)}")
    sha256 = str(sha256).lower()
    if not _SHA_RE.match(sha256):
        raise QuarantineError(f"{uri}: {sha256!r} is not a hex SHA-256; pass the digest the scan computed")
    uri = os.fspath(uri)
    if mode == "mark":
        destination = None
    else:
        if quarantine_root is None or not os.fspath(quarantine_root):
            raise QuarantineError(f"{uri}: mode {mode!r} needs a quarantine_root to copy the shard to")
        destination = destination_for(quarantine_root, sha256, shard)
    action, created = ledger.begin_action(
        scan_id=scan_id, shard=shard, uri=uri, sha256=sha256, mode=mode, destination=destination, who=who,
        corpus=corpus,
    )
    if created:
        step_done(fault, "pending")
    if action.state == "done" and action.mode == "move" and mode == "move" and storage.exists(uri, storage_options):
        return remove_reappeared(ledger, action, storage_options)
    if action.state not in LIVE_STATES:
        return action  # already done by an earlier run
    return run_quarantine(ledger, action, storage_options, fault)


# ---------------------------------------------------------------------------
# release / restore


def release(
    ledger: Ledger,
    shard_or_uri: str,
    *,
    reason: str,
    who: str | None = None,
    restore: bool = True,
    findings_key: str | None = None,
    storage_options: StorageOptions = None,
    fault: Fault | None = None,
    corpus: str | None = None,
) -> Release:
    """Release a quarantined shard: "this content is OK; put it back and don't quarantine it again for the same findings".

    Records who, why (``reason``, required), when and ``findings_key``
    (default: :func:`integrity.ledger.findings_key` of the reasons recorded for
    the shard in the scan that quarantined it). With ``restore`` (default)
    the quarantined copy is moved back to the original uri crash-safely
    (copy back, verify, then remove the quarantined copy); a crash is
    finished by re-running the same call or :func:`resume_pending`. Refuses
    (before recording anything) when something else now occupies the
    original uri; raises :class:`QuarantineError` when putting the file back
    fails later (the release stays recorded; fix the cause and run it
    again). Returns the release row (``restored`` tells whether the file was
    put back; always False for ``mark`` mode, where nothing was moved).
    ``corpus`` limits the lookup of ``shard_or_uri`` to that corpus's shards.
    """
    if not reason or not str(reason).strip():
        raise QuarantineError("a release needs a reason: say why this content is OK (--reason \"...\")")
    candidates = ledger.quarantined()
    live_ids = {a.id for a in candidates}
    released_held = [a for a in ledger.held_copies() if a.resolution == "released" and a.id not in live_ids]
    try:
        a = find_action(ledger, shard_or_uri, candidates=candidates + released_held, corpus=corpus)
    except UnknownShardError:
        prior = _completed_release(ledger, shard_or_uri, corpus)
        if prior is None:
            raise
        return prior  # idempotent: this shard is already released (and put back if it was asked)
    a = _finish_quarantine_first(ledger, a, storage_options)
    do_restore = restore and a.mode != "mark"
    if do_restore and a.restore_state not in LIVE_STATES:
        check_original_slot(a, storage_options)
    if findings_key is None:
        v = ledger.verdict(a.scan_id, a.shard) if a.scan_id else None
        findings_key = make_findings_key(v.reasons) if v else ""
    a, rel = ledger.begin_resolution(
        a.id, resolution="released", restore=do_restore, who=who, reason=reason, findings_key=findings_key
    )
    step_done(fault, "pending")
    if do_restore:
        _raise_if_restore_failed(run_restore(ledger, a, storage_options, fault), "the release is recorded, but ")
    assert rel is not None
    return ledger.release_of_action(a.id) or rel


def restore(
    ledger: Ledger,
    shard_or_uri: str,
    *,
    who: str | None = None,
    storage_options: StorageOptions = None,
    fault: Fault | None = None,
    corpus: str | None = None,
) -> QuarantineAction:
    """Put a quarantined shard back at its original uri without approving it (``corpus``: as in :func:`release`).

    Same crash-safe order as :func:`release`; no release is recorded, so the
    next scan quarantines the same content again if it has the same findings.
    Also restores a shard released earlier with ``restore=False``. Returns
    the action (``restore_state == "done"`` when the file is back).
    """
    candidates = ledger.quarantined()
    live_ids = {a.id for a in candidates}
    released_held = [a for a in ledger.held_copies() if a.resolution == "released" and a.id not in live_ids]
    a = find_action(ledger, shard_or_uri, candidates=candidates + released_held, corpus=corpus)
    a = _finish_quarantine_first(ledger, a, storage_options)
    do_restore = a.mode != "mark"
    if do_restore and a.restore_state not in LIVE_STATES:
        check_original_slot(a, storage_options)
    a, _ = ledger.begin_resolution(a.id, resolution="restored", restore=do_restore, who=who)
    step_done(fault, "pending")
    if do_restore:
        return _raise_if_restore_failed(run_restore(ledger, a, storage_options, fault), "")
    return a


def _raise_if_restore_failed(a: QuarantineAction, prefix: str) -> QuarantineAction:
    if a.restore_state == "failed":
        raise QuarantineError(f"{a.shard}: {prefix}putting the file back failed: {a.error}")
    return a


def _completed_release(ledger: Ledger, shard_or_uri: str, corpus: str | None = None) -> Release | None:
    """The release of the latest finished release of this shard (one original uri only), or None."""
    key = os.fspath(shard_or_uri).strip()
    done = [
        a for a in ledger.actions()
        if a.resolution == "released" and a.restore_state in (None, "done")
        and (corpus is None or a.corpus == corpus)
        and (key in (a.shard, a.uri, a.destination, f"#{a.id}") or _same_local_path(key, a.uri)
             or ("/" not in key and _basename(a.shard) == key))
    ]
    if not done or len({a.uri for a in done}) > 1:
        return None
    return ledger.release_of_action(done[-1].id)


def _finish_quarantine_first(ledger: Ledger, a: QuarantineAction, so: StorageOptions) -> QuarantineAction:
    """An interrupted quarantine is completed before it is undone (one direction at a time)."""
    if a.state in LIVE_STATES:
        a = run_quarantine(ledger, a, so, None)
    if a.state == "failed":
        raise QuarantineError(f"{a.shard}: its quarantine failed ({a.error}); nothing is quarantined to put back")
    return a


# ---------------------------------------------------------------------------
# recovery


def resume_pending(
    ledger: Ledger, storage_options: StorageOptions = None, fault: Fault | None = None
) -> list[QuarantineAction]:
    """Finish every quarantine and restore that a crash left unfinished; returns those actions as they end.

    Works from any state (copy present but unverified, ``.partial`` left
    over, original already removed but not recorded, ...). An action whose
    storage is unreachable, or that another live worker holds, is left as it
    is (its ``error`` says why) and the others go on.
    """
    out: list[QuarantineAction] = []
    for a in ledger.unfinished():
        try:
            if a.state in LIVE_STATES:
                a = run_quarantine(ledger, a, storage_options, fault)
            if a.restore_state in LIVE_STATES:
                a = run_restore(ledger, a, storage_options, fault)
        except (StorageError, ActionBusyError, LedgerError) as e:
            log.warning("could not resume quarantine action #%s: %s", a.id, e)
        out.append(ledger.action(a.id))
    return out


def describe(action: QuarantineAction) -> str:
    """One line for listings: ``#id shard [mode, state] uri sha256=...``."""
    return _describe(action)

