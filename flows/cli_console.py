"""CLI commands ``integrity console`` (serve the ops console) and ``integrity console users add|list|remove``.

Added to the main typer app by :mod:`flows.cli`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli_common import COULD_NOT_RUN, StateDir, err, out

console_app = typer.Typer(help="The ops console: scans over nights, findings, the quarantine queue (web UI).",
                          invoke_without_command=True)
users_app = typer.Typer(help="Console users: viewers read, operators also release and restore.", no_args_is_help=True)
console_app.add_typer(users_app, name="users")


ConsoleHost = Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default; any other "
                                                         "address needs console users).")]
ConsolePort = Annotated[int, typer.Option("--port", help="Port to listen on.")]
PrefectUI = Annotated[Optional[str], typer.Option(
    "--prefect-ui", help="Prefect UI base URL for links to flow runs (default: $PREFECT_UI_URL, PREFECT_API_URL "
                         "without /api, or the embedded server's http://127.0.0.1:4200).")]


def _prefect_ui(url: str | None) -> str | None:
    url = url or os.environ.get("PREFECT_UI_URL")
    if not url and os.environ.get("PREFECT_API_URL"):
        url = os.environ["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
    return url or "http://127.0.0.1:4200"  # where `integrity serve` starts Prefect's UI


def console_state_dir() -> Path:
    """The console's default state dir: ``.integrity``, or the demo's ``.integrity/demo`` when only it has a
    ledger (so `make demo` then `integrity console` shows the demo scan)."""
    default, demo = Path(".integrity"), Path(".integrity") / "demo"
    if not (default / "ledger.sqlite").exists() and (demo / "ledger.sqlite").exists():
        err.print(f"[yellow]note:[/] {default} holds no ledger; serving the demo's ({demo})")
        return demo
    return default


@console_app.callback()
def console(ctx: typer.Context,
            state_dir: Annotated[Optional[Path], typer.Option(
                "--state-dir", help="State directory holding the ledger (policy state_dir; default .integrity, or "
                                    "the demo's .integrity/demo when only that one has a ledger).")] = None,
            host: ConsoleHost = "127.0.0.1", port: ConsolePort = 8765, prefect_ui: PrefectUI = None) -> None:
    """Serve the ops console on the ledger in --state-dir (http://127.0.0.1:8765 by default).

    With no console users it is read-only and only binds to loopback; add users with
    `integrity console users add NAME --role viewer|operator`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from integrity.console import BindError
    from integrity.console.server import serve as serve_console
    from integrity.ledger import LedgerError

    state_dir = state_dir or console_state_dir()
    if not (state_dir / "ledger.sqlite").exists():
        err.print(f"[yellow]note:[/] {state_dir} holds no ledger yet; the console starts empty "
                  "(scans with this state directory will show up). The demo's is .integrity/demo.")
    try:
        out.print(f"integrity console on http://{host}:{port} (state dir {state_dir}); Ctrl+C stops it")
        serve_console(state_dir, host=host, port=port, prefect_ui=_prefect_ui(prefect_ui))
    except (BindError, LedgerError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)


@users_app.command("add")
def console_users_add(
        name: Annotated[str, typer.Argument(help="User name (what they type to sign in).")],
        role: Annotated[str, typer.Option("--role", help="viewer (reads) or operator (also releases and restores).")],
        password_stdin: Annotated[bool, typer.Option(
            "--password-stdin", help="Read a password (8+ characters) from stdin instead of printing a token.")] = False,
        state_dir: StateDir = Path(".integrity")) -> None:
    """Add a console user (or replace their role and secret). Prints a new token once unless --password-stdin."""
    from integrity.console import add_user
    from integrity.ledger import Ledger, LedgerError

    secret = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        token = add_user(Ledger(state_dir), name, role, secret)
    except (ValueError, LedgerError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    if password_stdin:
        out.print(f"user {name} ({role}) set; the password is stored hashed")
    else:
        out.print(f"user {name} ({role}) added. Sign-in token (shown once, stored hashed):")
        sys.stdout.write(token + "\n")


@users_app.command("list")
def console_users_list(state_dir: StateDir = Path(".integrity")) -> None:
    """List console users and their roles."""
    from integrity.ledger import Ledger

    users = Ledger(state_dir).users()
    if not users:
        out.print("no console users (the console is read-only and loopback-only)")
    for u in users:
        out.print(f"{u.name:24s} {u.role:9s} added {u.created_at} by {u.created_by}")


@users_app.command("remove")
def console_users_remove(name: Annotated[str, typer.Argument(help="User name.")],
                         state_dir: StateDir = Path(".integrity")) -> None:
    """Remove a console user (their sessions stop working at once)."""
    from integrity.ledger import Ledger

    if not Ledger(state_dir).remove_user(name):
        err.print(f"[red]error:[/] no console user named {name!r}")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(f"removed {name}")
