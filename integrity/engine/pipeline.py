"""The stages of a scan as plain functions that pass paths and small dicts.

:func:`execute` runs them in order, given the orchestrator's :class:`ScanHooks` (how
shards are mapped, how a stage runs); :func:`run_scan` supplies threads, in-process,
``flows/scan.py`` Prefect's task mapping, a task per stage, artifacts and events.
"""
from __future__ import annotations

import functools
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import polars as pl

from connectors import ShardRef, list_shards
from connectors import storage
from integrity.checks.base import MapPartitions, serial_map
from integrity.engine import quarantine as quarantine_mod
from integrity.engine import evidence, outputs, verdict
from integrity.engine import progress as progress_mod
from integrity.engine.corpus import CORPUS_COVERAGE, after_verdicts, coverage, run_corpus_checks, shard_findings
from integrity.engine.memory import release_free_memory
from integrity.engine.shard import ShardResult, scan_shard
from integrity.engine.spec import ScanSpec
from integrity.ledger import Ledger, findings_key

log = logging.getLogger(__name__)
WORK = ".work"  # run_dir subfolder for intermediate files


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def list_stage(spec: ScanSpec) -> list[ShardRef]:
    """Shards of the source (raises ``SourceError`` with a clear message when none)."""
    spec.out.mkdir(parents=True, exist_ok=True)
    (spec.out / WORK).mkdir(exist_ok=True)
    if spec.out_url:
        require_writable(spec)
    # the scan's own directories never count as shards, even when they lie inside the source
    own = [spec.state_dir, spec.policy.quarantine_dir().absolute(), spec.out.absolute()]
    return list_shards(spec.source, storage_options=spec.storage_options, exclude=[str(d) for d in own])


def require_writable(spec: ScanSpec) -> None:
    """Fail before any shard is read when the run directory's URL cannot be written (no such
    bucket, no credentials), rather than after the shard stage."""
    fs, work = storage.get_fs(spec.work_url)
    probe = storage.join(work, ".probe")
    try:
        with fs.open(probe, "wb") as f:
            f.write(b"")
        fs.rm(probe)
    except Exception as e:  # the backends raise their own kinds (botocore, aiohttp, ...)
        raise storage.StorageError(spec.out_url or "", f"the run directory cannot be written ({type(e).__name__}: {e}); "
                                   "check that the bucket exists and that the credentials (e.g. AWS_ACCESS_KEY_ID, "
                                   "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) allow writing there") from e


def record_start(spec: ScanSpec, flow_run_id: str | None = None) -> None:
    """The scan's start in the ledger, with its corpus (and the Prefect flow run that runs it)."""
    Ledger(spec.state_dir).record_scan_start(scan_id=spec.scan_id, source=spec.source, policy=spec.policy.source,
                                             policy_sha256=spec.policy.sha256, run_dir=spec.run_location,
                                             corpus=spec.corpus, flow_run_id=flow_run_id)


def require_mapped(results: list[ShardResult]) -> None:
    """Raise :class:`ColumnMappingError` ("could not run") when the column mapping matches no
    shard: no shard was read and at least one lacked a mapped column. A mapping that fits some
    shards leaves the others unreadable, as any bad shard."""
    if not results or any(r.ok for r in results):
        return
    misfits = [r for r in results if r.error_kind == "mapping"]
    if not misfits:
        return
    columns = sorted({c for r in misfits for c in r.source_columns})
    first = misfits[0].error or ""
    raise ColumnMappingError(
        f"the column mapping matches none of the {len(results)} shard(s): {first}"
        + (f" (columns in the shards: {', '.join(map(repr, columns))})" if columns else ""))


class ColumnMappingError(ValueError):
    """The column mapping fits no shard of the source: the scan could not run (gate exit 3)."""


def corpus_stage(spec: ScanSpec, results: list[ShardResult],
                 map_partitions: MapPartitions | None = None) -> tuple[Path, dict[str, float]]:
    """Corpus-level checks; their findings go to ``.work/corpus_findings.parquet``. Their
    partitioned steps run through ``map_partitions`` (the orchestrator's workers)."""
    path = spec.out / WORK / "corpus_findings.parquet"
    # details may quote record text: secrets masked
    timings, notes = run_corpus_checks(spec, results, path, map_partitions)
    # read back by coverage() when summary.json is written (a later stage, maybe another process)
    outputs.write_json(spec.out / WORK / CORPUS_COVERAGE, notes)
    return path, timings


