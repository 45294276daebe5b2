"""How the CLI shows a scan's (or a profile's) progress: records done / total and an ETA.

On a terminal, a progress bar on stderr; elsewhere (CI logs, pipes) one line on stderr every
``INTEGRITY_PROGRESS_EVERY`` seconds (default 15) and one when the shards are read, so a long
gate is never silent. The numbers come from :class:`integrity.engine.progress.ScanProgress`.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator

from rich.console import Console

from integrity.engine import progress


class ProgressView:
    """The tracker to feed (``tracker``) and ``phase(text)`` for steps after the shards."""

    def __init__(self, tracker: progress.ScanProgress, phase: Callable[[str], None]) -> None:
        self.tracker = tracker
        self.phase = phase


@contextlib.contextmanager
def progress_view(console: Console, label: str, scan_id: str | None = None) -> Iterator[ProgressView]:
    """Show progress while the block runs; with ``scan_id`` the tracker is registered for that
    scan, so the engine's shard passes in this process report each batch to it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    every = float(os.environ.get("INTEGRITY_PROGRESS_EVERY", "15"))
    tty = console.is_terminal
    last = [time.monotonic()]
    tracker = progress.ScanProgress(every_s=min(0.25, every))  # the bar redraws often; lines every `every` s
    with Progress(TextColumn(label), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=not tty) as bar:
        task = bar.add_task("listing shards…", total=1.0)

        def update(snap: progress.Snapshot) -> None:
            text = progress.format_snapshot(snap)
            bar.update(task, completed=snap.fraction, description=text)
            now = time.monotonic()
            if not tty and (snap.exact or now - last[0] >= every):
                last[0] = now
                console.print(f"{label}: {text} ({snap.elapsed_s:.0f}s)", highlight=False, markup=False)

        def phase(text: str) -> None:
            bar.update(task, completed=1.0, description=text)
            if not tty:
                console.print(f"{label}: {text}", highlight=False, markup=False)

        tracker.on_update = update
        if scan_id is not None:
            progress.register(scan_id, tracker)
        try:
            yield ProgressView(tracker, phase)
        finally:
            if scan_id is not None:
                progress.unregister(scan_id)
