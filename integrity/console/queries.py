"""What the console's pages show, read from the ledger (SQLite) and the run directories it records.

Every list is paginated in SQL (``LIMIT``/``OFFSET`` on indexed columns), so
a ledger of 1,000 scans x 1,000 shards answers each page in milliseconds.
Run-directory files (``findings.parquet``, ``examples.parquet``) are read
with Polars and cached per file (path, size, mtime).
"""
from __future__ import annotations

import functools
import json
import math
import os
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from integrity.engine.redact import mask_frame
from integrity.ledger import Ledger, QuarantineAction

VERDICT_ORDER = ("quarantine", "unreadable", "warn", "pass")  # worst first
SEVERITIES = ("critical", "warn", "info")
_VERDICT_RANK_SQL = "CASE verdict WHEN 'quarantine' THEN 0 WHEN 'unreadable' THEN 1 WHEN 'warn' THEN 2 ELSE 3 END"
_SEVERITY_RANK = {"critical": 0, "warn": 1, "info": 2}


@dataclass
class Page:
    """One page of a longer list."""

    rows: list[Any]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def first(self) -> int:
        return 0 if not self.total else (self.page - 1) * self.per_page + 1

    @property
    def last(self) -> int:
        return min(self.total, self.page * self.per_page)


@dataclass
class ScanRow:
    """One scan as the scans table shows it."""

    scan_id: str
    source: str
    started_at: str
    finished_at: str | None
    verdict: str | None
    run_dir: str | None
    flow_run_id: str | None
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int | None:
        return self.counts.get("rows")

    @property
    def verdicts(self) -> dict[str, int]:
        return self.counts.get("verdicts") or {}

    @property
    def by_check(self) -> dict[str, int]:
        """Findings per check (all severities), most first."""
        totals = {c: sum((v or {}).values()) for c, v in (self.counts.get("by_check") or {}).items()}
        return dict(sorted(((c, n) for c, n in totals.items() if n), key=lambda kv: (-kv[1], kv[0])))

    @property
    def duration_s(self) -> float | None:
        if not self.finished_at:
            return None
        try:
            return (datetime.fromisoformat(self.finished_at) - datetime.fromisoformat(self.started_at)).total_seconds()
        except ValueError:
            return None


def _page_args(page: int, per_page: int) -> tuple[int, int]:
    page = max(1, int(page))
    return page, (page - 1) * per_page


def _scan_row(r: Any) -> ScanRow:
    return ScanRow(scan_id=r["scan_id"], source=r["source"], started_at=r["started_at"], finished_at=r["finished_at"],
                   verdict=r["verdict"], run_dir=r["run_dir"], flow_run_id=r["flow_run_id"],
                   counts=json.loads(r["counts_json"]) if r["counts_json"] else {})


_SCAN_SELECT = "SELECT scan_id, source, started_at, finished_at, verdict, run_dir, flow_run_id, counts_json FROM scans"
# a scan's corpus: its --corpus name, or its source for scans recorded before corpora existed
CORPUS = "COALESCE(corpus, source)"


