"""Stage 3: corpus-level passes over the compact features of every shard."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import polars as pl

from connectors.schema import SCAN_FINDING_COLUMNS
from integrity.checks.base import CorpusContext, MapPartitions, serial_map
from integrity.engine import evidence
from integrity.engine.shard import ShardResult, rows_into_detail
from integrity.engine.spec import ScanSpec, corpus_order

log = logging.getLogger(__name__)

WORK = ".work"  # the run directory's intermediate files (as integrity.engine.pipeline)
CORPUS_COVERAGE = "corpus_coverage.json"


def shard_findings(results: list[ShardResult]) -> pl.LazyFrame:
    """Every shard's per-shard findings as one lazy frame with a ``shard`` column."""
    frames = [
        pl.scan_parquet(r.findings_path()).with_columns(shard=pl.lit(r.shard))
        for r in results if r.ok and r.findings_path() and r.findings_path().exists()
    ]
    if not frames:
        return pl.LazyFrame(schema=SCAN_FINDING_COLUMNS)
    return pl.concat(frames, how="diagonal_relaxed").select(list(SCAN_FINDING_COLUMNS))


def feature_files(check: str, results: list[ShardResult]) -> list[tuple[str, int, Path]]:
    """(shard, shard_index, path) of one check's features in every readable shard; the
    index is the shard's position in the scan, which decides which duplicate is kept."""
    out = []
    for i, r in enumerate(results):
        path = r.features_path(check) if r.ok else None
        if path is not None:
            out.append((r.shard, i, path))
    return out


def features_of(check: str, results: list[ShardResult]) -> pl.LazyFrame | None:
    """One check's features over all readable shards, with ``shard`` and ``shard_index``."""
    frames = [pl.scan_parquet(path).with_columns(shard=pl.lit(shard), shard_index=pl.lit(i, dtype=pl.Int32))
              for shard, i, path in feature_files(check, results)]
    return pl.concat(frames, how="vertical_relaxed") if frames else None


def corpus_context(spec: ScanSpec, results: list[ShardResult],
                   map_partitions: MapPartitions | None = None) -> CorpusContext:
    """What the corpus passes read; ``map_partitions`` runs their partitioned steps (in process
    unless the orchestrator supplies its own, e.g. tasks on Dask workers)."""
    return CorpusContext(
        run_dir=spec.out, state_dir=spec.history_dir, shards=[r.shard for r in results],
        shard_findings=shard_findings(results),
        reference=Path(spec.reference) if spec.reference else None,
        shard_sha256={r.shard: r.sha256 for r in results if r.sha256}, scan_id=spec.scan_id,
        feature_files={name: feature_files(name, results) for name in corpus_order(spec.checks)},
        mapping=spec.mapping, map_partitions=map_partitions or serial_map, work_dir=spec.work_url,
        storage_options=spec.storage_options,
    )


def run_corpus_checks(spec: ScanSpec, results: list[ShardResult], map_partitions: MapPartitions | None = None
                      ) -> tuple[pl.DataFrame, dict[str, float], dict[str, dict]]:
    """Run the corpus pass of every corpus-level check, then gather the thumbnails their findings
    name (:func:`integrity.engine.evidence.attach_thumbnails`); returns findings, seconds per
    check, and what each pass adds to its coverage (``Check.corpus_coverage``)."""
    ctx = corpus_context(spec, results, map_partitions)
    raw: dict[str, tuple[int, pl.DataFrame]] = {}
    labels: dict[str, str] = {}
    timings: dict[str, float] = {}
    notes: dict[str, dict] = {}
    for name in corpus_order(spec.checks):
        t0 = time.perf_counter()
        features = features_of(name, results)
        check = spec.check_instance(name)
        found = check.corpus_pass(features, ctx) if features is not None else None
        if found is not None and found.height:
            # labelled with the check's own name, as its per-shard findings are (a plug-in named
            # by import path in the policy still writes findings under its class's name)
            labels[name] = check.name or name
            raw[name] = (evidence.thumbnail_count(check), found)
            ctx.earlier_findings[name] = finish_findings(found, labels[name])  # without thumbnails
        timings[name] = time.perf_counter() - t0
        if check.corpus_coverage:
            notes[name] = check.corpus_coverage
        log.info("corpus pass %s: %d findings in %.1fs", name, 0 if found is None else found.height, timings[name])
    t0 = time.perf_counter()
    shown = evidence.attach_thumbnails(raw, spec.mapping)
    if raw:
        log.info("thumbnails of the corpus findings in %.1fs", time.perf_counter() - t0)
    out = [finish_findings(frame, labels[name]) for name, frame in shown.items()]
    frame = pl.concat(out) if out else pl.DataFrame(schema=SCAN_FINDING_COLUMNS)
    return frame, timings, notes


def finish_findings(found: pl.DataFrame, check: str) -> pl.DataFrame:
    """A corpus pass's findings in the columns of ``findings.parquet``: the ``row`` column moved
    into ``detail.row`` (record ids may repeat in a shard: the row tells them apart), a null
    severity where the check set none, the check's name; image locations are dropped."""
    found = rows_into_detail(found)
    if "severity" not in found.columns:
        found = found.with_columns(severity=pl.lit(None, dtype=pl.Utf8))
    return found.with_columns(check=pl.lit(check)).select(
        [pl.col(c).cast(t) for c, t in SCAN_FINDING_COLUMNS.items()])


def coverage(spec: ScanSpec, results: list[ShardResult]) -> dict[str, dict]:
    """Per check that embeds (or samples) records: how many of its records it embedded
    (``Check.coverage``), for ``summary.json``'s ``counts.coverage`` and the report."""
    from integrity.checks.base import Check

    out: dict[str, dict] = {}
    path = Path(spec.out) / WORK / CORPUS_COVERAGE  # what the corpus passes added (pipeline.corpus_stage)
    notes = json.loads(path.read_text()) if path.exists() else {}
    for name in spec.checks:
        check = spec.check_instance(name)
        if type(check).coverage is Check.coverage:
            continue
        features = features_of(name, results)
        got = check.coverage(features) if features is not None else None
        if got:
            out[name] = {**got, **notes.get(name, {})}
    return out


def after_verdicts(spec: ScanSpec, results: list[ShardResult], approved: list[str]) -> None:
    """Let every corpus-level check record what was approved (e.g. history indexes)."""
    ctx = corpus_context(spec, results)
    for name in corpus_order(spec.checks):
        features = features_of(name, results)
        if features is not None:
            spec.check_instance(name).after_verdicts(features, approved, ctx)
