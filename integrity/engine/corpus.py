"""Stage 3: corpus-level passes over the compact features of every shard."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl
import pyarrow.parquet as pq

from connectors.atomic import atomic_output
from connectors.schema import SCAN_FINDING_COLUMNS
from integrity.checks.base import CorpusContext, MapPartitions, serial_map
from integrity.engine import evidence, outputs
from integrity.engine.memory import release_free_memory
from integrity.engine.redact import KEY_COLUMNS, mask_frame
from integrity.engine.shard import ShardResult, rows_into_detail
from integrity.engine.spec import ScanSpec, corpus_order

log = logging.getLogger(__name__)

WORK = ".work"  # the run directory's intermediate files (as integrity.engine.pipeline)
CORPUS_COVERAGE = "corpus_coverage.json"
#: corpus findings made ready for findings.parquet this many rows at a time
FINISH_CHUNK = 100_000
#: rows copied at a time when the passes' findings are concatenated (:func:`write_concat`)
CONCAT_BATCH_ROWS = 25_000
CORPUS_SPILL = "corpus"  # .work/corpus/NNN.parquet: each corpus pass's findings, as it ends


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
        shard_uri={r.shard: r.uri for r in results},
        feature_files={name: feature_files(name, results) for name in corpus_order(spec.checks)},
        mapping=spec.mapping, map_partitions=map_partitions or serial_map, work_dir=spec.work_url,
        storage_options=spec.storage_options, mask_details=mask_frame,
    )


def run_corpus_checks(spec: ScanSpec, results: list[ShardResult], dest: Path,
                      map_partitions: MapPartitions | None = None) -> tuple[dict[str, float], dict[str, dict]]:
    """Run the corpus pass of every corpus-level check and write their findings, secrets masked,
    to ``dest`` (Parquet); returns seconds per check and what each pass adds to its coverage
    (``Check.corpus_coverage``).

    Each pass's findings are spilled to ``.work/corpus/`` as soon as it returns and later passes
    read them lazily (``CorpusContext.earlier_findings``); ``dest`` is their streamed
    concatenation. The flow process never holds more than one pass's findings, whatever the
    corpus size, and of a pass that yields them in parts
    (:meth:`integrity.checks.base.Check.corpus_parts`), one part. Checks with thumbnails
    (:func:`integrity.engine.evidence.attach_thumbnails`) keep theirs until the images are
    gathered in one pass, then are written again."""
    ctx = corpus_context(spec, results, map_partitions)
    spill = Path(spec.out) / WORK / CORPUS_SPILL
    spill.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    thumbs: dict[str, tuple[int, pl.DataFrame]] = {}
    spilled: dict[str, tuple[Path, str]] = {}
    timings: dict[str, float] = {}
    notes: dict[str, dict] = {}
    for i, name in enumerate(corpus_order(spec.checks)):
        t0 = time.perf_counter()
        features = features_of(name, results)
        check = spec.check_instance(name)
        # labelled with the check's own name, as its per-shard findings are (a plug-in named
        # by import path in the policy still writes findings under its class's name)
        label = check.name or name
        path = spill / f"{i:03d}.parquet"
        parts = check.corpus_parts(features, ctx) if features is not None else []
        thumbnails = evidence.thumbnail_count(check)
        if thumbnails:  # checks with thumbnails keep their findings whole until the images are gathered
            parts = [part for part in parts if part.height]
        # a check masks its own details only with the engine's masking in hand
        write_finished(parts, label, path, details_masked=check.masks_own_details and ctx.mask_details is not None)
        height = pq.read_metadata(path).num_rows
        if height:
            files.append(path)
            spilled[name] = (path, label)
            if thumbnails:
                thumbs[name] = (thumbnails, pl.concat(parts, how="diagonal_relaxed"))
            ctx.earlier_findings[name] = pl.scan_parquet(path)  # without thumbnails
        else:
            path.unlink(missing_ok=True)
        del parts
        release_free_memory()  # the pass's arrays are gone: its free pages go back, not into the next pass's peak
        timings[name] = time.perf_counter() - t0
        if check.corpus_coverage:
            notes[name] = check.corpus_coverage
        log.info("corpus pass %s: %d findings in %.1fs", name, height, timings[name])
    if thumbs:
        t0 = time.perf_counter()
        for name, frame in evidence.attach_thumbnails(thumbs, spec.mapping).items():
            path, label = spilled[name]
            write_finished(frame, label, path)
        log.info("thumbnails of the corpus findings in %.1fs", time.perf_counter() - t0)
    write_concat(files, dest)
    return timings, notes


def write_finished(found: pl.DataFrame | Iterable[pl.DataFrame], check: str, path: Path,
                   chunk: int = FINISH_CHUNK, details_masked: bool = False) -> Path:
    """A pass's findings (one frame, or parts as
    :meth:`integrity.checks.base.Check.corpus_parts` yields them) in the columns of
    ``findings.parquet`` (:func:`finish_findings`), secrets masked before they reach the disk (as
    the shard cache's findings are), written ``chunk`` rows at a time: the details are rewritten
    (row moved in, secrets masked) one slice after the other, never for the whole corpus's
    findings at once. ``details_masked``: the check masked its details itself
    (``Check.masks_own_details``); the other text columns are still masked here."""
    parts = [found] if isinstance(found, pl.DataFrame) else found
    skip = KEY_COLUMNS | {"detail"} if details_masked else KEY_COLUMNS

    def pieces() -> Iterator[pl.DataFrame]:
        for part in parts:
            # what the pass freed to make this part (its arrays, once it returned) goes back first
            release_free_memory()
            for piece in part.iter_slices(chunk):
                yield mask_frame(finish_findings(piece, check), skip=skip)

    # lz4: a spill of the run's work directory, read back once or twice (findings.parquet itself is zstd)
    return outputs.write_findings_parts(pieces(), path, compression="lz4")


def write_concat(files: list[Path], dest: Path) -> Path:
    """The findings files ``files`` streamed, in order, into ``dest`` (atomically; an empty
    table of the findings columns when there are none)."""
    if not files:
        return outputs.write_parquet(pl.DataFrame(schema=SCAN_FINDING_COLUMNS), dest)
    with atomic_output(dest) as tmp:
        if len(files) == 1:  # one pass with findings: its file as it is (decoding and encoding
            shutil.copyfile(files[0], tmp)  # 530 k findings again cost 1.5 s for the same rows)
        else:  # CONCAT_BATCH_ROWS at a time (a sink of the concatenated scans held ~600 MB at 2.6 M findings)
            with pq.ParquetWriter(tmp, pq.read_schema(files[0]), compression="lz4") as writer:
                for f in files:
                    for batch in pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=CONCAT_BATCH_ROWS,
                                                                                  use_threads=False):
                        writer.write_batch(batch)
    return dest


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
            release_free_memory()
