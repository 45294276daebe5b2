"""What the ``integrity`` command line's modules share: the consoles, exit codes and options.

The commands live in :mod:`flows.cli` (scan, gate, report, serve, policy, automations),
:mod:`flows.cli_state` (quarantine), :mod:`flows.cli_console` (console) and
:mod:`flows.cli_profile` (profile, manifest).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

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

StateDir = Annotated[Optional[Path], typer.Option(
    "--state-dir", help="State directory holding the ledger (the policy's state_dir; default .integrity).")]
StatePolicy = Annotated[Optional[Path], typer.Option(
    "--policy", "-p", help="Find the ledger where this policy's scans keep it (its state_dir).")]
StateRun = Annotated[Optional[Path], typer.Option(
    "--run", help="Find the ledger of the scan that wrote this run directory (its summary.json).")]
CorpusFilter = Annotated[Optional[str], typer.Option("--corpus", help="Only this corpus's shards.")]
