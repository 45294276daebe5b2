"""``report.html``: the human report of one scan, rendered from its run dir.

:func:`write_report` reads only the files of a run dir (``summary.json``,
``shards.parquet``, ``findings.parquet`` and, when present,
``examples.parquet``), so any past run can be re-rendered with
``integrity report RUN_DIR``. The output is one self-contained HTML file:
inline CSS, inline SVG charts drawn here in Python (see
:mod:`integrity.report.charts`), a few lines of optional inline JS for sorting and
filtering the shard table, nothing loaded from the network.

Everything that comes from the scanned data (shard names, record ids,
excerpts, details, error messages) is untrusted: the template is rendered
with autoescape on and no value is ever marked safe here except the SVG
that :mod:`integrity.report.charts` builds with its own escaping.

Per-check sections are produced by *section renderers*
(:mod:`integrity.report.model`; formatting helpers and colours are in
:mod:`integrity.report.format`). A check names its section in its
``report_section`` class attribute; any check that names none, including
plug-ins, gets :func:`~integrity.report.model.generic_section` (counts, score histogram, examples with
highlighted evidence, top findings). A new section is a function registered
under a name in a module of :mod:`integrity.report.sections`, e.g.::

    @report_section("poison")
    def poison_section(data: CheckData) -> Section:
        sec = generic_section(data)
        sec.blocks.append(Block(kind="note", title="…", text="…"))
        return sec

and a check shows its findings there with ``report_section = "poison"``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
from markupsafe import Markup

from connectors.atomic import atomic_output
from connectors.schema import EXAMPLE_COLUMNS, SCAN_FINDING_COLUMNS
from integrity.checks import registry
from integrity.ledger import release_command
from integrity.report import charts
from integrity.report.sections import renderer_for
from integrity.report.format import (COLORS, SEVERITY_RANK, SEVERITY_SERIES, TIMING_STAGES, VERDICT_RANK, VERDICTS,
                                     _truncate, anchor, fmt_duration, fmt_int, fmt_pct, fmt_score, fmt_time,
                                     highlight_segments, human_bytes, pretty_detail)
from integrity.report.model import Block, CheckData, Section

# --------------------------------------------------------------------------- limits

MAX_SHARD_ROWS = 200  # shard table rows shown (worst verdict first)
MAX_EXAMPLES_PER_CHECK = 12
EXAMPLES_SHOWN = 2  # per check; the rest are folded under "N more examples"
MAX_ERROR_CHARS = 400
MAX_RELEASE_COMMANDS = 10

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


# --------------------------------------------------------------------------- reading


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


# --------------------------------------------------------------------------- context


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
    """Findings per check, from the light columns of ``findings.parquet``."""

    by_check: dict[str, dict[str, int]]  # check -> severity -> findings
    flagged: dict[str, int]  # check -> distinct records with a warn or critical finding
    shard_level: dict[str, int]  # check -> findings with no record id
    affected: dict[str, int]  # check -> shards with a finding
    order: list[str]  # worst first: critical, then warn, then total findings


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
    summary = _read_summary(run_dir, notes)
    counts = summary.get("counts") or {}
    shards = _read_shards(run_dir, notes)
    verdict_counts = _verdict_counts(shards, counts)
    ordered = _worst_first(shards)
    total_rows = counts.get("rows")
    if total_rows is None:
        total_rows = int(shards["rows"].sum() or 0)
    total_bytes = counts.get("bytes")
    if total_bytes is None:
        total_bytes = int(shards["bytes"].sum() or 0)

    findings_lf = _read_findings(run_dir, notes)
    light = findings_lf.select(["shard", "record_id", "check", "severity", "score"]).collect()
    stats = _check_stats(light, counts)
    check_rows = _check_rows(stats, total_rows)
    checks_run = [str(c) for c in (summary.get("checks") or [])]
    has_examples_file, examples_by_check = _read_examples(run_dir)
    # charts keep their drawing order (findings chart, sections, timings, verdict bar): matplotlib's
    # SVG element ids are numbered as they are drawn, so the same run dir gives the same bytes
    findings_chart = _findings_chart(check_rows)
    sections = _sections(stats, check_rows, findings_lf, light, examples_by_check, has_examples_file, checks_run,
                         int(total_rows or 0))
    n_shards = shards.height
    n_findings = light.height
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


def _read_summary(run_dir: Path, notes: list[str]) -> dict[str, Any]:
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


def _read_shards(run_dir: Path, notes: list[str]) -> pl.DataFrame:
    """``shards.parquet`` in the report's columns (empty, with a note, when missing)."""
    shards_lf = _scan(run_dir / "shards.parquet", SHARD_COLUMNS)
    if shards_lf is None:
        notes.append("shards.parquet is missing")
        shards_lf = _empty(SHARD_COLUMNS)
    return shards_lf.select(list(SHARD_COLUMNS)).collect()


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


