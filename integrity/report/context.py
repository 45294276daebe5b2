"""What ``report.html`` shows: :func:`build_context` reads a run dir and builds the template's context.

One small function per part of the report (header, timings, verdicts, shard
table, quarantine, findings by check, per-check sections); the files are read
by :mod:`integrity.report.read` and the HTML is written by
:mod:`integrity.report.render`.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import polars as pl
from markupsafe import Markup

from integrity.analysis.shard_groups import shard_group_frames
from integrity.checks import registry
from integrity.ledger import release_command
from integrity.report import charts
from integrity.report.format import (COLORS, SEVERITY_RANK, SEVERITY_SERIES, TIMING_STAGES, VERDICT_RANK, VERDICTS,
                                     _truncate, anchor, fmt_duration, fmt_int, fmt_pct, fmt_time)
from integrity.report.model import Block, CheckData, Section
from integrity.report.read import FindingsByCheck, read_examples, read_findings, read_shards, read_summary
from integrity.report.sections import renderer_for

# --------------------------------------------------------------------------- limits

MAX_SHARD_ROWS = 200  # shard table rows shown (worst verdict first)
MAX_ERROR_CHARS = 400
MAX_RELEASE_COMMANDS = 10


# --------------------------------------------------------------------------- context


def _split_quarantine(q: Any) -> tuple[str, str]:
    if not q:
        return "", ""
    q = str(q)
    for sep in (" → ", " -> ", "→"):
        if sep in q:
            state, dest = q.split(sep, 1)
            return state.strip(), dest.strip()
    return q, ""


@dataclass
class CheckStats:
    """Findings per check, from the key columns of ``findings.parquet``."""

    by_check: dict[str, dict[str, int]]  # check -> severity -> findings
    flagged: dict[str, int]  # check -> distinct records with a warn or critical finding
    shard_level: dict[str, int]  # check -> findings with no record id
    affected: dict[str, int]  # check -> shards with a finding
    order: list[str]  # worst first: critical, then warn, then total findings
    total: int = 0  # findings in findings.parquet


def coverage_rows(coverage: Any) -> list[dict[str, Any]]:
    """One row per check that embeds records (``summary.json``'s ``counts.coverage``):
    records embedded / records, and whether that is a sample."""
    rows = []
    for check, c in sorted((coverage or {}).items()) if isinstance(coverage, dict) else []:
        if not isinstance(c, dict):
            continue
        records, embedded = int(c.get("records") or 0), int(c.get("embedded") or 0)
        analyzed = c.get("analyzed")
        sampled = embedded < records or (isinstance(analyzed, int) and analyzed < records)
        rows.append({"check": check, "records": records, "embedded": embedded,
                     "share": fmt_pct(embedded, records) if records else "100%", "sampled": sampled,
                     "how": str(c.get("how") or ""), "analyzed": analyzed})
    return rows


def _finding_name(check: str) -> str:
    """The name ``check``'s findings carry: a plug-in named by import path writes them
    under its class's ``name`` (the path itself when the class no longer imports)."""
    if ":" not in check:
        return check
    cls = registry.find(check, [check])
    return cls.name if cls is not None and cls.name else check


def build_context(run_dir: Path) -> dict[str, Any]:
    """Everything ``report.html``'s template shows, read from the files of ``run_dir``."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    notes: list[str] = []
    summary = read_summary(run_dir, notes)
    counts = summary.get("counts") or {}
    shards = read_shards(run_dir, notes)
    verdict_counts = _verdict_counts(shards, counts)
    ordered = _worst_first(shards)
    total_rows = counts.get("rows")
    if total_rows is None:
        total_rows = int(shards["rows"].sum() or 0)
    total_bytes = counts.get("bytes")
    if total_bytes is None:
        total_bytes = int(shards["bytes"].sum() or 0)

    findings_lf = read_findings(run_dir, notes)
    stats = _check_stats(findings_lf, counts)
    check_rows = _check_rows(stats, total_rows)
    checks_run = [str(c) for c in (summary.get("checks") or [])]
    has_examples_file, examples_by_check = read_examples(run_dir)
    # charts keep their drawing order (findings chart, sections, timings, verdict bar): matplotlib's
    # SVG element ids are numbered as they are drawn, so the same run dir gives the same bytes
    findings_chart = _findings_chart(check_rows)
    with tempfile.TemporaryDirectory(prefix="integrity-report-") as tmp:
        sections = _sections(stats, check_rows, FindingsByCheck(findings_lf, Path(tmp)), examples_by_check,
                             has_examples_file, checks_run, int(total_rows or 0))
    n_shards = shards.height
    n_findings = stats.total
    n_critical = sum(r["critical"] for r in check_rows)
    verdict = _overall_verdict(summary.get("verdict"), verdict_counts, check_rows, n_shards)
    timing_charts = _timing_charts(summary)
    return {
        **_header(summary, run_dir, verdict, verdict_counts, n_critical),
        "n_shards": counts.get("shards", n_shards),
        "n_rows": total_rows,
        "n_bytes": total_bytes,
        "n_findings": counts.get("findings", n_findings) if n_findings == 0 else n_findings,
        "n_critical": n_critical,
        **timing_charts,
        **_verdict_part(verdict_counts, n_shards),
        **_shard_table(ordered),
        "findings_chart": findings_chart,
        "check_rows": check_rows,
        "checks_run": checks_run,
        "clean_checks": [c for c in checks_run if c not in stats.by_check and _finding_name(c) not in stats.by_check],
        "coverage_rows": coverage_rows(counts.get("coverage")),
        "sections": sections,
        "has_examples_file": has_examples_file,
        **_quarantine_part(ordered, summary),
        "notes": notes,
        "run_dir": str(run_dir),
        "generated_at": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "build_seconds": time.perf_counter() - t0,
        "colors": COLORS,
    }


# ---- summary


def _header(summary: dict[str, Any], run_dir: Path, verdict: str, verdict_counts: dict[str, int],
            n_critical: int) -> dict[str, Any]:
    """Title, source, policy, times and the one-line headline."""
    policy = summary.get("policy") or {}
    if not isinstance(policy, dict):
        policy = {"source": str(policy)}
    headline_bits = [f"{fmt_int(verdict_counts[v])} {v}" for v in VERDICTS if verdict_counts.get(v)]
    if n_critical:
        headline_bits.append(f"{fmt_int(n_critical)} critical findings")
    return {
        "title": f"Integrity scan {summary.get('scan_id') or run_dir.name}: {verdict.upper()}",
        "scan_id": summary.get("scan_id") or run_dir.name,
        "source": summary.get("source") or "–",
        "policy_source": policy.get("source") or "–",
        "policy_sha": policy.get("sha256") or "",
        "started_at": fmt_time(summary.get("started_at")),
        "finished_at": fmt_time(summary.get("finished_at")),
        "total_time": fmt_duration(_total_seconds(summary)),
        "runner": summary.get("runner") or "",
        "cached_shards": summary.get("cached_shards"),
        "verdict": verdict,
        "headline": " · ".join(headline_bits),
    }


def _total_seconds(summary: dict[str, Any]) -> float | None:
    """The scan's wall time: its ``total`` timing, else finished minus started."""
    total_s = (summary.get("timings") or {}).get("total")
    if total_s is not None:
        return total_s
    try:
        st = datetime.fromisoformat(str(summary["started_at"]).replace("Z", "+00:00"))
        fi = datetime.fromisoformat(str(summary["finished_at"]).replace("Z", "+00:00"))
        return (fi - st).total_seconds()
    except (KeyError, ValueError, TypeError):
        return None


def _overall_verdict(verdict: Any, verdict_counts: dict[str, int], check_rows: list[dict], n_shards: int) -> str:
    """The summary's verdict; derived from the shards and findings when it has none (old run dirs)."""
    if verdict in ("pass", "warn", "fail"):
        return verdict
    if verdict_counts.get("quarantine") or any(r["critical"] for r in check_rows):
        return "fail"
    if any(n for v, n in verdict_counts.items() if v != "pass"):
        return "warn"
    return "pass" if n_shards else "unknown"


def _timing_charts(summary: dict[str, Any]) -> dict[str, Any]:
    """Time per stage, and seconds per check (per-shard passes over the shards read, plus the
    corpus pass), slowest first."""
    timings = summary.get("timings") or {}
    stage_items = []
    for k in list(TIMING_STAGES) + [k for k in timings if k not in TIMING_STAGES and k != "total"]:
        v = timings.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            stage_items.append((k, float(v)))
    check_items = [(str(k), float(v)) for k, v in (summary.get("check_seconds") or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
    check_items.sort(key=lambda kv: -kv[1])
    return {
        "timings_chart": charts.hbar_chart(stage_items, title="Time per stage", value_fmt=fmt_duration,
                                           label_width=100, x_label="seconds") if stage_items else None,
        "checks_chart": charts.hbar_chart(check_items, title="Time per check", value_fmt=fmt_duration,
                                          label_width=160) if check_items else None,
    }


# ---- shards


def _verdict_counts(shards: pl.DataFrame, counts: dict[str, Any]) -> dict[str, int]:
    """Shards per verdict (the summary's counts when there is no shard table)."""
    verdict_counts = {v: 0 for v in VERDICTS}
    for v, n in shards.group_by("verdict").len().iter_rows():
        verdict_counts[v if v is not None else "unknown"] = verdict_counts.get(v, 0) + n
    if shards.height == 0 and counts.get("verdicts"):
        verdict_counts.update({k: int(v) for k, v in counts["verdicts"].items()})
    return verdict_counts


def _verdict_part(verdict_counts: dict[str, int], n_shards: int) -> dict[str, Any]:
    """Shards by verdict: the counts (known verdicts first) and the proportion bar."""
    parts = [(v, verdict_counts.get(v, 0), COLORS[v]) for v in VERDICTS]
    return {
        "verdict_counts": [(v, verdict_counts.get(v, 0)) for v in VERDICTS]
        + [(k, n) for k, n in verdict_counts.items() if k not in VERDICT_RANK],
        "verdict_bar": charts.proportion_bar(parts, title="Shards by verdict") if n_shards else None,
    }


def _worst_first(shards: pl.DataFrame) -> pl.DataFrame:
    """The shards, worst verdict first (``_v``: the verdict's rank), then most findings."""
    return shards.with_columns(
        _v=pl.col("verdict").replace_strict(VERDICT_RANK, default=len(VERDICTS), return_dtype=pl.Int32),
    ).sort(
        ["_v", "n_critical", "n_warn", "records_flagged", "shard"],
        descending=[False, True, True, True, False],
        nulls_last=True,
    )


def _shard_table(ordered: pl.DataFrame) -> dict[str, Any]:
    """The shard table's rows (the :data:`MAX_SHARD_ROWS` worst) and a note on those left out."""
    shown = ordered.head(MAX_SHARD_ROWS)
    left_out = ordered.slice(MAX_SHARD_ROWS)
    left_out_note = ""
    if left_out.height:
        by_v = left_out.group_by("verdict").len().sort("len", descending=True)
        parts = ", ".join(f"{fmt_int(n)} {v}" for v, n in by_v.iter_rows())
        left_out_note = (
            f"Showing the {shown.height:,} worst of {ordered.height:,} shards; "
            f"{left_out.height:,} left out ({parts}). shards.parquet in the run dir has them all."
        )
    return {"shard_rows": [_shard_row(r) for r in shown.iter_rows(named=True)],
            "shards_left_out_note": left_out_note, "n_shards_table": ordered.height}


def _shard_row(r: dict[str, Any]) -> dict[str, Any]:
    qstate, qdest = _split_quarantine(r["quarantine"])
    sha = r["sha256"] or ""
    err = r["error"] or ""
    return {
        "shard": r["shard"] or "",
        "uri": r["uri"] or "",
        "verdict": r["verdict"] or "unknown",
        "vrank": r["_v"],
        "reasons": [str(x) for x in (r["reasons"] or [])],
        "rows": r["rows"],
        "bytes": r["bytes"],
        "n_critical": r["n_critical"] or 0,
        "n_warn": r["n_warn"] or 0,
        "n_info": r["n_info"] or 0,
        "records_flagged": r["records_flagged"],
        "sha_short": sha[:12],
        "sha": sha,
        "cached": r["cached"],
        "format": r["format"] or "",
        "error": _truncate(err, MAX_ERROR_CHARS),
        "error_full": err,
        "seconds": r["seconds"],
        "qstate": qstate,
        "qdest": qdest,
    }


def _quarantine_part(ordered: pl.DataFrame, summary: dict[str, Any]) -> dict[str, Any]:
    """Quarantined shards and the release commands (only when the scan acted: a plain scan
    reports only, so there is nothing to release)."""
    quarantined = ordered.filter(pl.col("verdict") == "quarantine")["shard"].to_list()
    acted = summary.get("quarantine_mode") != "off"
    release_cmds = [  # pasted as printed, from any directory: they name the scan's state dir and corpus
        release_command(s, summary.get("state_dir"), summary.get("corpus"))
        for s in (quarantined[:MAX_RELEASE_COMMANDS] if acted else [])
    ]
    return {
        "quarantined": quarantined,
        "release_cmds": release_cmds,
        "acted": acted,
        "n_to_quarantine": len(quarantined),
        "n_quarantined_more": max(0, len(quarantined) - MAX_RELEASE_COMMANDS) if acted else 0,
    }


# ---- findings


def _check_stats(findings: pl.LazyFrame, counts: dict[str, Any]) -> CheckStats:
    """Findings per check and severity, records flagged, shard-level findings, shards affected:
    each a sum over groups of shards of aggregations of the key columns of ``findings.parquet``
    (:func:`~integrity.analysis.shard_groups.shard_group_frames`; every figure is per shard, or
    distinct within a shard), so they are never held whole."""
    flagged_rows = pl.col("severity").is_in(["warn", "critical"]) & pl.col("record_id").is_not_null()
    parts: dict[str, list[pl.DataFrame]] = {"by_check": [], "flagged": [], "shard_level": [], "affected": []}
    for group in shard_group_frames(findings):
        got = pl.collect_all([
            group.group_by(["check", "severity"]).len(),
            group.filter(flagged_rows).select("check", "shard", "record_id").unique().group_by("check").len(),
            group.filter(pl.col("record_id").is_null()).group_by("check").len(),
            # a null shard counts as one, as n_unique counts it
            group.select("check", "shard").unique().group_by("check").len(),
        ])
        for name, frame in zip(parts, got):
            parts[name].append(frame)

    def summed(name: str, keys: list[str]) -> pl.DataFrame:
        frames = parts[name]
        return pl.concat(frames).group_by(keys).agg(pl.col("len").sum()) if frames else pl.DataFrame()

    by_check: dict[str, dict[str, int]] = {}
    total = 0
    for chk, sev, n in summed("by_check", ["check", "severity"]).iter_rows():
        by_check.setdefault(chk, {}).setdefault(sev or "unknown", 0)
        by_check[chk][sev or "unknown"] += n
        total += n
    if total == 0 and counts.get("by_check"):
        # old or partial run dirs: fall back to the summary's counts
        for chk, d in counts["by_check"].items():
            if any(d.values()):
                by_check[chk] = {k: int(v) for k, v in d.items() if v}
    order = sorted(
        by_check,
        key=lambda c: (-by_check[c].get("critical", 0), -by_check[c].get("warn", 0), -sum(by_check[c].values()), c),
    )
    return CheckStats(
        by_check=by_check,
        flagged=dict(summed("flagged", ["check"]).iter_rows()),
        shard_level=dict(summed("shard_level", ["check"]).iter_rows()),
        affected=dict(summed("affected", ["check"]).iter_rows()),
        order=order,
        total=total,
    )


def _check_rows(stats: CheckStats, total_rows: int | None) -> list[dict[str, Any]]:
    """The findings-by-check table, worst check first."""
    rows = []
    for c in stats.order:
        d = stats.by_check[c]
        rows.append({
            "check": c,
            "critical": d.get("critical", 0),
            "warn": d.get("warn", 0),
            "info": d.get("info", 0),
            "other": sum(v for k, v in d.items() if k not in SEVERITY_RANK),
            "total": sum(d.values()),
            "flagged": stats.flagged.get(c, 0),
            "share": fmt_pct(stats.flagged.get(c, 0), total_rows),
            "shards": stats.affected.get(c, 0),
        })
    return rows


def _findings_chart(check_rows: list[dict[str, Any]]) -> Markup | None:
    if not check_rows:
        return None
    return charts.stacked_hbar_chart([(r["check"], r) for r in check_rows], SEVERITY_SERIES,
                                     title="Findings by check and severity")


# ---- per-check sections


def _sections(stats: CheckStats, check_rows: list[dict[str, Any]], findings_of: Callable[[str], pl.LazyFrame],
              examples_by_check: dict[str, list[dict]], has_examples_file: bool, checks_run: list[str],
              total_rows: int) -> list[Section]:
    """One section per check with findings, in the section the check declares; sets each
    check row's ``anchor`` (the link to its section)."""
    taken: set[str] = set()
    sections: list[Section] = []
    rows_by_check = {r["check"]: r for r in check_rows}
    for c in stats.order:
        a = anchor(c, taken)
        data = CheckData(
            check=c,
            anchor=a,
            counts=dict(stats.by_check[c]),
            records_flagged=stats.flagged.get(c, 0),
            shard_level=stats.shard_level.get(c, 0),
            shards_affected=stats.affected.get(c, 0),
            total_rows=total_rows,
            # one check's scores at a time, read when its section is drawn
            scores=findings_of(c).filter(pl.col("score").is_not_null()).select(["severity", "score"]).collect(),
            examples=examples_by_check.get(c, []),
            has_examples_file=has_examples_file,
            findings=(lambda c=c: findings_of(c)),
        )
        try:
            sections.append(renderer_for(c, checks_run)(data))
        except Exception as exc:  # a broken section must not hide the rest of the report
            sec = Section(check=c, anchor=a, counts=dict(stats.by_check[c]))
            sec.blocks.append(Block(kind="note", text=f"this section could not be rendered: {exc!r}"))
            sections.append(sec)
        rows_by_check[c]["anchor"] = a
    return sections
