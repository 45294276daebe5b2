"""The ``integrity`` command line: scan, gate, report, quarantine, serve.

Exit codes of ``gate``: 0 pass, 1 warn, 2 fail (a shard quarantined or
unreadable, or a critical finding), 3 the scan could not run.

This module holds the app, the scan commands, policy and automations; the quarantine
commands are in :mod:`flows.cli_state`, the console's in :mod:`flows.cli_console`,
profile and manifest in :mod:`flows.cli_profile`, shared options in :mod:`flows.cli_common`.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli_common import (COULD_NOT_RUN, EXIT, Address, CaptionCol, Checks, Corpus, IdCol, ImageCol,  # noqa: F401
                              ImageRoot, LabelCol, OutDir, PolicyOpt, PromptCol, QMode, Reference, ResponseCol,
                              Runner, ScanQMode, SharedHistory, Source, TextCol, Verbose, Workers, err, out)
from flows.cli_console import console_app, console_state_dir  # noqa: F401 (console_state_dir: its old home)
from flows.cli_state import quarantine_app

app = typer.Typer(
    help="Corpus integrity scanner: finds poisoned, duplicated, contaminated and private records "
         "in training data and quarantines suspect shards before they are trained on.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Show or validate scan policies.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
automations_app = typer.Typer(help="Prefect automations that alert on failed scans and quarantined shards.",
                              no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(automations_app, name="automations")
app.add_typer(console_app, name="console")


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
    if _OWN_PROCESS:
        # what is loaded by now (modules, classes, the policy) lives as long as the command: the
        # cyclic garbage collector stops walking it on every full collection of the scan
        gc.freeze()
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


#: the command owns its process (``main``, the console script), so what it loads may be kept out
#: of the garbage collector's walks; not when the app is invoked inside another program (tests)
_OWN_PROCESS = False


def main() -> None:
    global _OWN_PROCESS
    _OWN_PROCESS = True
    try:
        app()
    finally:
        # the interpreter's collections at exit walked every object the scan left (~0.3 s after a
        # 16x scan) only to free memory the process gives back as it ends
        gc.freeze()


if __name__ == "__main__":
    main()
