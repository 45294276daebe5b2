"""Stage 4: shard verdicts from findings."""
from __future__ import annotations

import polars as pl

from integrity.engine.shard import ShardResult
from integrity.engine.verdict import decide, overall_verdict, shard_counts
from integrity.policy import load_policy


def findings(rows: list[tuple]) -> pl.LazyFrame:
    return pl.LazyFrame(rows, schema={"shard": pl.Utf8, "record_id": pl.Utf8, "check": pl.Utf8,
                                      "severity": pl.Utf8, "score": pl.Float64}, orient="row")


def verdicts(rows: list[tuple], policy_text: str = "", tmp_path=None) -> dict[str, tuple[str, list[str]]]:
    policy = load_policy(None)
    if policy_text:
        path = tmp_path / "p.yaml"
        path.write_text(policy_text)
        policy = load_policy(path)
    results = [ShardResult(shard=s, uri=f"/d/{s}", format="parquet", sha256=s * 4, rows=1000) for s in "abcd"]
    table = decide(results, shard_counts(findings(rows)), policy)
    return {r["shard"]: (r["verdict"], r["reasons"]) for r in table.iter_rows(named=True)}


def test_shard_level_warning_makes_the_shard_warn(tmp_path):
    rows = [("a", None, "distribution.drift", "warn", 0.7),         # the shard drifted
            ("b", None, "distribution.drift", "info", 0.1),         # measured, nothing to say
            ("c", "r1", "dedup.exact", "warn", 1.0),                # 1 record of 1000: under 1 %
            ("d", None, "synthetic.text", "critical", 0.9)]         # a critical shard-level finding
    got = verdicts(rows)
    assert got["a"] == ("warn", ["shard-level findings of distribution.drift"])
    assert got["b"][0] == "pass" and got["c"][0] == "pass"
    assert got["d"][0] == "warn" and "critical findings of synthetic.text" in got["d"][1]
    off = verdicts(rows, "verdict:\n  warn:\n    shard_findings: false\n", tmp_path)
    assert off["a"][0] == "pass"  # the rule can be turned off in the policy


def test_record_share_and_quarantine_rules():
    rows = [("a", f"r{i}", "dedup.exact", "warn", 1.0) for i in range(20)]       # 2 % flagged
    rows += [("b", f"r{i}", "privacy.pii", "critical", 1.0) for i in range(20)]  # 2 % critical
    rows += [("c", "k", "privacy.secret", "critical", 1.0)]                      # any critical secret
    got = verdicts(rows)
    assert got["a"][0] == "warn" and "2.00% of records flagged" in got["a"][1][0]
    assert got["b"][0] == "quarantine" and got["c"] == ("quarantine", ["critical privacy.secret finding"])
    assert got["d"] == ("pass", [])
    assert overall_verdict(decide(
        [ShardResult(shard="d", uri="/d/d", format="parquet", rows=5)], shard_counts(findings([])),
        load_policy(None))) == "pass"