class ConsoleData:
    """Read-only queries behind the console's pages."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    # -- scans -------------------------------------------------------------

    def sources(self) -> list[dict[str, Any]]:
        """Each corpus: how many scans, its latest scan (source, verdict)."""
        with self.ledger.reader() as con:
            rows = con.execute(
                f"SELECT {CORPUS} AS name, COUNT(*) AS n, MAX(started_at) AS last FROM scans GROUP BY name "
                "ORDER BY last DESC").fetchall()
            out = []
            for r in rows:
                latest = con.execute(
                    f"SELECT scan_id, source, verdict FROM scans WHERE {CORPUS} = ? ORDER BY started_at DESC LIMIT 1",
                    (r["name"],)).fetchone()
                out.append({"source": r["name"], "scans": r["n"], "last": r["last"], "scan_id": latest["scan_id"],
                            "latest_source": latest["source"], "verdict": latest["verdict"]})
        return out

    def scans(self, *, source: str | None = None, page: int = 1, per_page: int = 50) -> Page:
        """Scans newest first, optionally of one source."""
        page, offset = _page_args(page, per_page)
        where, args = (f"WHERE {CORPUS} = ?", [source]) if source else ("", [])
        with self.ledger.reader() as con:
            total = con.execute(f"SELECT COUNT(*) FROM scans {where}", args).fetchone()[0]
            rows = con.execute(f"{_SCAN_SELECT} {where} ORDER BY started_at DESC, rowid DESC LIMIT ? OFFSET ?",
                               (*args, per_page, offset)).fetchall()
        return Page([_scan_row(r) for r in rows], total, page, per_page)

    def trend(self, *, source: str | None = None, nights: int = 90) -> list[ScanRow]:
        """The last ``nights`` finished scans (of one source), oldest first, for the trend charts."""
        where, args = (f"AND {CORPUS} = ?", [source]) if source else ("", [])
        with self.ledger.reader() as con:
            rows = con.execute(f"{_SCAN_SELECT} WHERE finished_at IS NOT NULL {where} "
                               "ORDER BY started_at DESC LIMIT ?", (*args, int(nights))).fetchall()
        return [_scan_row(r) for r in reversed(rows)]

    def trend_key(self, source: str | None, nights: int) -> tuple:
        """Changes whenever a scan is added or finishes (cache key of the trend charts)."""
        where, args = (f"WHERE {CORPUS} = ?", [source]) if source else ("", [])
        with self.ledger.reader() as con:
            r = con.execute(f"SELECT COUNT(*), MAX(started_at), MAX(finished_at) FROM scans {where}", args).fetchone()
        return (source, nights, *tuple(r))

    def scan(self, scan_id: str) -> ScanRow | None:
        with self.ledger.reader() as con:
            r = con.execute(f"{_SCAN_SELECT} WHERE scan_id = ?", (scan_id,)).fetchone()
        return _scan_row(r) if r else None

    def verdict_counts(self, scan_id: str) -> dict[str, int]:
        with self.ledger.reader() as con:
            rows = con.execute("SELECT verdict, COUNT(*) FROM shard_verdicts WHERE scan_id = ? GROUP BY verdict",
                               (scan_id,)).fetchall()
        counts = {v: 0 for v in VERDICT_ORDER}
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def verdicts(self, scan_id: str, *, verdict: str | None = None, page: int = 1, per_page: int = 100) -> Page:
        """A scan's shard verdicts, worst first (then by shard name)."""
        page, offset = _page_args(page, per_page)
        where, args = "WHERE scan_id = ?", [scan_id]
        if verdict:
            where += " AND verdict = ?"
            args.append(verdict)
        with self.ledger.reader() as con:
            total = con.execute(f"SELECT COUNT(*) FROM shard_verdicts {where}", args).fetchone()[0]
            rows = con.execute(
                f"SELECT shard, uri, sha256, verdict, reasons_json FROM shard_verdicts {where} "
                f"ORDER BY {_VERDICT_RANK_SQL}, shard LIMIT ? OFFSET ?", (*args, per_page, offset)).fetchall()
        return Page([{**dict(r), "reasons": json.loads(r["reasons_json"] or "[]")} for r in rows], total, page, per_page)

    # -- one shard ---------------------------------------------------------

    def shard_nights(self, shard: str, *, page: int = 1, per_page: int = 50) -> Page:
        """The shard's verdict in each scan, newest first."""
        page, offset = _page_args(page, per_page)
        with self.ledger.reader() as con:
            total = con.execute("SELECT COUNT(*) FROM shard_verdicts WHERE shard = ?", (shard,)).fetchone()[0]
            # the page's rows are picked from the index alone; only those are read from the table
            rows = con.execute(
                """SELECT v.scan_id, v.uri, v.sha256, v.verdict, v.reasons_json, s.started_at, s.source
                   FROM shard_verdicts v JOIN scans s ON s.scan_id = v.scan_id
                   WHERE v.rowid IN (SELECT v2.rowid FROM shard_verdicts v2 JOIN scans s2 ON s2.scan_id = v2.scan_id
                                     WHERE v2.shard = ? ORDER BY s2.started_at DESC LIMIT ? OFFSET ?)
                   ORDER BY s.started_at DESC""", (shard, per_page, offset)).fetchall()
        return Page([{**dict(r), "reasons": json.loads(r["reasons_json"] or "[]")} for r in rows], total, page, per_page)

    def shard_verdict_series(self, shard: str, nights: int = 90) -> list[dict[str, Any]]:
        """The shard's last ``nights`` verdicts, oldest first (for its chart)."""
        with self.ledger.reader() as con:
            rows = con.execute(
                """SELECT s.started_at, v.verdict FROM shard_verdicts v JOIN scans s ON s.scan_id = v.scan_id
                   WHERE v.shard = ? ORDER BY s.started_at DESC LIMIT ?""", (shard, int(nights))).fetchall()
        return [dict(r) for r in reversed(rows)]

    def sha_changes(self, shard: str, limit: int = 50) -> list[dict[str, Any]]:
        """Each scan in which the shard's SHA-256 differed from the scan before (newest first)."""
        with self.ledger.reader() as con:
            rows = con.execute(
                """SELECT started_at, scan_id, sha256, prev FROM (
                       SELECT s.started_at, v.scan_id, v.sha256,
                              LAG(v.sha256) OVER (ORDER BY s.started_at) AS prev,
                              ROW_NUMBER() OVER (ORDER BY s.started_at) AS n
                       FROM shard_verdicts v JOIN scans s ON s.scan_id = v.scan_id WHERE v.shard = ?)
                   WHERE n = 1 OR prev IS NOT sha256 ORDER BY started_at DESC LIMIT ?""", (shard, limit)).fetchall()
        return [dict(r) for r in rows]

    def shard_events(self, shard: str, limit: int = 100) -> list[dict[str, Any]]:
        """Quarantines, releases, restores and console actions on this shard, newest first."""
        events: list[dict[str, Any]] = []
        for a in self.ledger.actions(shard_or_uri=shard):
            events.append({"at": a.created_at, "event": "quarantine", "who": a.who,
                           "what": f"{a.mode} → {a.destination or '(marked)'} ({a.state})", "reason": None})
            if a.resolution and a.resolved_at:
                events.append({"at": a.resolved_at, "event": a.resolution, "who": a.resolved_by,
                               "what": f"put back: {a.restore_state or 'not asked'}", "reason": None})
        for r in self.ledger.releases(shard):
            events.append({"at": r.released_at, "event": "release recorded", "who": r.who,
                           "what": f"content {r.sha256[:12]}…", "reason": r.reason})
        for c in self.ledger.console_actions(target=shard, limit=limit):
            events.append({"at": c.at, "event": f"console {c.action} ({c.outcome})", "who": c.who,
                           "what": c.detail or "", "reason": c.reason})
        events.sort(key=lambda e: e["at"] or "", reverse=True)
        return events[:limit]

    # -- quarantine queue --------------------------------------------------

    def pending(self) -> list[QuarantineAction]:
        """Shards in quarantine now (including a restore that has not finished)."""
        return self.ledger.quarantined()

    def completed(self, *, page: int = 1, per_page: int = 50) -> Page:
        """Released, restored or failed actions, most recently resolved first."""
        page, offset = _page_args(page, per_page)
        total, actions = self.ledger.resolved(limit=per_page, offset=offset)
        with self.ledger.reader() as con:
            ids = [a.id for a in actions]
            reasons = dict(con.execute(
                f"SELECT action_id, reason FROM releases WHERE action_id IN ({','.join('?' * len(ids))}) "
                "ORDER BY id", ids).fetchall()) if ids else {}
        return Page([{"action": a, "reason": reasons.get(a.id)} for a in actions], total, page, per_page)


