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
from typing import Any, Callable, Mapping

from connectors import storage
from connectors.storage import StorageError

from integrity.ledger import (
    LIVE_STATES,
    MODES,
    Ledger,
    LedgerError,
    QuarantineAction,
    Release,
    findings_key as make_findings_key,
    new_lease_owner,
    release_command,
    utc_now,
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

STEPS = ("pending", "copied", "verified", "removed", "done")
Fault = Callable[[str], None]
StorageOptions = Mapping[str, Any] | None
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class QuarantineError(Exception):
    """A quarantine, release or restore could not be carried out; the message says why and what to do."""


class UnknownShardError(QuarantineError, LookupError):
    """The shard named is not quarantined; the message lists what is."""


class AmbiguousShardError(QuarantineError, LookupError):
    """The name matches several quarantined shards; the message lists them."""


class ActionBusyError(QuarantineError):
    """Another live worker holds the action's lease; retry later."""


# ---------------------------------------------------------------------------
# helpers


def destination_for(quarantine_root: str | os.PathLike, sha256: str, shard: str) -> str:
    """``{quarantine_root}/{sha256[:16]}/{shard}``.

    ``shard`` may contain ``/``; empty and ``.`` components are dropped and
    ``..`` components become ``__`` so the destination never escapes the
    quarantine root.
    """
    parts = [p for p in str(shard).replace("\\", "/").split("/") if p not in ("", ".")]
    parts = ["__" if p == ".." else p for p in parts]
    if not parts:
        raise QuarantineError(f"shard name {shard!r} is empty; cannot build a quarantine destination")
    return storage.join(os.fspath(quarantine_root), sha256[:16], *parts)


def _call(fault: Fault | None, step: str) -> None:
    if fault is not None:
        fault(step)


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


class _Lease:
    """Holds the worker lease of one action for the duration of a ``with`` block."""

    def __init__(self, ledger: Ledger, action_id: int):
        self.ledger, self.action_id, self.owner = ledger, action_id, new_lease_owner()

    def __enter__(self) -> "_Lease":
        holder = self.ledger.claim(self.action_id, self.owner)
        if holder is not None:
            raise ActionBusyError(
                f"quarantine action #{self.action_id} is being processed by {holder}; retry later "
                "(a lease held by a dead process on this host is taken over automatically)"
            )
        return self

    def renew(self) -> None:
        self.ledger.claim(self.action_id, self.owner)

    def __exit__(self, *exc: object) -> None:
        try:
            self.ledger.unclaim(self.action_id, self.owner)
        except Exception:  # never mask the original error
            log.exception("could not release the lease on action #%s", self.action_id)


def _hash_or_none(uri: str, so: StorageOptions) -> str | None:
    """sha256 of ``uri``, or None when it does not exist."""
    if not storage.exists(uri, so):
        return None
    return storage.sha256_of(uri, so)


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
        _call(fault, "pending")
    if action.state == "done" and action.mode == "move" and mode == "move" and storage.exists(uri, storage_options):
        return _remove_reappeared(ledger, action, storage_options)
    if action.state not in LIVE_STATES:
        return action  # already done by an earlier run
    return _run_quarantine(ledger, action, storage_options, fault)


def _remove_reappeared(ledger: Ledger, a: QuarantineAction, so: StorageOptions) -> QuarantineAction:
    """The quarantined content is back at its original uri (a mirror re-synced it, or
    someone copied it back by hand) while its verified copy is still held: take it
    out again, with the same order and checks as a first move."""
    assert a.destination is not None
    if storage.sha256_of(a.uri, so) != a.sha256:
        return a  # other content: a fresh scan judges it (a new sha256 gets a new action)
    if _hash_or_none(a.destination, so) != a.sha256:  # the held copy is gone or damaged: copy again first
        storage.copy(a.uri, a.destination, overwrite=True, storage_options=so)
        if _hash_or_none(a.destination, so) != a.sha256:
            return ledger.note_error(a.id, f"{a.destination}: re-copy of the reappeared original failed verification; "
                                           f"the original {a.uri} was left in place")
    storage.remove(a.uri, missing_ok=True, storage_options=so)
    return ledger.note_error(a.id, f"{a.uri}: the same content reappeared at the original location on {utc_now()} "
                                   "and was removed again (the verified copy is held)")


def _run_quarantine(ledger: Ledger, action: QuarantineAction, so: StorageOptions, fault: Fault | None) -> QuarantineAction:
    with _Lease(ledger, action.id) as lease:
        try:
            return _advance_quarantine(ledger, action.id, so, fault, lease)
        except StorageError as e:
            ledger.note_error(action.id, str(e))
            raise


def _advance_quarantine(ledger: Ledger, action_id: int, so: StorageOptions, fault: Fault | None, lease: _Lease) -> QuarantineAction:
    src_fingerprint: str | None = None  # storage fingerprint of the source when this call hashed it
    for _ in range(10):  # a handful of transitions; bounded in case storage keeps changing under us
        a = ledger.action(action_id)
        lease.renew()
        if a.state not in LIVE_STATES:
            return a
        if a.mode == "mark":
            a = ledger.set_state(a.id, "done")
            _call(fault, "done")
            return a
        dest = a.destination
        assert dest is not None

        if a.state == "pending":
            if storage.exists(a.uri, so):
                src_fingerprint = storage.fingerprint(a.uri, so)
                actual = storage.sha256_of(a.uri, so)
                if actual != a.sha256:
                    return ledger.set_state(
                        a.id, "failed",
                        error=(f"{a.uri}: content changed since it was scanned (expected sha256 {a.sha256}, found {actual}); "
                               "nothing was moved; re-scan the shard"),
                    )
                if _hash_or_none(dest, so) != a.sha256:  # not already copied by an interrupted run
                    storage.copy(a.uri, dest, overwrite=True, storage_options=so)
            elif _hash_or_none(dest, so) != a.sha256:
                return ledger.set_state(
                    a.id, "failed",
                    error=(f"{a.uri}: the original is missing and there is no verified copy at {dest}; "
                           "nothing was quarantined (was it moved or deleted by hand?)"),
                )
            # else: the original is gone but a good copy exists (a run crashed after removing it)
            ledger.set_state(a.id, "copied")
            _call(fault, "copied")

        elif a.state == "copied":
            actual = _hash_or_none(dest, so)
            if actual is None:
                ledger.set_state(a.id, "pending", error=f"{dest}: copy vanished before it was verified; copying again")
                continue
            if actual != a.sha256:
                if storage.exists(a.uri, so):
                    storage.remove(dest, missing_ok=True, storage_options=so)
                    msg = (f"{dest}: the copy's sha256 {actual} does not match {a.sha256}; the bad copy was deleted "
                           f"and the original {a.uri} is untouched; run the quarantine again")
                else:
                    msg = (f"{dest}: the copy's sha256 {actual} does not match {a.sha256} and the original {a.uri} "
                           "is missing; the copy was kept for inspection")
                return ledger.set_state(a.id, "failed", error=msg)
            ledger.set_state(a.id, "verified")
            _call(fault, "verified")

        elif a.state == "verified":
            if a.mode == "move":
                if storage.exists(a.uri, so):
                    unchanged = src_fingerprint is not None and storage.fingerprint(a.uri, so) == src_fingerprint
                    if not unchanged and storage.sha256_of(a.uri, so) != a.sha256:
                        return ledger.set_state(
                            a.id, "failed",
                            error=(f"{a.uri}: the original changed after it was copied, so it was NOT removed; the verified "
                                   f"copy of the scanned content is at {dest}; re-scan the shard"),
                        )
                    storage.remove(a.uri, missing_ok=True, storage_options=so)
                _call(fault, "removed")
            a = ledger.set_state(a.id, "done")
            _call(fault, "done")
            return a
    return ledger.action(action_id)


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
        _check_original_slot(a, storage_options)
    if findings_key is None:
        v = ledger.verdict(a.scan_id, a.shard) if a.scan_id else None
        findings_key = make_findings_key(v.reasons) if v else ""
    a, rel = ledger.begin_resolution(
        a.id, resolution="released", restore=do_restore, who=who, reason=reason, findings_key=findings_key
    )
    _call(fault, "pending")
    if do_restore:
        _raise_if_restore_failed(_run_restore(ledger, a, storage_options, fault), "the release is recorded, but ")
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
        _check_original_slot(a, storage_options)
    a, _ = ledger.begin_resolution(a.id, resolution="restored", restore=do_restore, who=who)
    _call(fault, "pending")
    if do_restore:
        return _raise_if_restore_failed(_run_restore(ledger, a, storage_options, fault), "")
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
        a = _run_quarantine(ledger, a, so, None)
    if a.state == "failed":
        raise QuarantineError(f"{a.shard}: its quarantine failed ({a.error}); nothing is quarantined to put back")
    return a


def _check_original_slot(a: QuarantineAction, so: StorageOptions) -> None:
    """Refuse to restore over a different file at the original uri."""
    actual = _hash_or_none(a.uri, so)
    if actual is not None and actual != a.sha256:
        raise QuarantineError(
            f"{a.uri}: something with different content (sha256 {actual}) now exists at the original location; "
            f"refusing to overwrite it. Move it away, then restore again (the quarantined copy stays at {a.destination})"
        )


def _run_restore(ledger: Ledger, action: QuarantineAction, so: StorageOptions, fault: Fault | None) -> QuarantineAction:
    with _Lease(ledger, action.id) as lease:
        try:
            return _advance_restore(ledger, action.id, so, fault, lease)
        except StorageError as e:
            ledger.note_error(action.id, str(e))
            raise


def _advance_restore(ledger: Ledger, action_id: int, so: StorageOptions, fault: Fault | None, lease: _Lease) -> QuarantineAction:
    for _ in range(10):
        a = ledger.action(action_id)
        lease.renew()
        if a.restore_state not in LIVE_STATES:
            return a
        dest = a.destination
        if a.mode == "mark" or dest is None:
            a = ledger.finish_restore(a.id)
            _call(fault, "done")
            return a

        if a.restore_state == "pending":
            actual = _hash_or_none(a.uri, so)
            if actual is None:
                if _hash_or_none(dest, so) != a.sha256:
                    return ledger.set_restore_state(
                        a.id, "failed",
                        error=(f"{dest}: the quarantined copy is missing or does not match sha256 {a.sha256}, and "
                               f"{a.uri} does not exist; nothing was restored (inspect the quarantine area)"),
                    )
                storage.copy(dest, a.uri, storage_options=so)
            elif actual != a.sha256:
                return ledger.set_restore_state(
                    a.id, "failed",
                    error=(f"{a.uri}: something with different content (sha256 {actual}) now exists there; refusing to "
                           f"overwrite it. Move it away, then restore again (the quarantined copy stays at {dest})"),
                )
            # else the original is already back (copy mode, or a crashed run copied it)
            ledger.set_restore_state(a.id, "copied")
            _call(fault, "copied")

        elif a.restore_state == "copied":
            actual = _hash_or_none(a.uri, so)
            if actual is None:
                ledger.set_restore_state(a.id, "pending", error=f"{a.uri}: restored copy vanished; copying again")
                continue
            if actual != a.sha256:
                return ledger.set_restore_state(
                    a.id, "failed",
                    error=(f"{a.uri}: the restored file's sha256 {actual} does not match {a.sha256}; it was left in place "
                           f"for inspection and the quarantined copy is kept at {dest}; remove {a.uri} and restore again"),
                )
            ledger.set_restore_state(a.id, "verified")
            _call(fault, "verified")

        elif a.restore_state == "verified":
            if ledger.destination_in_use(dest, except_id=a.id):
                log.info("%s: quarantined copy kept, another quarantine action uses it", dest)
            else:
                storage.remove(dest, missing_ok=True, storage_options=so)
                # drop the emptied {sha[:16]}/... directories (one per shard-name component)
                levels = len([p for p in str(a.shard).replace("\\", "/").split("/") if p not in ("", ".")])
                storage.remove_empty_parents(dest, levels, so)
            _call(fault, "removed")
            a = ledger.finish_restore(a.id)
            _call(fault, "done")
            return a
    return ledger.action(action_id)


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
                a = _run_quarantine(ledger, a, storage_options, fault)
            if a.restore_state in LIVE_STATES:
                a = _run_restore(ledger, a, storage_options, fault)
        except (StorageError, ActionBusyError, LedgerError) as e:
            log.warning("could not resume quarantine action #%s: %s", a.id, e)
        out.append(ledger.action(a.id))
    return out


def describe(action: QuarantineAction) -> str:
    """One line for listings: ``#id shard [mode, state] uri sha256=...``."""
    return _describe(action)

