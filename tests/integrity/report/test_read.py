"""The report's reading of a run directory (integrity.report.read)."""
from __future__ import annotations

import polars as pl

from integrity.report.read import FindingsByCheck


def _findings(path, checks: list[str]) -> pl.LazyFrame:
    pl.DataFrame({"shard": [f"s{i % 3}.parquet" for i in range(len(checks))], "check": checks,
                  "record_id": [f"r{i}" for i in range(len(checks))],
                  "score": [float(i) for i in range(len(checks))]}).sort("shard", "check").write_parquet(path)
    return pl.scan_parquet(path)


def test_each_check_reads_its_own_findings_in_the_files_order(tmp_path):
    findings = _findings(tmp_path / "findings.parquet", ["a", "b", "a", "c", "b", "a"])
    split = tmp_path / "split"
    split.mkdir()
    by_check = FindingsByCheck(findings, split)
    whole = findings.collect()
    for check in ("a", "b", "c"):
        assert by_check(check).collect().equals(whole.filter(pl.col("check") == check))
    assert len(list(split.iterdir())) == 3
    assert by_check("missing").collect().height == 0
    assert by_check("missing").collect_schema() == findings.collect_schema()


def test_findings_of_one_check_are_not_copied(tmp_path):
    findings = _findings(tmp_path / "findings.parquet", ["dedup.near"] * 5)
    split = tmp_path / "split"
    split.mkdir()
    by_check = FindingsByCheck(findings, split)
    assert list(split.iterdir()) == []
    assert by_check("dedup.near").collect().equals(findings.collect())
    assert by_check("other").collect().height == 0
