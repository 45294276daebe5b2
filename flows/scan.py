"""The scan as a Prefect flow: the engine runs the stages in their order
(:func:`integrity.engine.pipeline.execute`: list, shards, corpus, policy, quarantine,
outputs); the flow supplies Prefect's mapping of the per-shard tasks, a task per stage,
the artifacts and the events.

Per-shard work is cached by shard SHA-256 and check configuration in the
engine's content-addressed cache (``integrity.engine.shard``), so an unchanged
shard is not re-read; tasks return small dicts and paths, never tables.
Artifacts: a markdown summary, a table of shard verdicts and a progress bar.
Events: ``integrity.shard.quarantined`` per quarantined shard and
``integrity.scan.completed`` per scan, for automations that alert.
"""
# No `from __future__ import annotations` here: Prefect ships a served or deployed run's flow to
# its subprocess with cloudpickle, by value, and string annotations would not resolve there
# (`Scan_FlowModel is not fully defined; you should define ScanSpec`).

import contextlib
import functools
from typing import Any, Callable, Iterator

import polars as pl
import prefect.runtime as prefect_runtime
from prefect import Task, flow, get_run_logger, task, unmapped
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.futures import wait
from prefect.states import Completed, Failed, State

from connectors import ShardRef
from integrity.engine import outputs, pipeline, progress
from integrity.engine.shard import ShardResult
from integrity.engine.spec import ScanSpec

#: how often the progress artifact is brought up to date while shard tasks run
ARTIFACT_EVERY_S = 5.0


#: the Prefect task name of each engine stage (see :func:`integrity.engine.pipeline.execute`)
STAGE_TASKS = {"list": "list-shards", "corpus": "corpus-checks", "policy": "policy", "quarantine": "quarantine",
               "outputs": "outputs"}


@functools.cache
def _stage_task(name: str, stage: Callable[..., Any]) -> Task:
    return task(stage, name=STAGE_TASKS[name], cache_policy=NO_CACHE)


def run_stage_task(name: str, stage: Callable[..., Any], *args: Any) -> Any:
    """The engine's ``run_stage`` hook: each stage runs as a Prefect task (a run in the UI, its logs)."""
    return _stage_task(name, stage)(*args)


#: the stages whose memory grows with the corpus (corpus passes, findings, history, report)
WORKER_STAGES = frozenset({"corpus", "policy", "quarantine", "outputs"})


def submitted_stage_task(name: str, stage: Callable[..., Any], *args: Any) -> Any:
    """The ``run_stage`` hook of a scan on Dask: the stages of :data:`WORKER_STAGES` are submitted
    to the task runner and run on a worker (the flow process only waits for their small result,
    so its memory does not grow with the corpus); the others run in the flow process."""
    if name not in WORKER_STAGES:
        return run_stage_task(name, stage, *args)
    return _stage_task(name, stage).submit(*args).result()


@contextlib.contextmanager
def _off_the_worker_pool() -> Iterator[None]:
    """Inside a Dask worker (a stage running there), leave the worker's thread pool while
    waiting for its own partition tasks, so that they can run on it (no deadlock with one
    thread per worker); elsewhere nothing."""
    try:
        from distributed import get_worker, rejoin, secede

        get_worker()
    except (ImportError, ValueError):
        yield
        return
    secede()
    try:
        yield
    finally:
        rejoin()


@task(name="scan-shard", task_run_name="scan {ref.name}", cache_policy=NO_CACHE)
def shard_task(ref: ShardRef, scan: Callable[[ShardRef], ShardResult]) -> dict:
    result = scan(ref)
    if not result.ok:
        get_run_logger().error("%s: %s", ref.name, result.error)
    return result.to_dict()


def shard_tasks(spec: ScanSpec) -> Callable[..., Iterator[ShardResult]]:
    """The engine's ``map_shards`` hook: one task per shard on the flow's task runner (threads,
    Dask), with the progress artifact brought up to date while they run: records done / total
    and an ETA, from the batches of tasks in this process (threads) or the shards that finished
    (Dask workers, in other processes)."""
    def map_shards(scan: Callable[[ShardRef], ShardResult], refs: list[ShardRef]) -> Iterator[ShardResult]:
        get_run_logger().info("scan %s: %d shards in %s", spec.scan_id, len(refs), spec.source)
        tracker = progress.tracker(spec.scan_id)  # the engine's, registered for this scan
        progress_id = create_progress_artifact(0.0, key="integrity-scan-progress",
                                               description=f"scanning {len(refs)} shards")
        pending = list(shard_task.map(refs, unmapped(scan)))
        last = -1.0
        while pending:
            done, not_done = wait(pending, timeout=ARTIFACT_EVERY_S)
            for fut in done:
                yield ShardResult(**fut.result())
            pending = list(not_done)
            snap = tracker.snapshot()
            if snap.fraction != last:
                update_progress_artifact(progress_id, 100.0 * snap.fraction, description=progress.format_snapshot(snap))
                last = snap.fraction
    return map_shards


@task(name="corpus-partition", task_run_name="partition {index}", cache_policy=NO_CACHE)
def partition_task(item: Any, step: Callable[[Any], Any], index: int) -> Any:
    """One partitioned step of a corpus pass (a band-join partition, ...) on the flow's task
    runner: on a Dask worker under ``--runner dask``, so the flow process never does it."""
    return step(item)