# ---------------------------------------------------------------------------
# run directories


def _file_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_cached(key: tuple[str, int, int], columns: tuple[str, ...]) -> pl.DataFrame:
    """The file's ``columns``, secrets masked, sorted once most severe and highest score first (every
    filtered list is then a filter and a slice: order survives filtering)."""
    lf = pl.scan_parquet(key[0])
    have = lf.collect_schema().names()
    # masked again on the way out: run dirs written before the engine masked at write time may hold secrets
    df = mask_frame(lf.select([c for c in columns if c in have]).collect())
    if "severity" in df.columns:
        df = df.with_columns(pl.col("severity").replace_strict(_SEVERITY_RANK, default=3, return_dtype=pl.Int8)
                             .alias("_rank"))
        by, desc = ["_rank"], [False]
        if "score" in df.columns:
            by, desc = ["_rank", "score"], [False, True]
        df = df.sort(by, descending=desc, nulls_last=True, maintain_order=True)
    return df


def read_run_file(run_dir: str | os.PathLike | None, name: str, columns: tuple[str, ...]) -> pl.DataFrame | None:
    """A run dir's Parquet file (only ``columns``; missing ones added as nulls), or None when absent."""
    if not run_dir:
        return None
    key = _file_key(Path(run_dir) / name)
    if key is None:
        return None
    try:
        df = _read_cached(key, columns)
    except (OSError, pl.exceptions.PolarsError):
        return None
    missing = [pl.lit(None, dtype=pl.Utf8).alias(c) for c in (*columns, "_rank") if c not in df.columns]
    return df.with_columns(missing) if missing else df


