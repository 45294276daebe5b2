"""Stage 6: the run directory of the output contract (DESIGN.md).

``findings.parquet``, ``shards.parquet``, ``summary.json`` and ``report.html``, each
written atomically; ``examples.parquet`` holds what :mod:`integrity.engine.evidence`
gathers (example records with their masked excerpts).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl
import pyarrow.parquet as pq

from connectors.atomic import OutputError, atomic_output  # noqa: F401  (OutputError: raised through here)
from connectors.schema import SCAN_FINDING_COLUMNS
from integrity.analysis.shard_groups import GROUP_ROWS, shard_groups


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    """``frame`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        frame.write_parquet(tmp)
    return path


#: ``findings.parquet`` is sorted a group of shards at a time, each group of at most this many
#: findings (a shard with more is a group of its own): the sort never holds every finding of the corpus
SORT_GROUP_ROWS = GROUP_ROWS
SORT_KEY = ["shard", "check", "record_id"]


def write_findings(findings: pl.LazyFrame, run_dir: Path, group_rows: int = SORT_GROUP_ROWS) -> Path:
    """Stream every finding into ``findings.parquet`` (columns and types of the contract), sorted
    by shard, check and record id. The findings are counted per shard, then each group of shards
    (:func:`shard_groups`) is read, sorted and appended as row groups, so memory is bounded by
    ``group_rows`` (or the largest shard's findings), not by the corpus."""
    path = run_dir / "findings.parquet"
    typed = findings.select([pl.col(c).cast(t) for c, t in SCAN_FINDING_COLUMNS.items()])
    groups = shard_groups(typed.group_by("shard").len().collect(), group_rows)
    return write_findings_parts(_sorted_parts(typed, groups), path)


#: rows of a sorted group gathered and written at a time
WRITE_SLICE_ROWS = 50_000


def _sorted_parts(typed: pl.LazyFrame, groups: list[list[str] | None]) -> Iterator[pl.DataFrame]:
    """Each group's findings, sorted, in slices of :data:`WRITE_SLICE_ROWS`. A group is read with
    the streaming engine (the inputs are filtered batch by batch, never read whole), and only its
    sort keys are sorted: the rows are gathered a slice at a time, not copied whole in order."""
    for group in groups:
        part = typed.filter(pl.col("shard").is_null() if group is None else pl.col("shard").is_in(group)).collect(
            engine="streaming")
        order = part.select(pl.arg_sort_by(SORT_KEY, nulls_last=True)).to_series()
        for i in range(0, len(order), WRITE_SLICE_ROWS):
            yield part[order[i:i + WRITE_SLICE_ROWS]]
        del part, order


def write_findings_parts(parts: Iterable[pl.DataFrame], path: Path, compression: str = "zstd") -> Path:
    """``parts`` appended in order to one Parquet file at ``path`` (atomically), one part in memory
    at a time; the empty table of the findings columns when every part is empty."""
    writer: pq.ParquetWriter | None = None
    with atomic_output(path) as tmp:
        try:
            for part in parts:
                if part.height == 0:
                    continue
                table = part.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression=compression)
                writer.write_table(table.cast(writer.schema))
                del part, table
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no finding at all: the empty table of the contract's columns
            pl.DataFrame(schema=SCAN_FINDING_COLUMNS).write_parquet(tmp)
    return path


def read_run_parquet(location: str | Path, name: str, columns: list[str] | None = None) -> pl.DataFrame:
    """The table ``name`` of a finished run directory, local or on an fsspec URL (``--out s3://...``)."""
    from connectors.storage import get_fs, join

    if "://" not in str(location):
        return pl.read_parquet(Path(location) / name, columns=columns)
    fs, root = get_fs(str(location))
    with fs.open(join(root, name), "rb") as f:
        return pl.read_parquet(f, columns=columns)


def write_json(path: Path, obj: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def counts_by_check(findings_path: Path) -> dict[str, dict[str, int]]:
    df = pl.scan_parquet(findings_path).group_by(["check", "severity"]).len().collect()
    out: dict[str, dict[str, int]] = {}
    for row in df.iter_rows(named=True):
        out.setdefault(row["check"], {"info": 0, "warn": 0, "critical": 0})[row["severity"]] = row["len"]
    return dict(sorted(out.items()))
