"""The ``integrity`` command line: scan, gate, report, quarantine, serve.

Exit codes of ``gate``: 0 pass, 1 warn, 2 fail (a shard quarantined or
unreadable, or a critical finding), 3 the scan could not run.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    help="Corpus integrity scanner: finds poisoned, duplicated, contaminated and private records "
         "in training data and quarantines suspect shards before they are trained on.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
quarantine_app = typer.Typer(help="List, release or restore quarantined shards.", no_args_is_help=True)
policy_app = typer.Typer(help="Show or validate scan policies.", no_args_is_help=True)
console_app = typer.Typer(help="The ops console: scans over nights, findings, the quarantine queue (web UI).",
                          invoke_without_command=True)
users_app = typer.Typer(help="Console users: viewers read, operators also release and restore.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
automations_app = typer.Typer(help="Prefect automations that alert on failed scans and quarantined shards.",
                              no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(automations_app, name="automations")
app.add_typer(console_app, name="console")
console_app.add_typer(users_app, name="users")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

EXIT = {"pass": 0, "warn": 1, "fail": 2}
COULD_NOT_RUN = 3

Source = Annotated[str, typer.Argument(help="A file, a directory, a glob or an fsspec URL (s3://, gs://, ...).")]
OutDir = Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory for the outputs (default: runs/SCAN_ID); "
                                                "a path or an fsspec URL (s3://bucket/run) every Dask worker reaches.")]
PolicyOpt = Annotated[Optional[Path], typer.Option("--policy", "-p", help="Policy YAML (default: the shipped policy; `integrity policy default` prints it).")]
Reference = Annotated[Optional[str], typer.Option("--reference", help="Reference profile directory for drift checks.")]
IdCol = Annotated[str, typer.Option("--id-column", help="Column holding record ids (row index when absent).")]
TextCol = Annotated[str, typer.Option("--text-column", help="Column holding the text.")]
LabelCol = Annotated[str, typer.Option("--label-column", help="Column holding a class label.")]
PromptCol = Annotated[str, typer.Option("--prompt-column", help="Column holding an instruction/prompt.")]
ResponseCol = Annotated[str, typer.Option("--response-column", help="Column holding a response.")]
ImageCol = Annotated[str, typer.Option("--image-column", help="Column holding image bytes or paths.")]
CaptionCol = Annotated[str, typer.Option("--caption-column", help="Column holding an image caption.")]
ImageRoot = Annotated[Optional[str], typer.Option(
    "--image-root", help="Directory or URL prefix that absolute image paths and URLs in the image column must "
                         "lie inside (default: only paths relative to each shard's directory are read).")]
Checks = Annotated[Optional[str], typer.Option("--checks", help="Comma-separated checks to run (default: all the policy enables).")]
Runner = Annotated[str, typer.Option("--runner", help="threads (Prefect, default), dask (Prefect on Dask) or inline (no Prefect).")]
Address = Annotated[Optional[str], typer.Option("--address", help="Dask scheduler address for --runner dask (default: a local cluster).")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Parallel shard tasks (threads or local Dask workers).")]
QMode = Annotated[Optional[str], typer.Option("--quarantine-mode", help="Override the policy: move, copy, mark or off.")]
ScanQMode = Annotated[Optional[str], typer.Option(
    "--quarantine-mode", help="scan only reports (off) unless asked: move, copy or mark act on the shards "
                              "the policy sends to quarantine, as gate does.")]
Corpus = Annotated[Optional[str], typer.Option(
    "--corpus", help="Name of the corpus this scan belongs to: its dedup history and ledger entries are kept "
                     "apart from other corpora's (default: derived from SOURCE, stable across runs).")]
SharedHistory = Annotated[bool, typer.Option(
    "--shared-history", help="Match against (and add to) the history shared by every corpus scanned with "
                             "this option, instead of this corpus's own.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress and Prefect output.")]

#: libraries whose INFO lines are transport chatter (one per HTTP request), not the scan's progress
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "hpack", "h2", "h11", "websockets", "asyncio", "filelock",
                 "fsspec", "huggingface_hub", "sentence_transformers", "matplotlib", "PIL", "numexpr",
                 "uvicorn.access", "docket", "fakeredis", "prefect.server", "prefect.events")


def _setup_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # also when something configured logging before us
    for name in NOISY_LOGGERS:  # -v shows the scan, not every request Prefect's client makes
        logging.getLogger(name).setLevel(logging.WARNING)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _run_inline(spec, workers: int) -> dict:
    """The engine in this process, no Prefect, with a progress bar on stderr."""
    from integrity.engine import pipeline

    from flows.progress_view import progress_view

    with progress_view(err, "scanning", spec.scan_id):
        return pipeline.run_scan(spec, workers=workers)


def _run(spec, runner: str, workers: int, address: str | None) -> dict:
    from flows.env import prefect_defaults

    prefect_defaults(spec.policy.state_dir)
    if runner == "inline":
        spec.runner = "inline"
        return _run_inline(spec, workers)
    if runner == "threads":
        from flows.server import find_api_url

        if find_api_url() is None:
            # starting a Prefect server for one scan costs 10-20 s: with none configured or
            # running, the default runner is the engine's own thread pool
            spec.runner = "threads"
            err.print("[dim]no Prefect server configured or running: scanning without Prefect "
                      "(set PREFECT_API_URL or run `prefect server start` to see scans in the Prefect UI)[/]")
            return _run_inline(spec, workers)
    from flows.runners import run_prefect_scan

    from flows.progress_view import progress_view

    with progress_view(err, f"scanning ({runner}, Prefect)", spec.scan_id):
        return run_prefect_scan(spec, runner=runner, workers=workers, address=address)


def _print_summary(summary: dict) -> None:
    import polars as pl

    from integrity.ledger import release_command

    c = summary["counts"]
    colour = {"pass": "green", "warn": "yellow", "fail": "red"}[summary["verdict"]]
    out.print(f"[bold {colour}]{summary['verdict'].upper()}[/] scan {summary['scan_id']}: "
              f"{c['shards']} shards, {c['rows']:,} records, {c['findings']:,} findings "
              f"in {summary['timings']['total']:.1f}s")
    v = c["verdicts"]
    out.print(f"  shards: {v['pass']} pass, {v['warn']} warn, {v['quarantine']} quarantine, {v['unreadable']} unreadable"
              f" ({summary['cached_shards']} from cache)")
    for check, sev in c["by_check"].items():
        out.print(f"  {check:24s} critical {sev['critical']:>7,}  warn {sev['warn']:>7,}  info {sev['info']:>7,}")
    for u in summary.get("unreadable", []):
        err.print(f"[red]unreadable[/] {u['shard']}: {u['error']}")
    from integrity.engine.outputs import read_run_parquet

    run_dir = str(summary.get("run_dir") or ".")
    try:
        held = read_run_parquet(run_dir, "shards.parquet", columns=["shard", "verdict", "quarantine"]).filter(
            pl.col("verdict") == "quarantine")
    except FileNotFoundError:
        held = pl.DataFrame()
    acted = summary.get("quarantine_mode") not in ("off", None)
    for row in held.iter_rows(named=True):
        if acted:
            out.print(f"  [red]quarantined[/] {row['shard']}: {row['quarantine']}")
        else:
            out.print(f"  [red]to quarantine[/] {row['shard']} (not moved: scan only reports; "
                      f"run `integrity gate` or add --quarantine-mode move to act)")
    if acted and held.height:
        out.print("  to release one after review (restores it and records why):")
        for row in held.head(5).iter_rows(named=True):
            out.print("    " + release_command(row["shard"], summary.get("state_dir"), summary.get("corpus")),
                      highlight=False, markup=False)
    out.print(f"  corpus {summary.get('corpus')}, state {summary.get('state_dir')}", highlight=False)
    out.print(f"  report: {run_dir.rstrip('/')}/report.html", highlight=False)


def _scan_or_gate(source, out_dir, policy, reference, columns, checks, runner, address, workers, qmode,
                  verbose, image_root=None, corpus=None, shared_history=False) -> dict | None:
    from connectors.errors import SourceError
    from integrity.checks.registry import UnknownCheckError
    from integrity.engine.outputs import OutputError
    from integrity.ledger import LedgerError
    from integrity.policy import PolicyError

    _setup_logging(verbose)
    try:
        from flows.build import build_spec

        spec = build_spec(source, out_dir, policy, reference, columns, checks, qmode, image_root=image_root,
                          corpus=corpus, shared_history=shared_history)
        summary = _run(spec, runner, workers, address)
        summary["run_dir"] = spec.run_location
        return summary
    except (PolicyError, SourceError, UnknownCheckError, LedgerError, OutputError, typer.BadParameter,
            ValueError) as e:
        err.print(f"[red]error:[/] {e}")
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
    except Exception as e:  # the gate must answer 3, not a traceback
        logging.getLogger(__name__).debug("scan failed", exc_info=True)
        err.print(f"[red]error:[/] the scan could not run: {type(e).__name__}: {e} (re-run with -v for details)")
        if verbose:
            raise
    return None


@app.command()
def scan(source: Source, out_dir: OutDir = None, policy: PolicyOpt = None, reference: Reference = None,
         id_column: IdCol = "id", text_column: TextCol = "text", label_column: LabelCol = "label",
         prompt_column: PromptCol = "prompt", response_column: ResponseCol = "response",
         image_column: ImageCol = "image", caption_column: CaptionCol = "caption", image_root: ImageRoot = None,
         checks: Checks = None, runner: Runner = "threads", address: Address = None, workers: Workers = 2,
         quarantine_mode: ScanQMode = None, corpus: Corpus = None, shared_history: SharedHistory = False,
         verbose: Verbose = False) -> None:
    """Scan SOURCE and write findings.parquet, shards.parquet, summary.json and report.html.

    Only reports: no shard is moved unless --quarantine-mode asks for it (`gate` acts as the
    policy says). Exits 0 when the scan ran (whatever it found), 3 when it could not run.
    """
    cols = dict(id=id_column, text=text_column, label=label_column, prompt=prompt_column,
                response=response_column, image=image_column, caption=caption_column)
    summary = _scan_or_gate(source, out_dir, policy, reference, cols, checks, runner, address, workers,
                            quarantine_mode or "off", verbose, image_root, corpus, shared_history)
    if summary is None:
        raise typer.Exit(COULD_NOT_RUN)
    _print_summary(summary)


@app.command()
def gate(source: Source, out_dir: OutDir = None, policy: PolicyOpt = None, reference: Reference = None,
         id_column: IdCol = "id", text_column: TextCol = "text", label_column: LabelCol = "label",
         prompt_column: PromptCol = "prompt", response_column: ResponseCol = "response",
         image_column: ImageCol = "image", caption_column: CaptionCol = "caption", image_root: ImageRoot = None,
         checks: Checks = None, runner: Runner = "threads", address: Address = None, workers: Workers = 2,
         quarantine_mode: QMode = None, corpus: Corpus = None, shared_history: SharedHistory = False,
         verbose: Verbose = False) -> None:
    """Scan SOURCE as a pre-training gate: exit 0 pass, 1 warn, 2 fail, 3 could not run.

    Quarantines as the policy says (quarantine.mode, default move). Example:
    integrity gate data/shards/ --policy policy.yaml && python train.py
    """
    cols = dict(id=id_column, text=text_column, label=label_column, prompt=prompt_column,
                response=response_column, image=image_column, caption=caption_column)
    summary = _scan_or_gate(source, out_dir, policy, reference, cols, checks, runner, address, workers,
                            quarantine_mode, verbose, image_root, corpus, shared_history)
    if summary is None:
        raise typer.Exit(COULD_NOT_RUN)
    _print_summary(summary)
    raise typer.Exit(EXIT[summary["verdict"]])


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A scan's run directory.")],
           out_file: Annotated[Optional[Path], typer.Option("--out", help="Where to write (default RUN_DIR/report.html).")] = None) -> None:
    """Re-render the HTML report of a past scan."""
    from integrity.report.render import write_report

    if not (run_dir / "summary.json").exists():
        err.print(f"[red]error:[/] {run_dir} is not a scan run directory (no summary.json)")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(str(write_report(run_dir, out_file)))


StateDir = Annotated[Optional[Path], typer.Option(
    "--state-dir", help="State directory holding the ledger (the policy's state_dir; default .integrity).")]
StatePolicy = Annotated[Optional[Path], typer.Option(
    "--policy", "-p", help="Find the ledger where this policy's scans keep it (its state_dir).")]
StateRun = Annotated[Optional[Path], typer.Option(
    "--run", help="Find the ledger of the scan that wrote this run directory (its summary.json).")]
CorpusFilter = Annotated[Optional[str], typer.Option("--corpus", help="Only this corpus's shards.")]


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


@policy_app.command("default")
def policy_default() -> None:
    """Print the shipped default policy (a documented starting point)."""
    from integrity.policy import default_policy_text

    sys.stdout.write(default_policy_text())


@policy_app.command("validate")
def policy_validate(path: Annotated[Path, typer.Argument(help="Policy YAML to check.")]) -> None:
    """Validate a policy file; errors name the bad key."""
    from integrity.policy import PolicyError, load_policy

    try:
        p = load_policy(path)
    except PolicyError as e:
        err.print(f"[red]{e}[/]")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(f"{path}: valid; checks enabled: {', '.join(p.enabled_checks())}")


@app.command("checks")
def list_checks() -> None:
    """List the available checks."""
    from integrity.checks import registry

    for name in registry.available():
        cls = registry.get(name)
        out.print(f"{name:26s} {cls.description}")


@app.command()
def serve(source: Source,
          cron: Annotated[str, typer.Option("--cron", help="Cron schedule, e.g. '0 2 * * *' for 02:00 nightly.")] = "0 2 * * *",
          out_root: Annotated[Path, typer.Option("--out-root", help="Each run writes RUN_ROOT/SCAN_ID.")] = Path("runs"),
          policy: PolicyOpt = None, reference: Reference = None,
          name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "nightly",
          id_column: IdCol = "id", text_column: TextCol = "text", label_column: LabelCol = "label",
          prompt_column: PromptCol = "prompt", response_column: ResponseCol = "response",
          image_column: ImageCol = "image", caption_column: CaptionCol = "caption", image_root: ImageRoot = None,
          checks: Checks = None,
          runner: Annotated[str, typer.Option("--runner", help="threads (default) or dask.")] = "threads",
          address: Address = None, workers: Workers = 2, quarantine_mode: QMode = None,
          corpus: Corpus = None, shared_history: SharedHistory = False,
          console_port: Annotated[int, typer.Option(
              "--console-port", help="Serve the ops console on 127.0.0.1:PORT beside the Prefect UI (0: no console).")] = 8765,
          verbose: Verbose = False) -> None:
    """Scan SOURCE on a cron schedule with the embedded Prefect default.

    One process: Prefect's own SQLite-backed server (started here unless PREFECT_API_URL
    points at one or a server answers at the local default address) and the served flow, no
    work pool. Takes the options of `scan`; each run writes OUT_ROOT/SCAN_ID and ends Failed
    in Prefect when the verdict is fail.
    """
    from connectors.errors import SourceError
    from integrity.checks.registry import UnknownCheckError
    from integrity.policy import PolicyError

    from flows.serve import serve_scheduled

    _setup_logging(verbose)
    cols = dict(id=id_column, text=text_column, label=label_column, prompt=prompt_column,
                response=response_column, image=image_column, caption=caption_column)
    try:
        serve_scheduled(source=source, cron=cron, out_root=str(out_root.absolute()), name=name,
                        policy=str(policy.absolute()) if policy else None, columns=cols, checks=checks,
                        reference=str(Path(reference).absolute()) if reference and "://" not in reference else reference,
                        quarantine_mode=quarantine_mode, image_root=image_root,
                        runner=runner, workers=workers, address=address, corpus=corpus,
                        shared_history=shared_history, console_port=console_port or None)
    except (PolicyError, SourceError, UnknownCheckError, typer.BadParameter, ValueError, RuntimeError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    except KeyboardInterrupt:
        pass


@automations_app.command("create")
def automations_create(
        webhook: Annotated[str, typer.Option("--webhook", help="URL the alerts are POSTed to (JSON).")],
        file: Annotated[Optional[Path], typer.Option("--file", help="Automation definitions (default: deployments/automations.yaml).")] = None) -> None:
    """Create (or replace) the alerting automations on the Prefect server of PREFECT_API_URL:
    a POST to WEBHOOK when a scan's verdict is fail and when a shard is quarantined."""
    from flows.alerts import AUTOMATIONS_FILE, create_automations, describe
    from flows.env import prefect_defaults
    from flows.server import find_api_url

    prefect_defaults()
    path = file or AUTOMATIONS_FILE
    url = find_api_url()
    if url is None:
        err.print("[red]error:[/] no Prefect server to create automations on: set PREFECT_API_URL "
                  "(or start `integrity serve` / `prefect server start`) and run this again")
        raise typer.Exit(COULD_NOT_RUN)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            names = create_automations(webhook, path)
    except (OSError, KeyError, ValueError) as e:
        err.print(f"[red]error:[/] could not create the automations of {path}: {e}")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(f"created on {url}: {', '.join(names)}\n{describe(path)}")


from flows.cli_profile import register as _register_profile  # noqa: E402

_register_profile(app)  # integrity profile, integrity manifest export|verify


def main() -> None:
    app()


if __name__ == "__main__":
    main()
