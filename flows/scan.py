"""The scan as a Prefect flow: per-shard tasks mapped over shards, then the
corpus-level checks, the policy, quarantine and outputs.

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

import time
from pathlib import Path
from typing import Any

import polars as pl
import prefect.runtime as prefect_runtime
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.futures import wait
from prefect.states import Completed, Failed, State

from connectors import ShardRef
from integrity.engine import pipeline, progress
from integrity.engine.shard import ShardResult, scan_shard
from integrity.engine.spec import ScanSpec

#: how often the progress artifact is brought up to date while shard tasks run
ARTIFACT_EVERY_S = 5.0


@task(name="list-shards", cache_policy=NO_CACHE)
def list_task(spec: ScanSpec) -> list[ShardRef]:
    return pipeline.list_stage(spec)


@task(name="scan-shard", task_run_name="scan {ref.name}", cache_policy=NO_CACHE)
def shard_task(ref: ShardRef, spec: ScanSpec) -> dict:
    result = scan_shard(ref, spec)
    if not result.ok:
        get_run_logger().error("%s: %s", ref.name, result.error)
    return result.to_dict()


@task(name="corpus-checks", cache_policy=NO_CACHE)
def corpus_task(spec: ScanSpec, results: list[ShardResult]) -> tuple[Path, dict[str, float]]:
    return pipeline.corpus_stage(spec, results)


@task(name="policy", cache_policy=NO_CACHE)
def policy_task(spec: ScanSpec, refs: list[ShardRef], results: list[ShardResult], corpus_path: Path) -> Path:
    return pipeline.policy_stage(spec, refs, results, corpus_path)


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


@task(name="quarantine", cache_policy=NO_CACHE)
def quarantine_task(spec: ScanSpec, results: list[ShardResult], verdicts_path: Path) -> Path:
    return pipeline.quarantine_stage(spec, results, verdicts_path,
                                     on_quarantined=lambda row: _emit_quarantined(spec, row))


@task(name="outputs", cache_policy=NO_CACHE)
def output_task(spec: ScanSpec, refs: list[ShardRef], results: list[ShardResult], shards_path: Path,
                timings: dict[str, float], started_at: str, per_check: dict[str, float]) -> dict:
    return pipeline.output_stage(spec, refs, results, shards_path, timings, started_at, per_check)


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
        f"Report: `{Path(summary.get('run_dir', '')) / 'report.html'}`",
    ]
    return "\n".join(lines)


def _scan_shards(spec: ScanSpec, refs: list[ShardRef]) -> list[ShardResult]:
    """The shard tasks, with the progress artifact updated while they run: records done / total
    and an ETA, from the batches of tasks in this process (threads) or the shards that finished
    (Dask workers, in other processes)."""
    tracker, created = progress.ensure(spec.scan_id)
    tracker.start(refs)
    progress_id = create_progress_artifact(0.0, key="integrity-scan-progress",
                                           description=f"scanning {len(refs)} shards")
    futures = shard_task.map(refs, unmapped(spec))
    by_name: dict[str, ShardResult] = {}
    pending = list(futures)
    last = -1.0
    try:
        while pending:
            done, not_done = wait(pending, timeout=ARTIFACT_EVERY_S)
            for fut in done:
                res = ShardResult(**fut.result())
                by_name[res.shard] = res
                tracker.shard_done(res.shard, res.rows, res.ok)
            pending = list(not_done)
            snap = tracker.snapshot()
            if snap.fraction != last:
                update_progress_artifact(progress_id, 100.0 * snap.fraction, description=progress.format_snapshot(snap))
                last = snap.fraction
    finally:
        if created:
            progress.unregister(spec.scan_id)
    return [by_name[r.name] for r in refs]


def _root_flow_run_id() -> str | None:
    """The flow run the console links to: the scheduled (parent) run when this scan is its subflow."""
    return prefect_runtime.flow_run.root_flow_run_id or prefect_runtime.flow_run.id


@flow(name="integrity-scan", log_prints=True)
def scan_flow(spec: ScanSpec) -> State:
    """Scan ``spec.source`` and write the run directory ``spec.out``; the final state says the
    verdict (see :func:`verdict_state`), its result is the summary (:func:`summary_of`)."""
    logger = get_run_logger()
    started_at = pipeline.now_iso()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    refs = list_task(spec)
    pipeline.record_start(spec, flow_run_id=_root_flow_run_id())
    timings["list"] = time.perf_counter() - t
    logger.info("scan %s: %d shards in %s", spec.scan_id, len(refs), spec.source)

    t = time.perf_counter()
    results = _scan_shards(spec, refs)
    pipeline.require_mapped(results)
    timings["shards"] = time.perf_counter() - t

    t = time.perf_counter()
    corpus_path, per_check = corpus_task(spec, results)
    timings["corpus"] = time.perf_counter() - t
    t = time.perf_counter()
    verdicts_path = policy_task(spec, refs, results, corpus_path)
    timings["policy"] = time.perf_counter() - t
    t = time.perf_counter()
    shards_path = quarantine_task(spec, results, verdicts_path)
    timings["quarantine"] = time.perf_counter() - t
    summary = output_task(spec, refs, results, shards_path, timings, started_at, per_check)
    shards = pl.read_parquet(shards_path)
    summary["run_dir"] = str(spec.out)

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
                 "findings": summary["counts"]["findings"], "run_dir": str(spec.out)},
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
               f"report {Path(summary.get('run_dir') or '.') / 'report.html'}")
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
