"""The flow that deployments schedule: plain JSON parameters, one run directory per run."""
# No `from __future__ import annotations` here: Prefect ships a served or deployed run's flow to
# its subprocess with cloudpickle, by value, and string annotations would not resolve there
# (`Scan_FlowModel is not fully defined; you should define ScanSpec`).

from typing import Any

from prefect import flow
from prefect.states import State

from flows.build import build_spec
from flows.runners import make_task_runner
from flows.scan import scan_flow, summary_of, verdict_state


@flow(name="integrity-scheduled-scan", log_prints=True)
def scheduled_scan(source: str, out_root: str = "runs", policy: str | None = None,
                   columns: dict[str, str] | None = None, checks: str | None = None,
                   quarantine_mode: str | None = None, image_root: str | None = None,
                   reference: str | None = None, runner: str = "threads", workers: int = 2,
                   address: str | None = None, corpus: str | None = None,
                   shared_history: bool = False) -> State:
    """Scan ``source`` into ``out_root/SCAN_ID`` (the nightly deployment's entrypoint).

    The parameters are the options of ``integrity scan``; ``runner`` is ``threads`` or ``dask``
    (``address``: an existing Dask scheduler); ``corpus`` names the corpus whose history the
    nightly runs share (default: derived from ``source``), ``shared_history`` matches against the
    history every corpus shares. The run ends Failed when the verdict is fail,
    Completed (named Warned or Passed) otherwise; its result is the scan's summary.
    """
    if runner not in ("threads", "dask"):
        raise ValueError(f"runner must be threads or dask in a scheduled scan, not {runner!r}")
    spec = build_spec(source, policy=policy, reference=reference, columns=columns, checks=checks,
                      quarantine_mode=quarantine_mode, out_root=out_root, image_root=image_root,
                      corpus=corpus, shared_history=shared_history)
    spec.runner = runner
    scan = scan_flow.with_options(task_runner=make_task_runner(runner, workers, address),
                                  flow_run_name=f"scan-{spec.scan_id}")
    summary = summary_of(scan(spec, return_state=True))
    summary["run_dir"] = str(spec.out)
    return verdict_state(summary)  # this run's own state tells the verdict too, not "all subflows completed"
