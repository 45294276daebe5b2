"""``integrity serve``: the embedded default. One command runs Prefect's own
SQLite-backed server (unless one is configured or already running) and serves
the scheduled scan on a cron schedule, with no work pool."""
from __future__ import annotations

import os
import sys
from typing import Any

from flows.env import prefect_defaults
from flows.server import find_api_url, require_answering, start_local_server


def serve_scheduled(source: str, cron: str, out_root: str, name: str = "nightly", console_port: int | None = None,
                    **scan_options: Any) -> None:
    """Serve the scheduled scan until interrupted. ``scan_options`` are the parameters of
    :func:`flows.scheduled.scheduled_scan` (policy, columns, checks, reference, quarantine_mode,
    image_root, runner, workers, address, corpus, shared_history); they are validated now, not at 2 a.m. With
    ``console_port`` the ops console serves the policy's ledger on 127.0.0.1:PORT beside the Prefect UI."""
    prefect_defaults()
    from flows.build import build_spec

    spec = build_spec(source, **{k: v for k, v in scan_options.items() if k not in ("runner", "workers", "address")})
    if scan_options.get("runner", "threads") not in ("threads", "dask"):
        raise ValueError(f"serve runs scans with the threads or dask runner, not {scan_options['runner']!r}")
    server = None
    url = find_api_url()
    if url is None:
        server = start_local_server()  # dies with this process, even on kill -9
        url = server.api_url
        print(f"Prefect server and UI on {url.removesuffix('/api')}", flush=True)
    require_answering(url)
    os.environ["PREFECT_API_URL"] = url  # the served runs' subprocesses inherit it
    console = None
    try:
        if console_port:
            from integrity.console.server import serve_in_background

            try:
                console = serve_in_background(spec.state_dir, port=console_port,
                                              prefect_ui=url.removesuffix("/api"))
                print(f"Ops console on http://127.0.0.1:{console_port}", flush=True)
            except RuntimeError as e:  # the schedule matters more than the console: serve on without it
                print(f"warning: no ops console: {e}", file=sys.stderr, flush=True)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.scheduled import scheduled_scan

        with temporary_settings(updates={PREFECT_API_URL: url}):
            scheduled_scan.serve(
                name=name, cron=cron, parameters={"source": source, "out_root": out_root, **scan_options},
                tags=["integrity"], description=f"integrity scan of {source} on '{cron}'",
            )
    finally:
        if console is not None:
            console.should_exit = True
        if server is not None:
            server.stop()