def all_findings(spec: ScanSpec, results: list[ShardResult], corpus_path: Path) -> pl.LazyFrame:
    """Per-shard and corpus findings together, with the policy's severities."""
    frames = [shard_findings(results), pl.scan_parquet(corpus_path)]
    merged = pl.concat(frames, how="diagonal_relaxed")
    return verdict.assign_severity(merged, spec.policy, spec.checks)


def policy_stage(spec: ScanSpec, refs: list[ShardRef], results: list[ShardResult], corpus_path: Path) -> Path:
    """Writes ``findings.parquet``, ``examples.parquet`` (before quarantine moves any
    shard away) and the shard verdicts (``.work/verdicts.parquet``, returned)."""
    findings_path = outputs.write_findings(all_findings(spec, results, corpus_path), spec.out)
    release_free_memory()
    examples = evidence.collect_examples(spec, pl.scan_parquet(findings_path), results, {r.name: r for r in refs})
    outputs.write_parquet(examples, spec.out / "examples.parquet")
    counts = verdict.shard_counts(pl.scan_parquet(findings_path))
    ledger = Ledger(spec.state_dir)
    shards = verdict.decide(results, counts, spec.policy,
                            lambda sha, reasons: ledger.release_for(sha, findings_key(reasons), spec.corpus))
    path = spec.out / WORK / "verdicts.parquet"
    outputs.write_parquet(shards, path)
    return path


def quarantine_stage(spec: ScanSpec, results: list[ShardResult], verdicts_path: Path,
                     on_quarantined: Callable[[dict], None] | None = None) -> Path:
    """Quarantine every shard with that verdict (crash-safe; see integrity.engine.quarantine),
    then let corpus checks record the approved shards (history indexes).

    Unfinished actions of earlier, interrupted scans are completed first.
    Returns the path of the shards table with its ``quarantine`` column.
    """
    shards = pl.read_parquet(verdicts_path)
    ledger = Ledger(spec.state_dir)
    quarantine_mod.resume_pending(ledger, storage_options=spec.storage_options)
    status: dict[str, str | None] = {}
    mode = spec.mode
    for row in shards.filter(pl.col("verdict") == "quarantine").iter_rows(named=True):
        if mode == "off":
            status[row["shard"]] = "not moved (quarantine mode off)"
            continue
        try:
            action = quarantine_mod.quarantine(
                ledger, scan_id=spec.scan_id, shard=row["shard"], uri=row["uri"], sha256=row["sha256"],
                mode=mode, quarantine_root=str(spec.policy.quarantine_dir().absolute()),
                storage_options=spec.storage_options, corpus=spec.corpus)
            state = getattr(action, "state", "done")
            dest = getattr(action, "destination", None)
            status[row["shard"]] = f"{mode} {state}" + (f" → {dest}" if dest and mode != "mark" else "")
            log.info("quarantined %s (%s %s)%s", row["shard"], mode, state,
                        f" → {dest}" if dest and mode != "mark" else " (ledger only; the file stays)")
            if on_quarantined is not None:
                on_quarantined({**row, "mode": mode, "state": state, "destination": dest})
        except Exception as e:  # reported per shard; the scan still completes
            log.error("quarantine of %s failed: %s", row["uri"], e)
            status[row["shard"]] = f"failed: {e}"
    approved = shards.filter(pl.col("verdict").is_in(["pass", "warn"]))["shard"].to_list()
    after_verdicts(spec, results, approved)
    path = spec.out / WORK / "shards.parquet"
    outputs.write_parquet(shards.with_columns(
        quarantine=pl.col("shard").replace_strict(status, default=None, return_dtype=pl.Utf8)), path)
    return path


