"""Stage 4: severities from the policy, then one verdict per shard.

Verdict rules (all thresholds in the policy's ``verdict`` block):

* ``unreadable``: the shard could not be read or scanned;
* ``quarantine``: more than ``quarantine.critical_share`` of its records have a
  critical finding, or any critical finding of a check in
  ``quarantine.any_critical_in``, or any warn/critical finding of a check in
  ``quarantine.any_finding_in``;
* ``warn``: more than ``warn.flagged_share`` of its records have a warn or
  critical finding, or (``warn.any_critical``) any critical finding at all, or
  (``warn.shard_findings``) a warn-level finding about the shard as a whole
  (``record_id`` null: drift, synthetic share, changed content);
* ``pass`` otherwise.

A shard whose exact content (SHA-256) was released from quarantine before is
not quarantined again: its verdict becomes ``warn`` with the release as reason.
New content is judged afresh.
"""
from __future__ import annotations

from typing import Any, Callable

import polars as pl

from integrity.analysis.shard_groups import collect_by_shard_groups
from integrity.checks import registry
from integrity.engine.shard import ShardResult
from integrity.policy import CheckPolicy, Policy, SeverityThresholds


def _severity_expr(name: str, cp: CheckPolicy) -> pl.Expr:
    default = pl.coalesce(pl.col("severity"), pl.lit(registry.get(name).default_severity))
    sev = cp.severity
    if isinstance(sev, str):
        return pl.lit(sev)
    if isinstance(sev, SeverityThresholds):
        expr = pl.when(pl.lit(False)).then(pl.lit(None, dtype=pl.Utf8))
        if sev.critical is not None:
            expr = expr.when(pl.col("score") >= sev.critical).then(pl.lit("critical"))
        if sev.warn is not None:
            expr = expr.when(pl.col("score") >= sev.warn).then(pl.lit("warn"))
        return expr.otherwise(pl.lit("info"))
    return default


def assign_severity(findings: pl.LazyFrame, policy: Policy, checks: list[str]) -> pl.LazyFrame:
    """Replace each finding's proposed severity by the one its check's policy gives."""
    expr = pl.col("severity")
    chain = None
    for name in checks:
        # a plug-in named by import path ("mypkg.checks:MyCheck") writes findings under its
        # class's name: the policy entry keyed by the path applies to them
        cond = pl.col("check").is_in(sorted({name, registry.get(name).name or name}))
        sev = _severity_expr(name, policy.check_policy(name))
        chain = pl.when(cond).then(sev) if chain is None else chain.when(cond).then(sev)
    if chain is not None:
        expr = chain.otherwise(pl.coalesce(pl.col("severity"), pl.lit("warn")))
    return findings.with_columns(severity=expr.cast(pl.Utf8))


def shard_counts(findings: pl.LazyFrame) -> pl.DataFrame:
    """Per shard: findings by severity, distinct flagged and critical records,
    and which checks had critical or warn findings. Read a group of shards at a time
    (:func:`~integrity.analysis.shard_groups.collect_by_shard_groups`): the distinct counts
    never hold every finding's record id."""
    return collect_by_shard_groups(findings, _shard_counts)


def _shard_counts(findings: pl.LazyFrame) -> pl.LazyFrame:
    flagged = pl.col("severity").is_in(["warn", "critical"])
    critical = pl.col("severity") == "critical"
    return findings.group_by("shard").agg(
        n_info=(pl.col("severity") == "info").sum(),
        n_warn=(pl.col("severity") == "warn").sum(),
        n_critical=critical.sum(),
        records_flagged=pl.col("record_id").filter(flagged).drop_nulls().n_unique(),
        records_critical=pl.col("record_id").filter(critical).drop_nulls().n_unique(),
        critical_checks=pl.col("check").filter(critical).unique().sort(),
        flagged_checks=pl.col("check").filter(flagged).unique().sort(),
        shard_level_checks=pl.col("check").filter(flagged & pl.col("record_id").is_null()).unique().sort(),
    )


