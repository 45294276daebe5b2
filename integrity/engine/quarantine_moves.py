"""The file side of quarantine: copy, verify and remove, for a quarantine and for a restore.

Each step is recorded in the :class:`~integrity.ledger.Ledger` before the next
one starts, under the action's worker lease (:class:`Lease`); the protocol and
its states are described in :mod:`integrity.engine.quarantine`, which finds
the actions, records the decisions and calls :func:`run_quarantine` /
:func:`run_restore` here.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

from connectors import storage
from connectors.storage import StorageError

from integrity.ledger import LIVE_STATES, Ledger, QuarantineAction, new_lease_owner, utc_now

# one logger for the whole protocol, whichever of its modules logs
log = logging.getLogger("integrity.engine.quarantine")

STEPS = ("pending", "copied", "verified", "removed", "done")
Fault = Callable[[str], None]
StorageOptions = Mapping[str, Any] | None


class QuarantineError(Exception):
    """A quarantine, release or restore could not be carried out; the message says why and what to do."""


class ActionBusyError(QuarantineError):
    """Another live worker holds the action's lease; retry later."""


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


def step_done(fault: Fault | None, step: str) -> None:
    """Tell ``fault`` (tests inject crashes through it) that ``step`` was just done."""
    if fault is not None:
        fault(step)


class Lease:
    """Holds the worker lease of one action for the duration of a ``with`` block."""

    def __init__(self, ledger: Ledger, action_id: int):
        self.ledger, self.action_id, self.owner = ledger, action_id, new_lease_owner()

    def __enter__(self) -> "Lease":
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


def hash_or_none(uri: str, so: StorageOptions) -> str | None:
    """sha256 of ``uri``, or None when it does not exist."""
    if not storage.exists(uri, so):
        return None
    return storage.sha256_of(uri, so)


# ---------------------------------------------------------------------------
# quarantine: copy, verify, remove the original


def remove_reappeared(ledger: Ledger, a: QuarantineAction, so: StorageOptions) -> QuarantineAction:
    """The quarantined content is back at its original uri (a mirror re-synced it, or
    someone copied it back by hand) while its verified copy is still held: take it
    out again, with the same order and checks as a first move."""
    assert a.destination is not None
    if storage.sha256_of(a.uri, so) != a.sha256:
        return a  # other content: a fresh scan judges it (a new sha256 gets a new action)
    if hash_or_none(a.destination, so) != a.sha256:  # the held copy is gone or damaged: copy again first
        storage.copy(a.uri, a.destination, overwrite=True, storage_options=so)
        if hash_or_none(a.destination, so) != a.sha256:
            return ledger.note_error(a.id, f"{a.destination}: re-copy of the reappeared original failed verification; "
                                           f"the original {a.uri} was left in place")
    storage.remove(a.uri, missing_ok=True, storage_options=so)
    return ledger.note_error(a.id, f"{a.uri}: the same content reappeared at the original location on {utc_now()} "
                                   "and was removed again (the verified copy is held)")


def _drive_under_lease(advance: Callable[..., QuarantineAction], ledger: Ledger, action: QuarantineAction, so: StorageOptions,
                       fault: Fault | None) -> QuarantineAction:
    """Run ``advance`` (the quarantine or restore state machine) under the action's lease; a storage
    error is noted on the action, whose state is kept so that a re-run continues, and re-raised."""
    with Lease(ledger, action.id) as lease:
        try:
            return advance(ledger, action.id, so, fault, lease)
        except StorageError as e:
            ledger.note_error(action.id, str(e))
            raise


def run_quarantine(ledger: Ledger, action: QuarantineAction, so: StorageOptions, fault: Fault | None) -> QuarantineAction:
    """Drive one action's quarantine from its recorded state to ``done`` or ``failed``, under its lease.

    A storage error is noted on the action (its state kept, so a re-run continues) and re-raised.
    """
    return _drive_under_lease(_advance_quarantine, ledger, action, so, fault)


def _advance_quarantine(ledger: Ledger, action_id: int, so: StorageOptions, fault: Fault | None, lease: Lease) -> QuarantineAction:
    src_fingerprint: str | None = None  # storage fingerprint of the source when this call hashed it
    for _ in range(10):  # a handful of transitions; bounded in case storage keeps changing under us
        a = ledger.action(action_id)
        lease.renew()
        if a.state not in LIVE_STATES:
            return a
        if a.mode == "mark":
            a = ledger.set_state(a.id, "done")
            step_done(fault, "done")
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
                if hash_or_none(dest, so) != a.sha256:  # not already copied by an interrupted run
                    storage.copy(a.uri, dest, overwrite=True, storage_options=so)
            elif hash_or_none(dest, so) != a.sha256:
                return ledger.set_state(
                    a.id, "failed",
                    error=(f"{a.uri}: the original is missing and there is no verified copy at {dest}; "
                           "nothing was quarantined (was it moved or deleted by hand?)"),
                )
            # else: the original is gone but a good copy exists (a run crashed after removing it)
            ledger.set_state(a.id, "copied")
            step_done(fault, "copied")

        elif a.state == "copied":
            actual = hash_or_none(dest, so)
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
            step_done(fault, "verified")

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
                step_done(fault, "removed")
            a = ledger.set_state(a.id, "done")
            step_done(fault, "done")
            return a
    return ledger.action(action_id)


# ---------------------------------------------------------------------------
# restore: copy back, verify, remove the quarantined copy


def check_original_slot(a: QuarantineAction, so: StorageOptions) -> None:
    """Refuse to restore over a different file at the original uri."""
    actual = hash_or_none(a.uri, so)
    if actual is not None and actual != a.sha256:
        raise QuarantineError(
            f"{a.uri}: something with different content (sha256 {actual}) now exists at the original location; "
            f"refusing to overwrite it. Move it away, then restore again (the quarantined copy stays at {a.destination})"
        )


def run_restore(ledger: Ledger, action: QuarantineAction, so: StorageOptions, fault: Fault | None) -> QuarantineAction:
    """Drive one action's restore from its recorded ``restore_state`` to ``done`` or ``failed``, under its lease.

    A storage error is noted on the action (its state kept, so a re-run continues) and re-raised.
    """
    return _drive_under_lease(_advance_restore, ledger, action, so, fault)


def _advance_restore(ledger: Ledger, action_id: int, so: StorageOptions, fault: Fault | None, lease: Lease) -> QuarantineAction:
    for _ in range(10):
        a = ledger.action(action_id)
        lease.renew()
        if a.restore_state not in LIVE_STATES:
            return a
        dest = a.destination
        if a.mode == "mark" or dest is None:
            a = ledger.finish_restore(a.id)
            step_done(fault, "done")
            return a

        if a.restore_state == "pending":
            actual = hash_or_none(a.uri, so)
            if actual is None:
                if hash_or_none(dest, so) != a.sha256:
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
            step_done(fault, "copied")

        elif a.restore_state == "copied":
            actual = hash_or_none(a.uri, so)
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
            step_done(fault, "verified")

        elif a.restore_state == "verified":
            if ledger.destination_in_use(dest, except_id=a.id):
                log.info("%s: quarantined copy kept, another quarantine action uses it", dest)
            else:
                storage.remove(dest, missing_ok=True, storage_options=so)
                # drop the emptied {sha[:16]}/... directories (one per shard-name component)
                levels = len([p for p in str(a.shard).replace("\\", "/").split("/") if p not in ("", ".")])
                storage.remove_empty_parents(dest, levels, so)
            step_done(fault, "removed")
            a = ledger.finish_restore(a.id)
            step_done(fault, "done")
            return a
    return ledger.action(action_id)
