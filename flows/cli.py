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
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(policy_app, name="policy")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

EXIT = {"pass": 0, "warn": 1, "fail": 2}
COULD_NOT_RUN = 3

Source = Annotated[str, typer.Argument(help="A file, a directory, a glob or an fsspec URL (s3://, gs://, ...).")]
OutDir = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory for the outputs (default: runs/SCAN_ID).")]
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
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress and Prefect output.")]

def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _run(spec, runner: str, workers: int, address: str | None) -> dict:
    from flows.env import prefect_defaults

    prefect_defaults(spec.policy.state_dir)
    if runner == "inline":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from integrity.engine import pipeline

        spec.runner = "inline"
        with Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=err, transient=True) as bar:
            task = bar.add_task("", total=None)

            def progress(res) -> None:
                bar.update(task, advance=1, description=res.shard)

            return pipeline.run_scan(spec, workers=workers, progress=progress)
    from flows.runners import run_prefect_scan

    with err.status(f"scanning {spec.source} ({runner} runner, Prefect)…"):
        return run_prefect_scan(spec, runner=runner, workers=workers, address=address)


def _print_summary(summary: dict) -> None:
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
    out.print(f"  report: {Path(summary.get('run_dir') or '.') / 'report.html'}")


def _scan_or_gate(source, out_dir, policy, reference, columns, checks, runner, address, workers, qmode,
                  verbose, image_root=None) -> dict | None:
    from connectors.errors import SourceError
    from integrity.checks.registry import UnknownCheckError
    from integrity.ledger import LedgerError
    from integrity.policy import PolicyError

    _setup_logging(verbose)
    try:
        from flows.build import build_spec

        spec = build_spec(source, out_dir, policy, reference, columns, checks, qmode, image_root=image_root)
        summary = _run(spec, runner, workers, address)
        summary["run_dir"] = str(spec.out)
        return summary
    except (PolicyError, SourceError, UnknownCheckError, LedgerError, typer.BadParameter, ValueError) as e:
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
         quarantine_mode: QMode = None, verbose: Verbose = False) -> None:
    """Scan SOURCE and write findings.parquet, shards.parquet, summary.json and report.html.

    Exits 0 when the scan ran (whatever it found), 3 when it could not run.
    """
    cols = dict(id=id_column, text=text_column, label=label_column, prompt=prompt_column,
                response=response_column, image=image_column, caption=caption_column)
    summary = _scan_or_gate(source, out_dir, policy, reference, cols, checks, runner, address, workers,
                            quarantine_mode, verbose, image_root)
    if summary is None:
        raise typer.Exit(COULD_NOT_RUN)
    _print_summary(summary)


@app.command()
def gate(source: Source, out_dir: OutDir = None, policy: PolicyOpt = None, reference: Reference = None,
         id_column: IdCol = "id", text_column: TextCol = "text", label_column: LabelCol = "label",
         prompt_column: PromptCol = "prompt", response_column: ResponseCol = "response",
         image_column: ImageCol = "image", caption_column: CaptionCol = "caption", image_root: ImageRoot = None,
         checks: Checks = None, runner: Runner = "threads", address: Address = None, workers: Workers = 2,
         quarantine_mode: QMode = None, verbose: Verbose = False) -> None:
    """Scan SOURCE as a pre-training gate: exit 0 pass, 1 warn, 2 fail, 3 could not run.

    Example: integrity gate data/shards/ --policy policy.yaml && python train.py
    """
    cols = dict(id=id_column, text=text_column, label=label_column, prompt=prompt_column,
                response=response_column, image=image_column, caption=caption_column)
    summary = _scan_or_gate(source, out_dir, policy, reference, cols, checks, runner, address, workers,
                            quarantine_mode, verbose, image_root)
    if summary is None:
        raise typer.Exit(COULD_NOT_RUN)
    _print_summary(summary)
    raise typer.Exit(EXIT[summary["verdict"]])


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A scan's run directory.")],
           out_file: Annotated[Optional[Path], typer.Option("--out", help="Where to write (default RUN_DIR/report.html).")] = None) -> None:
    """Re-render the HTML report of a past scan."""
    from integrity.report import write_report

    if not (run_dir / "summary.json").exists():
        err.print(f"[red]error:[/] {run_dir} is not a scan run directory (no summary.json)")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(str(write_report(run_dir, out_file)))


