"""CLI commands ``integrity quarantine list|release|restore|resume``, on the ledger of a state directory.

Added to the main typer app by :mod:`flows.cli`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli_common import COULD_NOT_RUN, CorpusFilter, StateDir, StatePolicy, StateRun, err, out

quarantine_app = typer.Typer(help="List, release or restore quarantined shards.", no_args_is_help=True)


def _state_dir(state_dir: Path | None, policy: Path | None, run: Path | None) -> Path:
    """The state directory a command reads, found the way the scan wrote it: --state-dir,
    else the policy's state_dir, else the one recorded in a run directory, else .integrity."""
    import json

    from integrity.policy import PolicyError, load_policy

    if state_dir is not None:
        return state_dir.expanduser().absolute()
    if policy is not None:
        try:
            return Path(load_policy(policy).state_dir).expanduser().absolute()
        except PolicyError as e:
            err.print(f"[red]{e}[/]")
            raise typer.Exit(COULD_NOT_RUN)
    if run is not None:
        try:
            recorded = json.loads((run / "summary.json").read_text()).get("state_dir")
        except (OSError, ValueError) as e:
            err.print(f"[red]error:[/] {run} is not a scan run directory ({e})")
            raise typer.Exit(COULD_NOT_RUN)
        if not recorded:
            err.print(f"[red]error:[/] {run}/summary.json records no state directory (a scan by an older "
                      f"version); pass --state-dir or --policy")
            raise typer.Exit(COULD_NOT_RUN)
        return Path(recorded)
    return Path(".integrity").absolute()


def _ledger(state_dir: Path):
    from integrity.ledger import DB_NAME, Ledger, LedgerError

    if not (state_dir / DB_NAME).exists():
        err.print(f"[red]error:[/] no ledger in {state_dir}: no scan has used this state directory. Point at the "
                  f"one your scans use with --policy POLICY.yaml, --state-dir DIR or --run RUN_DIR")
        raise typer.Exit(COULD_NOT_RUN)
    try:
        return Ledger(state_dir)
    except LedgerError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)


@quarantine_app.command("list")
def quarantine_list(state_dir: StateDir = None, policy: StatePolicy = None, run: StateRun = None,
                    corpus: CorpusFilter = None) -> None:
    """Shards currently in quarantine: name, corpus, mode and state, where the copy is."""
    where = _state_dir(state_dir, policy, run)
    rows = _ledger(where).quarantined(corpus)
    if not rows:
        out.print(f"nothing is quarantined (ledger in {where}" + (f", corpus {corpus}" if corpus else "") + ")",
                  highlight=False)
        return
    out.print(f"{len(rows)} quarantined (ledger in {where}):", highlight=False)
    for r in rows:  # one plain line each: names stay whole, to paste into `quarantine release`
        dest = f" → {r.destination}" if r.destination else " (ledger only; the file stays)"
        out.print(f"  {r.shard}  corpus {r.corpus or '-'}  {r.mode} {r.state}{dest}  "
                  f"sha256 {r.sha256[:16]}  {r.updated_at or r.created_at}  scan {r.scan_id or '-'}",
                  highlight=False, markup=False)


@quarantine_app.command("release")
def quarantine_release(shard: Annotated[str, typer.Argument(help="Shard name (as listed, or just its file name) or original URI.")],
                       reason: Annotated[str, typer.Option("--reason", help="Why this content is fine (recorded in the ledger).")],
                       who: Annotated[Optional[str], typer.Option("--who", help="Who releases it (default: your user name).")] = None,
                       keep_in_quarantine: Annotated[bool, typer.Option("--no-restore", help="Approve it without moving it back.")] = False,
                       state_dir: StateDir = None, policy: StatePolicy = None, run: StateRun = None,
                       corpus: CorpusFilter = None) -> None:
    """Approve a quarantined shard: put it back, and do not quarantine the same content again."""
    from integrity.engine import quarantine as q
    from integrity.ledger import LedgerError

    ledger = _ledger(_state_dir(state_dir, policy, run))
    try:
        rel = q.release(ledger, shard, reason=reason, who=who, restore=not keep_in_quarantine, corpus=corpus)
    except (q.QuarantineError, LedgerError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    back = f"; restored to {rel.uri}" if rel.restored else ""
    out.print(f"released {rel.shard}{back}", highlight=False)


@quarantine_app.command("restore")
def quarantine_restore(shard: Annotated[str, typer.Argument(help="Shard name (as listed, or just its file name) or original URI.")],
                       state_dir: StateDir = None, policy: StatePolicy = None, run: StateRun = None,
                       corpus: CorpusFilter = None) -> None:
    """Put a quarantined shard back where it was, without approving it."""
    from integrity.engine import quarantine as q
    from integrity.ledger import LedgerError

    ledger = _ledger(_state_dir(state_dir, policy, run))
    try:
        a = q.restore(ledger, shard, corpus=corpus)
    except (q.QuarantineError, LedgerError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(f"restored {a.shard} to {a.uri}", highlight=False)


@quarantine_app.command("resume")
def quarantine_resume(state_dir: StateDir = None, policy: StatePolicy = None, run: StateRun = None) -> None:
    """Finish the quarantine and restore actions a crash left half done (copy, verify, remove).

    The next scan does this too; exits 0 when nothing is left unfinished, 1 when an
    action could not be finished (its error is shown; run it again once that is fixed).
    """
    from integrity.engine import quarantine as q
    from integrity.ledger import LedgerError
    from integrity.ledger.records import LIVE_STATES

    ledger = _ledger(_state_dir(state_dir, policy, run))
    try:
        actions = q.resume_pending(ledger)
    except (q.QuarantineError, LedgerError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    if not actions:
        out.print("no unfinished quarantine actions")
        return
    stuck = [a for a in actions if a.state in LIVE_STATES or a.restore_state in LIVE_STATES]
    for a in actions:
        line = q.describe(a)
        if a in stuck:
            err.print(f"[yellow]unfinished[/] {line}" + (f": {a.error}" if a.error else ""))
        else:
            out.print(f"finished {line}")
    if stuck:
        raise typer.Exit(1)
