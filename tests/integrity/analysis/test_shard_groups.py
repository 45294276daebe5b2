"""Queries over a scan's findings a group of shards at a time give what one query over every
finding gives: the per-shard counts of the verdicts, the report's figures by check, the examples."""
from __future__ import annotations

import json

import polars as pl
import pytest

from connectors.schema import SCAN_FINDING_COLUMNS
from integrity.analysis import shard_groups as mod
from integrity.analysis.shard_groups import collect_by_shard_groups, shard_group_frames, shard_groups


def _findings(tmp_path) -> pl.LazyFrame:
    """A sorted findings.parquet (as the policy stage writes it) of 9 shards with uneven counts,
    repeated record ids, every severity, shard-level findings and findings without a shard."""
    rows = []
    for s in range(9):
        for i in range(30 if s == 4 else 2 + 2 * s):
            rows.append({"shard": f"part-{s:02d}", "record_id": None if i % 8 == 0 else f"r{i % 5}",
                         "check": ["dedup.near", "dedup.exact", "privacy.pii"][(i + s) % 3],
                         "severity": ["warn", "critical", "info", None][(i * 7 + s) % 4],
                         "score": float((i * 13 + s) % 11), "detail": json.dumps({"i": i, "s": s})})
    rows += [{"shard": None, "record_id": None, "check": "distribution.drift", "severity": "info", "score": 0.5,
              "detail": "{}"}] * 2
    frame = pl.DataFrame(rows, schema=SCAN_FINDING_COLUMNS).sort(["shard", "check", "record_id"], nulls_last=True)
    path = tmp_path / "findings.parquet"
    frame.write_parquet(path, row_group_size=16)
    return pl.scan_parquet(path)


def test_groups_hold_at_most_the_bound_unless_one_shard_alone_exceeds_it():
    counts = pl.DataFrame({"shard": ["c", "a", None, "b", "d"], "len": [5, 3, 2, 9, 1]},
                          schema={"shard": pl.Utf8, "len": pl.UInt32})
    assert shard_groups(counts, 8) == [["a"], ["b"], ["c", "d"], None]
    assert shard_groups(counts.filter(pl.col("shard").is_not_null()), 100) == [["a", "b", "c", "d"]]


def test_every_finding_is_in_exactly_one_group_with_all_of_its_shard(tmp_path):
    lf = _findings(tmp_path)
    groups = [g.collect() for g in shard_group_frames(lf, group_rows=12)]
    assert len(groups) > 5
    assert sum(g.height for g in groups) == lf.select(pl.len()).collect().item()
    seen: set = set()
    for g in groups:
        shards = set(g["shard"].to_list())
        assert not shards & seen
        seen |= shards


@pytest.mark.parametrize("group_rows", [1, 12, 10_000])
def test_a_per_shard_query_by_groups_equals_the_query_over_every_finding(tmp_path, group_rows):
    lf = _findings(tmp_path)

    def query(f: pl.LazyFrame) -> pl.LazyFrame:
        return f.group_by("shard").agg(n=pl.len(), records=pl.col("record_id").drop_nulls().n_unique())

    got = collect_by_shard_groups(lf, query, group_rows=group_rows).sort("shard", nulls_last=True)
    assert got.equals(query(lf).collect().sort("shard", nulls_last=True))
    assert collect_by_shard_groups(lf.head(0), query).height == 0


def _whole(monkeypatch):
    """Run the callers with one group holding every finding: the query over all of them."""
    monkeypatch.setattr(mod.shard_group_frames, "__defaults__", (10**9,))
    monkeypatch.setattr(mod.collect_by_shard_groups, "__defaults__", (10**9,))


def _small(monkeypatch):
    monkeypatch.setattr(mod.shard_group_frames, "__defaults__", (7,))
    monkeypatch.setattr(mod.collect_by_shard_groups, "__defaults__", (7,))


def test_verdict_counts_examples_and_report_figures_do_not_depend_on_the_groups(tmp_path, monkeypatch):
    from integrity.engine.evidence import _pick_examples
    from integrity.engine.verdict import shard_counts
    from integrity.report.context import _check_stats

    lf = _findings(tmp_path)
    _whole(monkeypatch)
    assert len(list(shard_group_frames(lf))) == 2  # every shard, then the findings without one
    whole = (shard_counts(lf).sort("shard", nulls_last=True), _pick_examples(lf, 3), _check_stats(lf, {}))
    _small(monkeypatch)
    assert len(list(shard_group_frames(lf))) > 5
    grouped = (shard_counts(lf).sort("shard", nulls_last=True), _pick_examples(lf, 3), _check_stats(lf, {}))
    assert grouped[0].equals(whole[0]) and whole[0].height == 10
    assert grouped[1].equals(whole[1]) and whole[1].height == 9  # 3 checks with record ids, 3 each
    assert grouped[2] == whole[2] and whole[2].total == lf.select(pl.len()).collect().item()
    # the per-shard figures are what they say
    part4 = lf.filter(pl.col("shard") == "part-04").collect()
    row = whole[0].filter(pl.col("shard") == "part-04").row(0, named=True)
    flagged = part4.filter(pl.col("severity").is_in(["warn", "critical"]))
    assert row["records_flagged"] == flagged["record_id"].drop_nulls().n_unique()
    assert row["n_critical"] == (part4["severity"] == "critical").sum()