FINDING_COLS = ("shard", "record_id", "check", "severity", "score", "detail")
EXAMPLE_COLS = ("shard", "record_id", "check", "severity", "score", "field", "excerpt", "highlights")


def _filter(df: pl.DataFrame, check: str | None, severity: str | None, shard: str | None) -> pl.DataFrame:
    conds = []
    if check:
        conds.append(pl.col("check") == check)
    if severity:
        conds.append(pl.col("severity") == severity)
    if shard:
        conds.append(pl.col("shard") == shard)
    return df.filter(*conds) if conds else df


def findings_by_check(run_dir: str | None, shard: str | None = None) -> list[dict[str, Any]]:
    """Findings per check and severity (most critical first)."""
    df = read_run_file(run_dir, "findings.parquet", FINDING_COLS)
    if df is None or df.is_empty():
        return []
    if shard:
        df = df.filter(pl.col("shard") == shard)
    g = (df.group_by("check").agg([(pl.col("severity") == s).sum().alias(s) for s in SEVERITIES]
                                  + [pl.len().alias("total"), pl.col("shard").n_unique().alias("shards")])
         .sort(["critical", "warn", "total", "check"], descending=[True, True, True, False]))
    return g.to_dicts()


def findings(run_dir: str | None, *, check: str | None = None, severity: str | None = None,
             shard: str | None = None, page: int = 1, per_page: int = 50) -> Page:
    """Findings matching the filters, most severe and highest score first."""
    df = read_run_file(run_dir, "findings.parquet", FINDING_COLS)
    if df is None:
        return Page([], 0, 1, per_page)
    df = _filter(df, check, severity, shard)  # already most severe, highest score first
    page, offset = _page_args(page, per_page)
    return Page(df.slice(offset, per_page).drop("_rank").to_dicts(), df.height, page, per_page)


def examples(run_dir: str | None, *, check: str | None = None, severity: str | None = None,
             shard: str | None = None, limit: int = 12) -> list[dict[str, Any]]:
    """Example records with their (already masked) excerpt and evidence spans."""
    df = read_run_file(run_dir, "examples.parquet", EXAMPLE_COLS)
    if df is None:
        return []
    df = _filter(df, check, severity, shard)
    if not check:  # a few of every check, worst checks first, rather than the first check's dozen
        df = df.sort("_rank", "check").group_by("check", maintain_order=True).head(max(2, limit // 6))
    return df.sort("_rank", "check", maintain_order=True).head(limit).drop("_rank").to_dicts()


def drop_list(run_dir: str | None, *, check: str | None = None, severity: str | None = None,
              shard: str | None = None) -> pl.DataFrame:
    """The flagged record ids a training job drops: one row per (shard, record_id) with a warn or critical
    finding (or only ``severity`` when given), with the checks that flagged it and the worst severity."""
    key = _file_key(Path(run_dir) / "findings.parquet") if run_dir else None
    if key is None:
        return pl.DataFrame(schema=_DROP_SCHEMA)
    return _drop_list_cached(str(run_dir), key, check, severity, shard)


_DROP_SCHEMA = {"shard": pl.Utf8, "record_id": pl.Utf8, "checks": pl.Utf8, "severity": pl.Utf8}


@functools.lru_cache(maxsize=16)
def _drop_list_cached(run_dir: str, key: tuple, check: str | None, severity: str | None,
                      shard: str | None) -> pl.DataFrame:
    df = read_run_file(run_dir, "findings.parquet", FINDING_COLS)
    if df is None:
        return pl.DataFrame(schema=_DROP_SCHEMA)
    df = _filter(df, check, severity, shard).filter(pl.col("record_id").is_not_null())
    if not severity:
        df = df.filter(pl.col("severity").is_in(["critical", "warn"]))
    names = {v: k for k, v in _SEVERITY_RANK.items()}
    return (df.select("shard", "record_id", "check", "_rank").sort("check")
            .group_by("shard", "record_id")
            .agg(pl.col("check").unique(maintain_order=True).str.join(",").alias("checks"), pl.col("_rank").min())
            .with_columns(pl.col("_rank").replace_strict(names, default="info", return_dtype=pl.Utf8).alias("severity"))
            .sort("shard", "record_id").select(list(_DROP_SCHEMA)))
