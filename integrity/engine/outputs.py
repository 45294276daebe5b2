"""Stage 6: the run directory of the output contract (DESIGN.md).

``findings.parquet``, ``shards.parquet``, ``summary.json`` and ``report.html``, each
written atomically; ``examples.parquet`` holds what :mod:`integrity.engine.evidence`
gathers (example records with their masked excerpts).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from connectors.atomic import OutputError, atomic_output  # noqa: F401  (OutputError: raised through here)
from connectors.schema import SCAN_FINDING_COLUMNS


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    """``frame`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        frame.write_parquet(tmp)
    return path


def write_findings(findings: pl.LazyFrame, run_dir: Path) -> Path:
    """Stream every finding into ``findings.parquet`` (columns and types of the contract)."""
    path = run_dir / "findings.parquet"
    with atomic_output(path) as tmp:
        findings.select(
            [pl.col(c).cast(t) for c, t in SCAN_FINDING_COLUMNS.items()]
        ).sort(["shard", "check", "record_id"], nulls_last=True).sink_parquet(tmp)
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
