"""Task runners: threads by default, Dask for a cluster."""
from __future__ import annotations

from typing import Any


def make_task_runner(kind: str, workers: int = 2, address: str | None = None) -> Any:
    """A Prefect task runner: ``threads`` (default) or ``dask`` (``address`` of an
    existing scheduler, or a local cluster of ``workers`` processes)."""
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
    raise ValueError(f"unknown runner {kind!r}: use threads, dask or inline")


def _current_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def run_prefect_scan(spec, runner: str = "threads", workers: int = 2, address: str | None = None) -> dict:
    """Run the scan flow with the chosen task runner; returns the summary.

    Dask workers are separate processes: they must report to the flow's own
    Prefect API, not start a temporary server each. So the API URL is exported
    to the environment the workers inherit (a local cluster) and, when no
    server is configured, a local one is started for the duration of the scan.
    Workers of an existing cluster (``address``) need ``PREFECT_API_URL`` set
    to the same server in their own environment.
    """
    import os

    from flows.scan import scan_flow

    spec.runner = runner
    server = None
    try:
        if runner == "dask":
            url = _current_api_url()
            if url is None:
                from flows.serve import start_local_server

                server, url = start_local_server(port=_free_port())
            os.environ["PREFECT_API_URL"] = url
        flow = scan_flow.with_options(task_runner=make_task_runner(runner, workers, address),
                                      flow_run_name=f"scan-{spec.scan_id}")
        return flow(spec)
    finally:
        if server is not None:
            os.environ.pop("PREFECT_API_URL", None)
            server.terminate()
            server.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
