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


def run_prefect_scan(spec, runner: str = "threads", workers: int = 2, address: str | None = None) -> dict:
    """Run the scan flow with the chosen task runner; returns the summary whatever the verdict
    (the flow run itself ends Failed on a fail verdict).

    The flow reports to the Prefect server that :func:`flows.server.find_api_url` finds. With
    none, a temporary local server is started for the duration of the scan (tied to this
    process, so it never outlives it) rather than Prefect's own ephemeral one, which is left
    running by a ``kill -9``. Dask workers are separate processes and report to the same API
    through the environment they inherit (a local cluster); workers of an existing cluster
    (``address``) need ``PREFECT_API_URL`` set to the same server in their own environment.
    """
    import os

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.scan import scan_flow, summary_of
    from flows.server import find_api_url, free_port, require_answering, start_local_server

    spec.runner = runner
    server = None
    previous = os.environ.get("PREFECT_API_URL")
    try:
        url = find_api_url()
        if url is None:
            server = start_local_server(port=free_port())
            url = server.api_url
        require_answering(url)
        os.environ["PREFECT_API_URL"] = url  # for Dask workers, which inherit the environment
        flow = scan_flow.with_options(task_runner=make_task_runner(runner, workers, address),
                                      flow_run_name=f"scan-{spec.scan_id}")
        with temporary_settings(updates={PREFECT_API_URL: url}):  # settings were read at import
            return summary_of(flow(spec, return_state=True))
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        if server is not None:
            server.stop()
