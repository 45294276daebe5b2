"""Stage 6: the run directory of the output contract (DESIGN.md).

``findings.parquet``, ``shards.parquet``, ``summary.json`` and ``report.html``,
plus ``examples.parquet``: a few example records per check with an excerpt of
the evidence (secrets masked) for the report.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from connectors import ShardReader, ShardRef
from connectors.errors import ShardReadError
from integrity.engine.shard import ShardResult
from integrity.engine.spec import ScanSpec
from integrity.redact import mask_secrets
from integrity.schema import RECORD_ID, ROW, TEXT_FIELDS

FINDINGS_ORDER = ["shard", "record_id", "check", "severity", "score", "detail"]
EXAMPLES_SCHEMA = {"shard": pl.Utf8, "record_id": pl.Utf8, "check": pl.Utf8, "severity": pl.Utf8,
                   "score": pl.Float64, "field": pl.Utf8, "excerpt": pl.Utf8, "highlights": pl.Utf8,
                   "detail": pl.Utf8}
MAX_EXAMPLE_SHARDS = 8  # shards re-read to fetch example texts, at most


def write_findings(findings: pl.LazyFrame, run_dir: Path) -> Path:
    """Stream every finding into ``findings.parquet`` (columns and types of the contract)."""
    path = run_dir / "findings.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    findings.select(
        pl.col("shard").cast(pl.Utf8), pl.col("record_id").cast(pl.Utf8), pl.col("check").cast(pl.Utf8),
        pl.col("severity").cast(pl.Utf8), pl.col("score").cast(pl.Float64), pl.col("detail").cast(pl.Utf8),
    ).sort(["shard", "check", "record_id"], nulls_last=True).sink_parquet(tmp)
    os.replace(tmp, path)
    return path


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def _pick_examples(findings: pl.LazyFrame, k: int) -> pl.DataFrame:
    """Up to ``k`` findings per check, worst first, from as few shards as possible."""
    rank = {"critical": 0, "warn": 1, "info": 2}
    return (
        findings.filter(pl.col("record_id").is_not_null())
        .with_columns(sev_rank=pl.col("severity").replace_strict(rank, default=3, return_dtype=pl.Int8),
                      per_shard=pl.len().over(["check", "shard"]))
        .sort(["check", "sev_rank", "per_shard", "score"], descending=[False, False, True, True])
        .group_by("check", maintain_order=True).head(k)
        .drop("sev_rank", "per_shard")
        .collect()
    )


def _spans(detail: dict) -> list[dict]:
    matches = detail.get("matches") or detail.get("spans") or []
    if not matches and {"start", "end"} <= set(detail):
        matches = [detail]
    return [m for m in matches if isinstance(m, dict) and "start" in m and "end" in m]


def excerpt_of(record: dict, detail: dict, width: int) -> tuple[str, str, list[list[int]]]:
    """(field, excerpt, highlight spans) for one record; spans marked ``redact``
    are masked after their first 4 characters, so no secret reaches the report."""
    spans = _spans(detail)
    field = detail.get("field") or (spans[0].get("field") if spans else None)
    if field not in record or record.get(field) is None:
        field = next((f for f in TEXT_FIELDS if record.get(f)), None)
    if field is None:
        return "", "", []
    # every excerpt, whatever check asked for it, has its secrets masked first
    text: str = mask_secrets(str(record[field]))
    spans = [s for s in spans if s.get("field", field) == field]
    for s in spans:
        if s.get("redact"):
            a, b = int(s["start"]), int(s["end"])
            keep = min(4, b - a)
            text = text[: a + keep] + "•" * (b - a - keep) + text[b:]
    start = 0
    if spans:
        start = max(0, int(spans[0]["start"]) - width // 3)
    end = min(len(text), start + width)
    prefix = "…" if start > 0 else ""
    excerpt = prefix + text[start:end] + ("…" if end < len(text) else "")
    shift = len(prefix) - start
    highlights = [[int(s["start"]) + shift, int(s["end"]) + shift] for s in spans
                  if int(s["start"]) >= start and int(s["end"]) <= end]
    return field, excerpt, highlights


def collect_examples(spec: ScanSpec, findings: pl.LazyFrame, results: list[ShardResult], refs: dict[str, ShardRef]) -> pl.DataFrame:
    """Example records with evidence excerpts, re-reading at most a few shards."""
    k = spec.policy.report.examples_per_check
    picked = _pick_examples(findings, k) if k else pl.DataFrame()
    if picked.height == 0:
        return pl.DataFrame(schema=EXAMPLES_SCHEMA)
    ok = {r.shard for r in results if r.ok}
    shards = [s for s in picked["shard"].unique(maintain_order=True).to_list() if s in ok and s in refs]
    shards = shards[:MAX_EXAMPLE_SHARDS]
    rows = []
    for shard in shards:
        wanted = picked.filter(pl.col("shard") == shard)
        ids = set(wanted["record_id"].to_list())
        want_rows = {r for r in (_detail_row(d) for d in wanted["detail"].to_list()) if r is not None}
        records: dict[str, dict] = {}
        by_row: dict[int, dict] = {}  # ids may repeat in a shard: detail.row names the very record
        try:
            for batch in ShardReader(refs[shard], spec.mapping, batch_size=spec.policy.batch_size,
                                     storage_options=spec.storage_options,
                                     limits=spec.policy.limits.read_limits()):
                hit = pl.from_arrow(batch).filter(pl.col(RECORD_ID).is_in(list(ids))
                                                  | pl.col(ROW).is_in(list(want_rows)))
                for rec in hit.drop([c for c in hit.columns if c == "image"]).iter_rows(named=True):
                    records.setdefault(rec[RECORD_ID], rec)
                    if rec[ROW] in want_rows:
                        by_row[rec[ROW]] = rec
                if len(records) >= len(ids) and len(by_row) >= len(want_rows):
                    break
        except ShardReadError:
            continue
        for f in wanted.iter_rows(named=True):
            rec = by_row.get(_detail_row(f["detail"])) or records.get(f["record_id"])
            if rec is None:
                continue
            try:
                detail = json.loads(f["detail"] or "{}")
            except ValueError:
                detail = {}
            field, excerpt, hl = excerpt_of(rec, detail if isinstance(detail, dict) else {}, spec.policy.report.excerpt_chars)
            rows.append({**{c: f[c] for c in ("shard", "record_id", "check", "severity", "score", "detail")},
                         "field": field, "excerpt": excerpt, "highlights": json.dumps(hl)})
    return pl.DataFrame(rows, schema=EXAMPLES_SCHEMA) if rows else pl.DataFrame(schema=EXAMPLES_SCHEMA)


def _detail_row(detail: str | None) -> int | None:
    """``detail.row`` of a finding (its record's row index in the shard), when it has one."""
    try:
        row = json.loads(detail or "{}").get("row")
    except (ValueError, AttributeError):
        return None
    return row if isinstance(row, int) else None


def counts_by_check(findings_path: Path) -> dict[str, dict[str, int]]:
    df = pl.scan_parquet(findings_path).group_by(["check", "severity"]).len().collect()
    out: dict[str, dict[str, int]] = {}
    for row in df.iter_rows(named=True):
        out.setdefault(row["check"], {"info": 0, "warn": 0, "critical": 0})[row["severity"]] = row["len"]
    return dict(sorted(out.items()))
