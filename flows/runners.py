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
    """Run the scan flow with the chosen task runner; returns the summary."""
    from flows.scan import scan_flow

    spec.runner = runner
    flow = scan_flow.with_options(task_runner=make_task_runner(runner, workers, address),
                                  flow_run_name=f"scan-{spec.scan_id}")
    return flow(spec)