StateDir = Annotated[Path, typer.Option("--state-dir", help="State directory holding the ledger (policy state_dir).")]


@quarantine_app.command("list")
def quarantine_list(state_dir: StateDir = Path(".integrity")) -> None:
    """Shards currently in quarantine."""
    from rich.table import Table

    from integrity.ledger import Ledger, LedgerError

    try:
        rows = Ledger(state_dir).quarantined()
    except LedgerError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    if not rows:
        out.print("nothing is quarantined")
        return
    table = Table("shard", "mode", "state", "sha256", "destination", "when", "scan")
    for r in rows:
        r = r if isinstance(r, dict) else vars(r)
        table.add_row(str(r.get("shard")), str(r.get("mode")), str(r.get("state")), str(r.get("sha256", ""))[:16],
                      str(r.get("destination") or ""), str(r.get("updated_at") or r.get("created_at") or ""),
                      str(r.get("scan_id") or ""))
    out.print(table)


@quarantine_app.command("release")
def quarantine_release(shard: Annotated[str, typer.Argument(help="Shard name or original URI.")],
                       reason: Annotated[str, typer.Option("--reason", help="Why this content is fine (recorded in the ledger).")],
                       who: Annotated[Optional[str], typer.Option("--who", help="Who releases it (default: your user name).")] = None,
                       keep_in_quarantine: Annotated[bool, typer.Option("--no-restore", help="Approve it without moving it back.")] = False,
                       state_dir: StateDir = Path(".integrity")) -> None:
    """Approve a quarantined shard: put it back, and do not quarantine the same content again."""
    from integrity import quarantine as q
    from integrity.ledger import Ledger, LedgerError

    try:
        q.release(Ledger(state_dir), shard, reason=reason, who=who, restore=not keep_in_quarantine)
    except (q.QuarantineError, LedgerError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(f"released {shard}")


@quarantine_app.command("restore")
def quarantine_restore(shard: Annotated[str, typer.Argument(help="Shard name or original URI.")],
                       state_dir: StateDir = Path(".integrity")) -> None:
    """Put a quarantined shard back where it was, without approving it."""
    from integrity import quarantine as q
    from integrity.ledger import Ledger, LedgerError

    try:
        q.restore(Ledger(state_dir), shard)
    except (q.QuarantineError, LedgerError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(COULD_NOT_RUN)
    out.print(f"restored {shard}")


@quarantine_app.command("resume")
def quarantine_resume(state_dir: StateDir = Path(".integrity")) -> None:
    """Finish the quarantine and restore actions a crash left half done (copy, verify, remove).

    The next scan does this too; exits 0 when nothing is left unfinished, 1 when an
    action could not be finished (its error is shown; run it again once that is fixed).
    """
    from integrity import quarantine as q
    from integrity.ledger import Ledger, LedgerError
    from integrity.ledger.records import LIVE_STATES

    try:
        ledger = Ledger(state_dir)
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
          policy: PolicyOpt = None,
          name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "nightly",
          id_column: IdCol = "id", text_column: TextCol = "text", label_column: LabelCol = "label",
          prompt_column: PromptCol = "prompt", response_column: ResponseCol = "response",
          image_column: ImageCol = "image", caption_column: CaptionCol = "caption", image_root: ImageRoot = None,
          checks: Checks = None, verbose: Verbose = False) -> None:
    """Scan SOURCE on a cron schedule with the embedded Prefect default.

    One process: Prefect's own SQLite-backed server (started here unless PREFECT_API_URL
    points at one) and the served flow, no work pool. Each run writes OUT_ROOT/SCAN_ID.
    """
    from flows.serve import serve_scheduled

    _setup_logging(verbose)
    cols = dict(id=id_column, text=text_column, label=label_column, prompt=prompt_column,
                response=response_column, image=image_column, caption=caption_column)
    serve_scheduled(source=source, cron=cron, out_root=str(out_root.absolute()),
                    policy=str(policy.absolute()) if policy else None, columns=cols, checks=checks, name=name,
                    image_root=image_root)


from flows.cli_profile import register as _register_profile  # noqa: E402

_register_profile(app)  # integrity profile, integrity manifest export|verify


def main() -> None:
    app()


if __name__ == "__main__":
    main()