def partition_tasks(step: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """The engine's ``map_partitions`` hook: a task per item on the flow's task runner (threads
    or Dask workers), results in the order of ``items``."""
    futures = partition_task.map(items, unmapped(step), list(range(len(items))))
    with _off_the_worker_pool():
        return [f.result() for f in futures]


def _emit_quarantined(spec: ScanSpec, row: dict) -> None:
    where = f" → {row['destination']}" if row.get("destination") and row["mode"] != "mark" else " (ledger only)"
    get_run_logger().warning("quarantined %s (%s %s)%s", row["shard"], row["mode"], row["state"], where)
    emit_event(
        event="integrity.shard.quarantined",
        resource={"prefect.resource.id": f"integrity.shard.{row['sha256']}", "prefect.resource.name": row["shard"]},
        related=[{"prefect.resource.id": f"integrity.scan.{spec.scan_id}", "prefect.resource.role": "scan"}],
        payload={"shard": row["shard"], "uri": row["uri"], "sha256": row["sha256"], "reasons": row["reasons"],
                 "mode": row["mode"], "state": row["state"], "destination": row.get("destination")},
    )


def _markdown(summary: dict) -> str:
    c = summary["counts"]
    lines = [
        f"# Integrity scan {summary['scan_id']}: **{summary['verdict'].upper()}**",
        "",
        f"Source `{summary['source']}`, policy `{summary['policy']['source']}`; "
        f"{c['shards']} shards, {c['rows']:,} records, {c['findings']:,} findings, "
        f"{summary['cached_shards']} shards from cache, {summary['timings']['total']:.1f} s.",
        "",
        "| verdict | shards |", "|---|---|",
        *[f"| {v} | {n} |" for v, n in c["verdicts"].items()],
        "",
        "| check | info | warn | critical |", "|---|---|---|---|",
        *[f"| {k} | {v['info']} | {v['warn']} | {v['critical']} |" for k, v in c["by_check"].items()],
        "",
        f"Report: `{_report_of(summary)}`",
    ]
    return "\n".join(lines)


def _report_of(summary: dict[str, Any]) -> str:
    """The report's path or URL (the run directory may be an fsspec URL)."""
    return f"{str(summary.get('run_dir') or '.').rstrip('/')}/report.html"


def _root_flow_run_id() -> str | None:
    """The flow run the console links to: the scheduled (parent) run when this scan is its subflow."""
    return prefect_runtime.flow_run.root_flow_run_id or prefect_runtime.flow_run.id


@flow(name="integrity-scan", log_prints=True)
def scan_flow(spec: ScanSpec) -> State:
    """Scan ``spec.source`` and write the run directory ``spec.out``; the final state says the
    verdict (see :func:`verdict_state`), its result is the summary (:func:`summary_of`)."""
    logger = get_run_logger()
    summary = pipeline.execute(spec, pipeline.ScanHooks(
        map_shards=shard_tasks(spec), map_partitions=partition_tasks,
        run_stage=submitted_stage_task if spec.runner == "dask" else run_stage_task,
        flow_run_id=_root_flow_run_id(),
        on_quarantined=lambda row: _emit_quarantined(spec, row)))
    shards = outputs.read_run_parquet(spec.run_location, "shards.parquet")
    summary["run_dir"] = spec.run_location

    create_markdown_artifact(_markdown(summary), key="integrity-scan-summary",
                             description=f"scan {spec.scan_id}: {summary['verdict']}")
    create_table_artifact(
        shards.select("shard", "verdict", pl.col("reasons").list.join("; "), "rows", "n_warn", "n_critical",
                      "sha256").head(1000).to_dicts(),
        key="integrity-shard-verdicts", description="shard verdicts (first 1000)")
    emit_event(
        event="integrity.scan.completed",
        # the verdict is a resource label so that an automation's trigger can match on it
        resource={"prefect.resource.id": f"integrity.scan.{spec.scan_id}", "prefect.resource.name": spec.source,
                  "integrity.verdict": summary["verdict"]},
        payload={"verdict": summary["verdict"], "counts": summary["counts"]["verdicts"],
                 "findings": summary["counts"]["findings"], "run_dir": spec.run_location},
    )
    logger.info("scan %s finished: %s", spec.scan_id, summary["verdict"])
    return verdict_state(summary)


def verdict_state(summary: dict[str, Any]) -> State:
    """The flow run's final state for a finished scan, carrying the summary as its result:
    ``Failed`` for a fail verdict (red in the Prefect UI, and caught by failure notifications),
    ``Completed`` named ``Warned`` or ``Passed`` otherwise."""
    v = summary["counts"]["verdicts"]
    message = (f"integrity verdict {summary['verdict']}: {v['quarantine']} quarantined, {v['unreadable']} unreadable, "
               f"{v['warn']} warn of {summary['counts']['shards']} shards; "
               f"report {_report_of(summary)}")
    if summary["verdict"] == "fail":
        return Failed(message=message, data=summary)
    return Completed(name="Warned" if summary["verdict"] == "warn" else "Passed", message=message, data=summary)


def summary_of(state: State) -> dict[str, Any]:
    """The summary a finished scan flow run returned, whatever its verdict; re-raises the
    exception of a run that could not finish."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    if not isinstance(result, dict):
        raise RuntimeError(f"the scan flow run ended {state.name}: {state.message}")
    return result