ReleaseLookup = Callable[[str, list[str]], Any]


def decide(results: list[ShardResult], counts: pl.DataFrame, policy: Policy,
           release_lookup: ReleaseLookup | None = None) -> pl.DataFrame:
    """The shards table of the output contract (without the quarantine column).

    ``release_lookup(sha256, reasons)`` returns the release recorded for this
    content and these quarantine reasons, or None.
    """
    by_shard = {row["shard"]: row for row in counts.iter_rows(named=True)}
    q, w = policy.verdict.quarantine, policy.verdict.warn
    rows = []
    for r in results:
        c = by_shard.get(r.shard, {})
        n_crit_rec, n_flag_rec = c.get("records_critical", 0), c.get("records_flagged", 0)
        crit_checks, flag_checks = c.get("critical_checks") or [], c.get("flagged_checks") or []
        reasons: list[str] = []
        released = False
        if not r.ok:
            verdict, reasons = "unreadable", [r.error or "unreadable"]
        else:
            rows_ = max(r.rows, 1)
            quarantine = []
            if n_crit_rec / rows_ > q.critical_share:
                quarantine.append(f"{n_crit_rec / rows_:.2%} of records have a critical finding (limit {q.critical_share:.2%})")
            for name in sorted(set(crit_checks) & set(q.any_critical_in)):
                quarantine.append(f"critical {name} finding")
            for name in sorted(set(flag_checks) & set(q.any_finding_in)):
                quarantine.append(f"{name} finding")
            warn = []
            if n_flag_rec / rows_ > w.flagged_share:
                warn.append(f"{n_flag_rec / rows_:.2%} of records flagged by {', '.join(flag_checks)} (limit {w.flagged_share:.2%})")
            if w.any_critical and crit_checks:
                warn.append(f"critical findings of {', '.join(crit_checks)}")
            shard_level = c.get("shard_level_checks") or []
            if w.shard_findings and shard_level:
                warn.append(f"shard-level findings of {', '.join(shard_level)}")
            if quarantine:
                verdict, reasons = "quarantine", quarantine
                rel = release_lookup(r.sha256, quarantine) if (release_lookup and r.sha256) else None
                if rel is not None:
                    verdict, released = "warn", True
                    reasons = [f"released by {rel.who} on {rel.released_at}: {rel.reason} "
                               "(same content, same findings)"] + quarantine
            elif warn:
                verdict, reasons = "warn", warn
            else:
                verdict = "pass"
        rows.append({
            "shard": r.shard, "uri": r.uri, "sha256": r.sha256, "rows": r.rows, "bytes": r.bytes,
            "verdict": verdict, "reasons": reasons, "format": r.format, "error": r.error, "cached": r.cached,
            "seconds": r.seconds, "n_info": c.get("n_info", 0), "n_warn": c.get("n_warn", 0),
            "n_critical": c.get("n_critical", 0), "records_flagged": n_flag_rec, "released": released,
        })
    return pl.DataFrame(rows, schema={
        "shard": pl.Utf8, "uri": pl.Utf8, "sha256": pl.Utf8, "rows": pl.Int64, "bytes": pl.Int64,
        "verdict": pl.Utf8, "reasons": pl.List(pl.Utf8), "format": pl.Utf8, "error": pl.Utf8,
        "cached": pl.Boolean, "seconds": pl.Float64, "n_info": pl.Int64, "n_warn": pl.Int64,
        "n_critical": pl.Int64, "records_flagged": pl.Int64, "released": pl.Boolean,
    })


def overall_verdict(shards: pl.DataFrame) -> str:
    """``fail`` if any shard is quarantined or unreadable or has a critical finding
    (unless that content was released), ``warn`` if any warns, else ``pass``."""
    v = set(shards["verdict"].to_list())
    if v & {"quarantine", "unreadable"}:
        return "fail"
    if shards.filter((pl.col("n_critical") > 0) & ~pl.col("released")).height:
        return "fail"
    return "warn" if "warn" in v else "pass"