def _read_findings(run_dir: Path, notes: list[str]) -> pl.LazyFrame:
    """``findings.parquet`` in the report's columns, lazily (empty, with a note, when missing)."""
    findings_lf = _scan(run_dir / "findings.parquet", SCAN_FINDING_COLUMNS)
    if findings_lf is None:
        notes.append("findings.parquet is missing")
        findings_lf = _empty(SCAN_FINDING_COLUMNS)
    return findings_lf.select(list(SCAN_FINDING_COLUMNS)).with_columns(pl.col("check").fill_null("(unnamed)"))


def _check_stats(light: pl.DataFrame, counts: dict[str, Any]) -> CheckStats:
    """Findings per check and severity, records flagged, shard-level findings, shards affected."""
    by_check: dict[str, dict[str, int]] = {}
    for chk, sev, n in light.group_by(["check", "severity"]).len().iter_rows():
        by_check.setdefault(chk, {}).setdefault(sev or "unknown", 0)
        by_check[chk][sev or "unknown"] += n
    if light.height == 0 and counts.get("by_check"):
        # old or partial run dirs: fall back to the summary's counts
        for chk, d in counts["by_check"].items():
            if any(d.values()):
                by_check[chk] = {k: int(v) for k, v in d.items() if v}
    flagged = dict(
        light.filter(pl.col("severity").is_in(["warn", "critical"]) & pl.col("record_id").is_not_null())
        .group_by("check")
        .agg(pl.struct("shard", "record_id").n_unique())
        .iter_rows()
    )
    order = sorted(
        by_check,
        key=lambda c: (-by_check[c].get("critical", 0), -by_check[c].get("warn", 0), -sum(by_check[c].values()), c),
    )
    return CheckStats(
        by_check=by_check,
        flagged=flagged,
        shard_level=dict(light.filter(pl.col("record_id").is_null()).group_by("check").len().iter_rows()),
        affected=dict(light.group_by("check").agg(pl.col("shard").n_unique()).iter_rows()),
        order=order,
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


# ---- examples and per-check sections


def _read_examples(run_dir: Path) -> tuple[bool, dict[str, list[dict]]]:
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


def _sections(stats: CheckStats, check_rows: list[dict[str, Any]], findings_lf: pl.LazyFrame, light: pl.DataFrame,
              examples_by_check: dict[str, list[dict]], has_examples_file: bool, checks_run: list[str],
              total_rows: int) -> list[Section]:
    """One section per check with findings, in the section the check declares; sets each
    check row's ``anchor`` (the link to its section)."""
    taken: set[str] = set()
    sections: list[Section] = []
    scores = light.select(["check", "severity", "score"]).filter(pl.col("score").is_not_null())
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
            scores=scores.filter(pl.col("check") == c).select(["severity", "score"]),
            examples=examples_by_check.get(c, []),
            has_examples_file=has_examples_file,
            findings=(lambda c=c: findings_lf.filter(pl.col("check") == c)),
        )
        try:
            sections.append(renderer_for(c, checks_run)(data))
        except Exception as exc:  # a broken section must not hide the rest of the report
            sec = Section(check=c, anchor=a, counts=dict(stats.by_check[c]))
            sec.blocks.append(Block(kind="note", text=f"this section could not be rendered: {exc!r}"))
            sections.append(sec)
        rows_by_check[c]["anchor"] = a
    return sections


# --------------------------------------------------------------------------- rendering


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}``: plain strings (data) get bidi/zero-width/control
    characters shown as ⟨U+XXXX⟩; Markup (our SVG) is left alone."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return charts.reveal_invisible(value)
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters.update(
        human_bytes=human_bytes,
        fmt_int=fmt_int,
        fmt_duration=fmt_duration,
        fmt_score=fmt_score,
    )
    env.globals["EXAMPLES_SHOWN"] = EXAMPLES_SHOWN
    return env


def _template() -> jinja2.Template:
    text = resources.files("integrity.report").joinpath("templates/report.html").read_text(encoding="utf-8")
    return _environment().from_string(text)


def render_report(run_dir: Path) -> str:
    """The report of ``run_dir`` as an HTML string."""
    return _template().render(**build_context(Path(run_dir)))


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Render ``run_dir``'s report to ``out`` (default ``run_dir/report.html``); return the path.

    Written to a temporary file first and renamed, so a crash never leaves a
    half-written report behind.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    html = render_report(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:  # a full disk leaves no truncated report, and the error names it
        tmp.write_text(html, encoding="utf-8")
    return out

