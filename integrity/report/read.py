"""Reading a run dir's files for the report, tolerating old and partial run dirs.

Missing columns come back as nulls and present ones are cast to the report's
types; a missing file gives an empty table and a note the report shows.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from connectors.schema import EXAMPLE_COLUMNS, SCAN_FINDING_COLUMNS
from integrity.report.format import SEVERITY_RANK, fmt_score, highlight_segments, pretty_detail

MAX_EXAMPLES_PER_CHECK = 12

SHARD_COLUMNS: dict[str, pl.DataType] = {
    "shard": pl.Utf8,
    "uri": pl.Utf8,
    "sha256": pl.Utf8,
    "rows": pl.Int64,
    "bytes": pl.Int64,
    "verdict": pl.Utf8,
    "reasons": pl.List(pl.Utf8),
    "format": pl.Utf8,
    "error": pl.Utf8,
    "cached": pl.Boolean,
    "seconds": pl.Float64,
    "n_info": pl.Int64,
    "n_warn": pl.Int64,
    "n_critical": pl.Int64,
    "records_flagged": pl.Int64,
    "quarantine": pl.Utf8,
}


def _conform(lf: pl.LazyFrame, columns: dict[str, pl.DataType]) -> pl.LazyFrame:
    """Add missing columns as nulls and cast present ones, tolerating old run dirs."""
    schema = lf.collect_schema()
    exprs = []
    for name, dtype in columns.items():
        if name not in schema:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif isinstance(dtype, pl.List):
            if isinstance(schema[name], pl.List):
                exprs.append(pl.col(name).cast(dtype, strict=False))
            else:
                exprs.append(
                    pl.when(pl.col(name).is_null())
                    .then(pl.lit(None, dtype=dtype))
                    .otherwise(pl.concat_list([pl.col(name).cast(pl.Utf8, strict=False)]))
                    .alias(name)
                )
        elif schema[name] != dtype:
            exprs.append(pl.col(name).cast(dtype, strict=False))
    return lf.with_columns(exprs) if exprs else lf


def _scan(path: Path, columns: dict[str, pl.DataType]) -> pl.LazyFrame | None:
    if not path.is_file():
        return None
    return _conform(pl.scan_parquet(path), columns)


def _empty(columns: dict[str, pl.DataType]) -> pl.LazyFrame:
    return pl.DataFrame(schema=columns).lazy()


def read_summary(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    """``summary.json`` as a dict; ``{}`` (and a note) when it is missing or unusable."""
    path = run_dir / "summary.json"
    if not path.is_file():
        notes.append("summary.json is missing; figures are derived from the parquet files")
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8")) or {}
    except ValueError as exc:
        notes.append(f"summary.json could not be parsed: {exc}")
        return {}
    if not isinstance(summary, dict):
        notes.append("summary.json is not a JSON object; figures are derived from the parquet files")
        return {}
    return summary


def read_shards(run_dir: Path, notes: list[str]) -> pl.DataFrame:
    """``shards.parquet`` in the report's columns (empty, with a note, when missing)."""
    shards_lf = _scan(run_dir / "shards.parquet", SHARD_COLUMNS)
    if shards_lf is None:
        notes.append("shards.parquet is missing")
        shards_lf = _empty(SHARD_COLUMNS)
    return shards_lf.select(list(SHARD_COLUMNS)).collect()


def read_findings(run_dir: Path, notes: list[str]) -> pl.LazyFrame:
    """``findings.parquet`` in the report's columns, lazily (empty, with a note, when missing)."""
    findings_lf = _scan(run_dir / "findings.parquet", SCAN_FINDING_COLUMNS)
    if findings_lf is None:
        notes.append("findings.parquet is missing")
        findings_lf = _empty(SCAN_FINDING_COLUMNS)
    return findings_lf.select(list(SCAN_FINDING_COLUMNS)).with_columns(pl.col("check").fill_null("(unnamed)"))


def read_examples(run_dir: Path) -> tuple[bool, dict[str, list[dict]]]:
    """Whether ``examples.parquet`` exists, and its rows per check (worst first, capped)."""
    examples_lf = _scan(run_dir / "examples.parquet", EXAMPLE_COLUMNS)
    if examples_lf is None:
        return False, {}
    ex = (
        examples_lf.select(list(EXAMPLE_COLUMNS))
        .with_columns(
            _sev=pl.col("severity").replace_strict(SEVERITY_RANK, default=9, return_dtype=pl.Int32),
        )
        .sort(["check", "_sev", "score"], descending=[False, False, True], nulls_last=True)
        .group_by("check", maintain_order=True)
        .head(MAX_EXAMPLES_PER_CHECK)
        .collect()
    )
    examples_by_check: dict[str, list[dict]] = {}
    for r in ex.iter_rows(named=True):
        examples_by_check.setdefault(r["check"] or "(none)", []).append(_example(r))
    return True, examples_by_check


def _example(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "shard": r["shard"] or "",
        "record_id": r["record_id"] if r["record_id"] is not None else "(shard)",
        "severity": r["severity"] or "",
        "score": fmt_score(r["score"]),
        "field": r["field"] or "",
        "segments": highlight_segments(r["excerpt"], r["highlights"]),
        "has_excerpt": bool(r["excerpt"]),
        "detail": pretty_detail(r["detail"]),
        "representative": _representative(r),
    }


def _representative(row: dict) -> dict | None:
    """For a duplicate: the record it duplicates (shard, id, masked excerpt), shown beside it."""
    if not row.get("representative_excerpt"):
        return None
    try:
        detail = json.loads(row.get("detail") or "{}")
    except ValueError:
        detail = {}
    rid = detail.get("representative") if isinstance(detail, dict) else None
    return {"shard": row.get("representative_shard") or row.get("shard") or "",
            "record_id": "" if rid is None else str(rid),
            "segments": highlight_segments(row["representative_excerpt"], "[]")}


class FindingsByCheck:
    """Each check's findings in a Parquet file of its own (in a temporary directory, while the
    report is built), so that a section's queries read only its check's rows.

    A filter on ``check`` over ``findings.parquet`` reads every row group of the file (it is
    sorted by shard, then check): at 2.6 M findings one such query held ~500 MB, even for a check
    with a hundred findings. The split is one pass, a group of shards at a time
    (:func:`~integrity.analysis.shard_groups.shard_group_frames`), in the order of the file.
    Findings of one check only are not split: the file is that check's already."""

    def __init__(self, findings: pl.LazyFrame, where: Path):
        import pyarrow.parquet as pq

        from integrity.analysis.shard_groups import shard_group_frames

        self._schema = findings.collect_schema()
        self._paths: dict[str, Path] = {}
        self._only: tuple[str, pl.LazyFrame] | None = None
        checks = findings.select(pl.col("check").unique()).collect()["check"]
        if checks.len() == 1:
            self._only = (checks[0], findings)
            return
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for group in shard_group_frames(findings):
                for (check,), part in group.collect().partition_by("check", maintain_order=True, as_dict=True).items():
                    table = part.to_arrow()
                    if check not in writers:
                        self._paths[check] = where / f"check-{len(writers):03d}.parquet"
                        writers[check] = pq.ParquetWriter(self._paths[check], table.schema, compression="lz4")
                    writers[check].write_table(table.cast(writers[check].schema))
        finally:
            for w in writers.values():
                w.close()

    def __call__(self, check: str) -> pl.LazyFrame:
        """The findings of ``check`` (none when it has none), lazily."""
        if self._only is not None and self._only[0] == check:
            return self._only[1]
        path = self._paths.get(check)
        return pl.scan_parquet(path) if path is not None else pl.LazyFrame(schema=self._schema)