def check_seconds(results: list[ShardResult], corpus_seconds: dict[str, float]) -> dict[str, float]:
    """Seconds each check spent in this scan: its per-shard passes over every shard read (a
    cached shard costs nothing) plus its corpus pass; slowest first."""
    total: dict[str, float] = {}
    for r in results:
        for name, sec in (r.check_seconds or {}).items():
            total[name] = total.get(name, 0.0) + float(sec)
    for name, sec in corpus_seconds.items():
        total[name] = total.get(name, 0.0) + float(sec)
    return {k: round(v, 3) for k, v in sorted(total.items(), key=lambda kv: -kv[1])}


def output_stage(spec: ScanSpec, refs: list[ShardRef], results: list[ShardResult], shards_path: Path,
                 timings: dict[str, float], started_at: str, corpus_check_seconds: dict[str, float] | None = None,
                 write_html: bool = True) -> dict:
    """Writes shards.parquet, examples.parquet, summary.json and report.html; returns the summary."""
    t0 = time.perf_counter()
    shards = pl.read_parquet(shards_path)
    outputs.write_parquet(shards, spec.out / "shards.parquet")
    findings_path = spec.out / "findings.parquet"
    verdicts = {v: 0 for v in ("pass", "warn", "quarantine", "unreadable")}
    for v, n in shards.group_by("verdict").len().iter_rows():
        verdicts[v] = n
    by_check = outputs.counts_by_check(findings_path)
    summary = {
        "scan_id": spec.scan_id,
        "source": spec.source,
        "policy": {"source": spec.policy.source, "sha256": spec.policy.sha256},
        "started_at": started_at,
        "finished_at": None,
        "runner": spec.runner,
        "checks": spec.checks,
        "column_mapping": spec.mapping.to_dict(),
        "quarantine_mode": spec.mode,
        "corpus": spec.corpus,
        "shared_history": spec.shared_history,
        "state_dir": str(spec.state_dir),
        "timings": dict(timings),
        "check_seconds": check_seconds(results, corpus_check_seconds or {}),
        "corpus_check_seconds": corpus_check_seconds or {},
        "counts": {
            "shards": shards.height,
            "rows": int(shards["rows"].sum() or 0),
            "bytes": int(shards["bytes"].sum() or 0),
            "findings": sum(sum(v.values()) for v in by_check.values()),
            "by_check": by_check,
            "verdicts": verdicts,
            # records embedded / records, for every check that embeds or samples them
            "coverage": coverage(spec, results),
        },
        "cached_shards": int(shards["cached"].sum() or 0),
        "unreadable": [{"shard": r["shard"], "error": r["error"]} for r in
                       shards.filter(pl.col("verdict") == "unreadable").select("shard", "error").iter_rows(named=True)],
        "verdict": verdict.overall_verdict(shards),
    }
    summary["timings"]["report"] = time.perf_counter() - t0
    summary["finished_at"] = now_iso()
    summary["timings"]["total"] = sum(v for k, v in summary["timings"].items() if k in
                                      ("list", "shards", "corpus", "policy", "quarantine", "report"))
    outputs.write_json(spec.out / "summary.json", summary)
    if write_html:
        from integrity.report.render import write_report
        t1 = time.perf_counter()
        release_free_memory()
        write_report(spec.out)
        summary["timings"]["report"] += time.perf_counter() - t1
        summary["timings"]["total"] += time.perf_counter() - t1
        outputs.write_json(spec.out / "summary.json", summary)
    ledger = Ledger(spec.state_dir)
    ledger.record_verdicts(spec.scan_id, shards.select("shard", "uri", "sha256", "verdict", "reasons").to_dicts())
    ledger.record_scan_end(spec.scan_id, verdict=summary["verdict"], counts=summary["counts"])
    publish(spec)  # here, where the outputs were written (a worker, under Dask)
    return summary


#: runs ``scan`` (one shard) over every ref, in parallel as it likes, and yields the results as they finish
MapShards = Callable[[Callable[[ShardRef], ShardResult], list[ShardRef]], Iterable[ShardResult]]
T = TypeVar("T")


def run_inline(name: str, stage: Callable[..., T], *args: Any) -> T:
    """Run a stage as a plain call (``name`` is for orchestrators that label their tasks)."""
    return stage(*args)


def thread_map(workers: int) -> MapShards:
    """A :data:`MapShards` on a pool of ``workers`` threads (results in the order of the refs)."""
    def map_shards(scan: Callable[[ShardRef], ShardResult], refs: list[ShardRef]) -> Iterator[ShardResult]:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            yield from pool.map(scan, refs)
    return map_shards


@dataclass
class ScanHooks:
    """What an orchestrator supplies to :func:`execute`: how shards are mapped and stages
    run, and where per-shard progress and quarantines go. The engine keeps the order of the
    stages; the orchestrator only launches work (as datatrove's executors do)."""

    map_shards: MapShards
    #: runs the partitioned steps of the corpus passes (band-join partitions, ...) on the same
    #: workers as the shards; in process by default
    map_partitions: MapPartitions = serial_map
    #: ``run_stage(name, stage, *args)`` runs one stage (``list``, ``corpus``, ``policy``,
    #: ``quarantine``, ``outputs``) and returns its result; Prefect runs each as a task
    run_stage: Callable[..., Any] = run_inline
    flow_run_id: str | None = None  # recorded with the scan in the ledger
    on_shard: Callable[[ShardResult], None] | None = None  # each shard's result, as it comes
    on_quarantined: Callable[[dict], None] | None = None  # each quarantined shard's verdict row


def execute(spec: ScanSpec, hooks: ScanHooks) -> dict:
    """Run the stages of a scan in order and return ``summary.json``'s content:
    list, shards, corpus, policy, quarantine, outputs, each timed."""
    run = hooks.run_stage
    started_at = now_iso()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    refs = run("list", list_stage, spec)
    record_start(spec, flow_run_id=hooks.flow_run_id)
    timings["list"] = time.perf_counter() - t
    t = time.perf_counter()
    results = _scan_shards(spec, refs, hooks)
    require_mapped(results)
    timings["shards"] = time.perf_counter() - t
    t = time.perf_counter()
    corpus_path, per_check = run("corpus", corpus_stage, spec, results, hooks.map_partitions)
    timings["corpus"] = time.perf_counter() - t
    t = time.perf_counter()
    verdicts_path = run("policy", policy_stage, spec, refs, results, corpus_path)
    timings["policy"] = time.perf_counter() - t
    t = time.perf_counter()
    shards_path = run("quarantine", quarantine_stage, spec, results, verdicts_path, hooks.on_quarantined)
    timings["quarantine"] = time.perf_counter() - t
    return run("outputs", output_stage, spec, refs, results, shards_path, timings, started_at, per_check)


def publish(spec: ScanSpec) -> None:
    """A run directory on a URL (``spec.out_url``) receives the staged outputs (the
    intermediate ``.work`` stays behind) and the staging directory is removed; a local run
    directory is already in place."""
    if not spec.out_url:
        return
    storage.upload_dir(spec.out, spec.out_url, skip=(WORK,))
    fs, work = storage.get_fs(spec.work_url)
    if fs.exists(work):
        fs.rm(work, recursive=True)
    shutil.rmtree(spec.out, ignore_errors=True)


def _scan_shards(spec: ScanSpec, refs: list[ShardRef], hooks: ScanHooks) -> list[ShardResult]:
    """Every shard through ``hooks.map_shards``, with records done / total and an ETA kept
    batch by batch (:mod:`integrity.engine.progress`); the results in the order of ``refs``."""
    tracker, created = progress_mod.ensure(spec.scan_id)
    tracker.start(refs)
    by_name: dict[str, ShardResult] = {}
    try:
        for res in hooks.map_shards(functools.partial(scan_shard, spec=spec), refs):
            by_name[res.shard] = res
            tracker.shard_done(res.shard, res.rows, res.ok)
            if hooks.on_shard is not None:
                hooks.on_shard(res)
    finally:
        if created:
            progress_mod.unregister(spec.scan_id)
    return [by_name[r.name] for r in refs]


def run_scan(spec: ScanSpec, workers: int = 2,
             progress: Callable[[ShardResult], None] | None = None,
             map_shards: MapShards | None = None) -> dict:
    """Run a whole scan in this process (no Prefect; shards on ``workers`` threads unless
    ``map_shards`` says otherwise) and return ``summary.json``'s content."""
    return execute(spec, ScanHooks(map_shards=map_shards or thread_map(workers), on_shard=progress))
